"""``quality``: Gopher-style document statistics, C4 line rules and marker flags, per query and per response.

Definitions (our own code, following Rae et al. 2021 (Gopher, appendix A) and Raffel et al. 2020 (C4), with
the numbers checked against datatrove's filters on shared texts in ``tests/test_cleaning.py``). Words are
CJK-aware (``siftkit.signals.words``: ``\\w+`` runs, each CJK character one word); lines are the text split
on newlines, blank lines ignored. For segment ``S`` (``query`` or ``response``) the columns are:

- ``words_S``: number of words.
- ``cjk_frac_S``: fraction of the non-space characters that are CJK (0..1; rules on word length and stop
  words skip texts that are mostly CJK).
- ``mean_word_len_S``: mean characters per word (NaN without words).
- ``symbol_ratio_S``: (``#`` characters + ellipses ``...``/``…``) per word (Gopher's hash and ellipsis
  ratios, added; NaN without words).
- ``bullet_frac_S``: fraction of lines starting with a bullet (``• ● ◦ ‣ ⁃ ▪ · - *``).
- ``ellipsis_frac_S``: fraction of lines ending with ``...`` or ``…``.
- ``alpha_frac_S``: fraction of words containing at least one alphabetic character (NaN without words).
- ``stop_words_S``: how many distinct stop words occur (Gopher's English list: the, be, to, of, and, that,
  have, with; plus ten common Chinese function characters: 的 了 是 在 和 有 我 不 这 你).
- ``c4_line_frac_S``: fraction of lines C4's line rules keep: ending in terminal punctuation
  (``. ! ? " '`` or ``。！？``), at least 3 words, no "javascript", no terms-of-use / privacy / cookie
  policy boilerplate (NaN without lines).
- ``placeholder_S``: 1 when the text holds placeholder text: ``lorem ipsum``; an unfilled template slot
  ``{{name}}``, ``[insert ...]``, ``<placeholder>``; or a single-brace ``{name}`` slot in a text with no
  code markers (``````, ``def ``, ``;\\n``, ``=``), else 0.
- ``refusal_S``: 1 when the first 300 characters refuse or apologise ("I'm sorry, but", "I cannot help
  with" (not "can't help but"), "I am unable to provide", "I apologize, but"), else 0.
- ``as_ai_S``: 1 when the text says "as an AI (language) model / assistant" and the like, else 0.

Empty segments give 0 counts and NaN ratios.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ..registry import register_signal
from .base import Signal
from .segments import flatten
from .words import cjk_fraction, split_words

REFUSAL_CHARS = 300   # refusals open a reply: only the first characters are searched
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with",
                        "的", "了", "是", "在", "和", "有", "我", "不", "这", "你"})
BULLETS = ("•", "●", "◦", "‣", "⁃", "▪", "·", "-", "*")
TERMINAL = (".", "!", "?", '"', "'", "。", "！", "？", "”", "’")
_POLICY = re.compile(r"terms of use|privacy policy|cookie policy|uses cookies|use of cookies", re.IGNORECASE)
_LOREM = re.compile(r"lorem ipsum", re.IGNORECASE)
_SLOT = re.compile(r"\{\{\s*[A-Za-z_][\w .-]{0,40}\}\}|\[\s*(?:insert|your|enter|add|placeholder)\b[^\]\n]{0,60}\]"
                   r"|<\s*(?:placeholder|insert[^>\n]{0,40})\s*>", re.IGNORECASE)
_BRACE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_ ]{0,30}\}")
_CODE = re.compile(r"```|\bdef |;\s*\n|=|\breturn\b|\bprint\(|\bfunction\b|\bclass |#include|\$\{")
_REFUSAL = re.compile(
    r"\bi(?:'m| am) sorry,? but\b|\bi apologi[sz]e,? but\b|\bi (?:can(?:no|')t|cannot|am unable to|"
    r"am not able to|won't be able to) (?:help(?! but)|assist|provide|fulfil|comply|answer|do that|create|generate|"
    r"write)|\bi(?:'m| am) (?:unable|not able) to (?:help(?! but)|assist|provide|fulfil|comply|answer)", re.IGNORECASE)
_AS_AI = re.compile(r"\bas an? (?:ai|artificial intelligence)\b(?: (?:language )?model| assistant| chatbot)?"
                    r"|\bi(?:'m| am) (?:just )?an? ai (?:language )?model\b|作为一个?(?:AI|人工智能)", re.IGNORECASE)

STAT_COLUMNS: dict[str, pa.DataType] = {
    "words": pa.int64(), "cjk_frac": pa.float64(), "mean_word_len": pa.float64(), "symbol_ratio": pa.float64(),
    "bullet_frac": pa.float64(), "ellipsis_frac": pa.float64(), "alpha_frac": pa.float64(),
    "stop_words": pa.int32(), "c4_line_frac": pa.float64(), "placeholder": pa.int8(), "refusal": pa.int8(),
    "as_ai": pa.int8(),
}


def text_quality(text: str) -> dict[str, Any]:
    """The statistics of one text (keys of ``STAT_COLUMNS``; see the module docstring)."""
    words = split_words(text)
    n = len(words)
    nan = math.nan
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    nl = len(lines)
    c4_keep = 0
    for ln in lines:
        if (ln.endswith(TERMINAL) and len(split_words(ln)) >= 3 and "javascript" not in ln.lower()
                and not _POLICY.search(ln)):
            c4_keep += 1
    lower = {w.lower() for w in words}
    placeholder = bool(_LOREM.search(text) or _SLOT.search(text)
                       or (_BRACE.search(text) and not _CODE.search(text)))
    return {
        "words": n,
        "cjk_frac": cjk_fraction(text),
        "mean_word_len": sum(map(len, words)) / n if n else nan,
        "symbol_ratio": (text.count("#") + text.count("...") + text.count("…")) / n if n else nan,
        "bullet_frac": sum(ln.startswith(BULLETS) for ln in lines) / nl if nl else nan,
        "ellipsis_frac": sum(ln.endswith(("...", "…")) for ln in lines) / nl if nl else nan,
        "alpha_frac": sum(any(c.isalpha() for c in w) for w in words) / n if n else nan,
        "stop_words": len(lower & STOP_WORDS),
        "c4_line_frac": c4_keep / nl if nl else nan,
        "placeholder": int(placeholder),
        "refusal": int(bool(_REFUSAL.search(text[:REFUSAL_CHARS]))),
        "as_ai": int(bool(_AS_AI.search(text))),
    }


def check_segments(segments: Any, who: str) -> tuple[str, ...]:
    segs = (segments,) if isinstance(segments, str) else tuple(segments)
    if not segs or any(s not in ("query", "response", "conversation") for s in segs):
        raise ConfigError(f"{who}: segments must be some of query, response, conversation, not {segments!r}")
    return segs


@register_signal("quality")
class Quality(Signal):
    """Gopher / C4 statistics and placeholder / refusal / "as an AI" flags (see the module docstring);
    ``segments`` (default query and response) gives one column set per segment, suffixed ``_<segment>``."""

    version = "1"
    batch_size = 16384

    def __init__(self, segments: Any = ("query", "response")):
        self.segments = check_segments(segments, "quality")

    def config(self) -> dict[str, Any]:
        return {"segments": list(self.segments)}

    def columns(self) -> dict[str, pa.DataType]:
        return {f"{k}_{s}": t for s in self.segments for k, t in STAT_COLUMNS.items()}

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        fb = flatten(batch)
        out: dict[str, np.ndarray] = {}
        for seg in self.segments:
            rows = [text_quality(t) for t in fb.texts(seg)]
            for k, t in STAT_COLUMNS.items():
                dtype = np.float64 if pa.types.is_floating(t) else t.to_pandas_dtype()
                out[f"{k}_{seg}"] = np.fromiter((r[k] for r in rows), dtype=dtype, count=len(rows))
        return out
