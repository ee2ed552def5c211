"""``repetition``: Gopher's repetition statistics (Rae et al. 2021, appendix A), per query and per response.

For segment ``S`` the columns are (words as in ``siftkit.signals.words``, case kept; "characters" of words and
n-grams are the characters of their words, so separators and punctuation never count):

- ``dup_line_frac_S`` / ``dup_line_char_frac_S``: lines (stripped, blank ones ignored) that repeat an
  earlier line of the text, as a fraction of the lines / of the line characters;
- ``dup_para_frac_S`` / ``dup_para_char_frac_S``: the same for paragraphs (split on blank lines);
- ``top_{2,3,4}gram_frac_S``: characters covered by the most frequent word n-gram (count x its characters;
  ties go to the one that occurs first), over the characters of all words; 0 when no n-gram occurs twice;
- ``dup_{5..10}gram_frac_S``: characters of the words covered by any repeated occurrence (the second and
  later) of a word n-gram, over the characters of all words.

NaN when the segment has no lines / no words. The n-gram statistics are computed for a whole batch at once
(numpy on integer word ids; one Python pass per text only to split it into words).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from ..registry import register_signal
from .base import Signal
from .quality import check_segments
from .segments import flatten
from .words import split_words

TOP_N = (2, 3, 4)
DUP_N = (5, 6, 7, 8, 9, 10)
_MUL = np.uint64(0x9E3779B97F4A7C15)


def _names() -> list[str]:
    return (["dup_line_frac", "dup_line_char_frac", "dup_para_frac", "dup_para_char_frac"]
            + [f"top_{n}gram_frac" for n in TOP_N] + [f"dup_{n}gram_frac" for n in DUP_N])


def _dup_units(units: list[str]) -> tuple[float, float]:
    """(fraction of units repeating an earlier one, fraction of their characters)."""
    units = [u for u in (u.strip() for u in units) if u]
    if not units:
        return math.nan, math.nan
    seen: set[str] = set()
    n_dup = c_dup = total = 0
    for u in units:
        total += len(u)
        if u in seen:
            n_dup += 1
            c_dup += len(u)
        else:
            seen.add(u)
    return n_dup / len(units), (c_dup / total if total else 0.0)


def ngram_stats(word_lists: list[list[str]]) -> dict[str, np.ndarray]:
    """``top_*gram_frac`` and ``dup_*gram_frac`` for many word lists at once (see the module docstring)."""
    n_rec = len(word_lists)
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for ws in word_lists for w in ws), dtype=np.int64)
    lens = np.fromiter((len(w) for ws in word_lists for w in ws), dtype=np.int64, count=len(ids))
    counts = np.fromiter((len(ws) for ws in word_lists), dtype=np.int64, count=n_rec)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = len(ids)
    rec_of = np.repeat(np.arange(n_rec), counts)
    cs = np.concatenate([[0], np.cumsum(lens)])
    chars = (cs[offsets[1:]] - cs[offsets[:-1]]).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        empty = np.where(counts > 0, 0.0, np.nan)
    hashed = (ids.astype(np.uint64) + np.uint64(1)) * _MUL
    for n in sorted(set(TOP_N) | set(DUP_N)):
        m = total - n + 1
        key = f"top_{n}gram_frac" if n in TOP_N else f"dup_{n}gram_frac"
        if m <= 0:
            out[key] = empty.copy()
            continue
        pos = np.arange(m)
        ok = pos + n <= offsets[rec_of[:m] + 1]
        pos = pos[ok]
        h = np.zeros(len(pos), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                h = (h ^ hashed[pos + k]) * _MUL + np.uint64(k + 1)
        rec = rec_of[pos]
        order = np.lexsort((pos, h, rec))
        hs, rs, ps = h[order], rec[order], pos[order]
        new_group = np.ones(len(order), dtype=bool)
        new_group[1:] = (hs[1:] != hs[:-1]) | (rs[1:] != rs[:-1])
        val = empty.copy()
        if n in TOP_N:
            starts = np.flatnonzero(new_group)
            gcount = np.diff(np.concatenate([starts, [len(order)]]))
            grec = rs[starts]
            glen = cs[ps[starts] + n] - cs[ps[starts]]
            best = np.lexsort((-ps[starts], gcount, grec))   # per record, the last one is the top n-gram
            last = np.ones(len(best), dtype=bool)
            last[:-1] = grec[best][1:] != grec[best][:-1]
            b = best[last]
            top = np.where(gcount[b] >= 2, gcount[b] * glen[b], 0).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                val[grec[b]] = np.minimum(1.0, np.where(chars[grec[b]] > 0, top / chars[grec[b]], 0.0))
        else:
            rep = ps[~new_group]                              # second and later occurrences
            diff = np.zeros(total + 1, dtype=np.int64)
            np.add.at(diff, rep, 1)
            np.add.at(diff, rep + n, -1)
            covered = np.cumsum(diff[:-1]) > 0
            dup_chars = np.bincount(rec_of[covered], weights=lens[covered], minlength=n_rec)
            has = counts > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                val[has] = np.where(chars[has] > 0, dup_chars[has] / np.maximum(chars[has], 1), 0.0)
        out[key] = val
    return out


def text_repetition(text: str) -> dict[str, float]:
    """All repetition statistics of one text (for tests and one-off use)."""
    row = {k: float(v[0]) for k, v in _segment_stats([text]).items()}
    return row


def _segment_stats(texts: list[str]) -> dict[str, np.ndarray]:
    n = len(texts)
    out = {k: np.empty(n, dtype=np.float64) for k in _names()[:4]}
    for i, t in enumerate(texts):
        out["dup_line_frac"][i], out["dup_line_char_frac"][i] = _dup_units(t.split("\n"))
        paras = [p for p in _split_paragraphs(t)]
        out["dup_para_frac"][i], out["dup_para_char_frac"][i] = _dup_units(paras)
    out.update(ngram_stats([split_words(t) for t in texts]))
    return out


def _split_paragraphs(text: str) -> list[str]:
    import re

    return re.split(r"\n\s*\n", text)


@register_signal("repetition")
class Repetition(Signal):
    """Gopher repetition statistics (see the module docstring), one column set per segment
    (default query and response), suffixed ``_<segment>``."""

    version = "1"
    batch_size = 16384

    def __init__(self, segments: Any = ("query", "response")):
        self.segments = check_segments(segments, "repetition")

    def config(self) -> dict[str, Any]:
        return {"segments": list(self.segments)}

    def columns(self) -> dict[str, pa.DataType]:
        return {f"{k}_{s}": pa.float64() for s in self.segments for k in _names()}

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        fb = flatten(batch)
        out: dict[str, np.ndarray] = {}
        for seg in self.segments:
            for k, v in _segment_stats(fb.texts(seg)).items():
                out[f"{k}_{seg}"] = v
        return out
