"""Evaluation items for decontamination: read from benchmark files, indexed for exact and n-gram matching.

``read_eval_items(paths)`` reads every item of every evaluation file under ``paths`` (files or folders, read
recursively), in the layouts of ``siftkit bench``'s eval folder and anything siftkit can read:

- ``*.csv`` with six columns (question, four choices, answer: MMLU) -> the question (exact match) and the
  question with its choices (n-grams);
- ``*.json`` holding ``{"examples": [{"input": ...}]}`` (BBH) -> each example's ``input``;
- ``*.jsonl`` / ``*.jsonl.gz`` / ``*.json`` arrays whose records have ``question`` (GSM8K), ``prompt``
  (IFEval, HumanEval), ``input``, ``instruction`` or ``problem`` -> that field;
- any other file siftkit reads (``siftkit.io``: ShareGPT, Alpaca, messages, ...) -> each record's query.

Each item is named by its ``benchmark`` (the first part of its path under the folder given, without
extensions: ``mmlu``, ``bbh``, ``gsm8k_test``), its ``file`` (that relative path) and its ``item`` (1-based row
or line in the file; the example index for BBH).

Normalisation (both sides): lower-cased words (``siftkit.signals.words``: punctuation dropped, each CJK
character a word) joined by single spaces. An item's *exact key* is the xxh3 hash of that string; its
n-grams are word n-grams of it, hashed from word ids over the items' vocabulary (``ngram_hashes``): a pool
n-gram with a word no item uses cannot match and is never hashed, which makes the pool side cheap.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import xxhash

from .. import fs as _fs
from ..errors import ConfigError
from ..io.readers import jsonl_values
from ..signals.words import split_words
from .near_dedup import _splitmix

_MUL = np.uint64(0x9E3779B97F4A7C15)

TEXT_FIELDS = ("question", "prompt", "input", "instruction", "problem")
FILTER_BITS = 24


def normalize(text: str) -> str:
    return " ".join(split_words(text.lower()))


def normalized_key(t: str) -> int:
    """The exact-match key of an already normalised text (xxh3-64 of its UTF-8, as a signed int)."""
    v = xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass"))
    return v - (1 << 64) if v >= 1 << 63 else v


def exact_key(text: str) -> int:
    """The exact-match key of a text (after ``normalize``); 0 for a text without words."""
    t = normalize(text)
    return normalized_key(t) if t else 0


@dataclass
class EvalItems:
    benchmark: list[str] = field(default_factory=list)
    file: list[str] = field(default_factory=list)
    item: list[int] = field(default_factory=list)
    exact_text: list[str] = field(default_factory=list)
    ngram_text: list[str] = field(default_factory=list)

    def add(self, bench: str, file: str, item: int, exact: str, ngram: str | None = None) -> None:
        self.benchmark.append(bench)
        self.file.append(file)
        self.item.append(item)
        self.exact_text.append(exact)
        self.ngram_text.append(exact if ngram is None else ngram)

    def __len__(self) -> int:
        return len(self.item)

    def label(self, i: int) -> str:
        return f"{self.file[i]}#{self.item[i]}"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.benchmark:
            out[b] = out.get(b, 0) + 1
        return dict(sorted(out.items()))


def _files(path: str) -> list[tuple[str, str]]:
    """(file, path relative to the root given) for a file or a folder (recursively, sorted; hidden names
    skipped). ``path`` may be a URL (``s3://bucket/eval/``, read through siftkit.fs)."""
    if _fs.is_remote(path):
        try:
            if _fs.isfile(path):
                return [(path, _fs.basename(path))]
            files = _fs.walk_files(path) if _fs.isdir(path) else []
        except OSError as e:
            raise _fs.fs_error(path, e, "decontaminate: cannot read eval files") from None
        out = [(u, rel) for u, rel, _n in files if not any(part.startswith(".") for part in rel.split("/"))]
        if out:
            return out
        raise ConfigError(f"decontaminate: {_fs.display(path)} not found (give eval files or a folder of them)")
    path = _fs.local_path(path)
    if os.path.isfile(path):
        return [(path, os.path.basename(path))]
    if os.path.isdir(path):
        out = []
        for f in sorted(glob.glob(os.path.join(path, "**", "*"), recursive=True)):
            if os.path.isfile(f) and not os.path.basename(f).startswith("."):
                out.append((f, os.path.relpath(f, path)))
        return out
    raise ConfigError(f"decontaminate: {path} not found (give eval files or a folder of them)")


def _bench_name(rel: str) -> str:
    head = rel.replace(os.sep, "/").split("/")[0]
    for ext in (".gz", ".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        head = head.removesuffix(ext)
    return head


def _read_text(path: str) -> str:
    """A whole eval file as text (``.gz`` decompressed), local or a URL: one read through siftkit.fs."""
    try:
        data = _fs.read_bytes(path)
    except OSError as e:
        raise _fs.fs_error(path, e, "decontaminate: cannot read eval file") from None
    if path.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ConfigError(f"decontaminate: {_fs.display(path)}: not a gzip file ({e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"decontaminate: {_fs.display(path)}: not UTF-8 text ({e.reason} at byte "
                          f"{e.start})") from None


def _text_of(rec: Any) -> str | None:
    if isinstance(rec, dict):
        for k in TEXT_FIELDS:
            v = rec.get(k)
            if isinstance(v, str) and v.strip():
                return v
    return None


def _read_one(path: str, rel: str, items: EvalItems) -> None:
    bench = _bench_name(rel)
    low = path.lower()
    if low.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(_read_text(path), newline="")))
        if rows and all(len(r) == 6 for r in rows):
            for n, r in enumerate(rows, 1):
                if n == 1 and r[0].strip().lower() == "question":
                    continue
                items.add(bench, rel, n, r[0], r[0] + "\n" + "\n".join(r[1:5]))
            return
    elif low.endswith((".jsonl", ".jsonl.gz")):
        got = [(n, _text_of(rec)) for n, rec in jsonl_values(path, "decontaminate")]
        if got and all(t is not None for _, t in got):
            for n, t in got:
                items.add(bench, rel, n, t)
            return
    elif low.endswith((".json", ".json.gz")):
        try:
            data = orjson.loads(_read_text(path))
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"decontaminate: {_fs.display(path)}: not JSON ({e})") from None
        recs = data.get("examples") if isinstance(data, dict) else data
        if isinstance(recs, list) and recs and all(_text_of(r) is not None for r in recs):
            for n, r in enumerate(recs, 1):
                items.add(bench, rel, n, _text_of(r))
            return
    # anything else siftkit can read: each record's query
    from ..io.pool import read_pool
    from ..signals.segments import flatten

    try:
        table = read_pool([path]).table
    except Exception as e:  # noqa: BLE001 - report which eval file could not be read
        raise ConfigError(f"decontaminate: cannot read eval file {_fs.display(path)}: {e}") from None
    if len(table) == 0:
        return
    rows = table.column("row").to_pylist()
    for r, t in zip(rows, flatten(table).texts("query")):
        items.add(bench, rel, int(r) + 1, t)


def read_eval_items(paths: list[str]) -> EvalItems:
    items = EvalItems()
    for p in paths:
        for f, rel in _files(p):
            if f.lower().endswith((".md", ".txt", ".py", ".yaml", ".yml")):
                continue
            _read_one(f, rel, items)
    if not len(items):
        raise ConfigError(f"decontaminate: no evaluation items found in {paths}")
    return items


def word_ids(texts: list[str], vocab: dict[str, int], grow: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Word ids of normalised texts (words separated by single spaces) and record offsets. ``grow``: add new
    words to ``vocab`` (the eval side); else words the eval items never use get -1 (the pool side): no n-gram
    holding one can match, so it is never hashed."""
    if grow:
        flat = [vocab.setdefault(w, len(vocab)) for t in texts if t for w in t.split(" ")]
    else:
        get = vocab.get
        flat = [get(w, -1) for t in texts if t for w in t.split(" ")]
    counts = np.fromiter((t.count(" ") + 1 if t else 0 for t in texts), dtype=np.int64, count=len(texts))
    return np.asarray(flat, dtype=np.int64), np.concatenate([[0], np.cumsum(counts)])


def ngram_hashes(ids: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram inside one record made of known words only (``ids >= 0``), and the
    record of each; computed for the whole batch with numpy (``n`` vector passes over the word ids)."""
    total = len(ids)
    m = total - n + 1
    if m <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    rec_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    bad = np.concatenate([[0], np.cumsum(ids < 0)])
    pos = np.arange(m)
    pos = pos[(bad[pos + n] == bad[pos]) & (rec_of[pos] == rec_of[pos + n - 1])]
    u = ids.astype(np.uint64) + np.uint64(1)
    h = np.zeros(len(pos), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = (h ^ u[pos + k]) * _MUL + np.uint64(k + 1)
    return _splitmix(h), rec_of[pos]


@dataclass
class NgramIndex:
    """The eval items' word n-grams of one size ``n`` (only items with at least ``n`` words use it).

    ``hashes`` (sorted, unique) -> items through CSR ``item_ptr`` / ``item_idx``; ``item_total[i]`` the number of
    distinct indexed n-grams of item i (0 for items not in this index)."""

    n: int
    hashes: np.ndarray
    item_ptr: np.ndarray
    item_idx: np.ndarray
    item_total: np.ndarray

    @classmethod
    def build(cls, ids: np.ndarray, offsets: np.ndarray, members: np.ndarray, n: int, max_item_df: int
              ) -> NgramIndex:
        """From the word ids of all items (``word_ids(..., grow=True)``), for the items in ``members``."""
        n_items = len(offsets) - 1
        h, item_of = ngram_hashes(ids, offsets, n)
        keep = np.isin(item_of, members)
        h, item_of = h[keep], item_of[keep]
        order = np.lexsort((item_of, h))                                   # distinct (hash, item) pairs
        h, item_of = h[order], item_of[order]
        first = np.ones(len(h), dtype=bool)
        first[1:] = (h[1:] != h[:-1]) | (item_of[1:] != item_of[:-1])
        ph, pi = h[first], item_of[first]
        uh, start, df = np.unique(ph, return_index=True, return_counts=True)
        if max_item_df:
            common = uh[df > max_item_df]      # boilerplate shared by many items (task instructions)
            keep = ~np.isin(ph, common)
            ph, pi = ph[keep], pi[keep]
            uh, start, df = np.unique(ph, return_index=True, return_counts=True)
        total = np.bincount(pi, minlength=n_items).astype(np.int64)
        return cls(n, uh, np.concatenate([start, [len(ph)]]).astype(np.int64), pi.astype(np.int64), total)

    def __post_init__(self) -> None:
        # A bit table over the low FILTER_BITS bits of the indexed hashes: most pool n-grams are rejected by
        # one gather before the binary search.
        self.filter = np.zeros(1 << FILTER_BITS, dtype=bool)
        self.filter[(self.hashes & np.uint64((1 << FILTER_BITS) - 1)).astype(np.int64)] = True

    def overlap(self, ids: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For pool texts given as word ids (``word_ids`` with the items' vocabulary): (best overlap fraction,
        best item or -1) per text, where an item's overlap is the share of its indexed n-grams in the text."""
        n_rec = len(offsets) - 1
        best = np.zeros(n_rec, dtype=np.float64)
        best_item = np.full(n_rec, -1, dtype=np.int64)
        if not len(self.hashes) or not n_rec:
            return best, best_item
        h, rec_of = ngram_hashes(ids, offsets, self.n)
        maybe = np.flatnonzero(self.filter[(h & np.uint64((1 << FILTER_BITS) - 1)).astype(np.int64)])
        if not len(maybe):
            return best, best_item
        pos_c = np.minimum(np.searchsorted(self.hashes, h[maybe]), len(self.hashes) - 1)
        hit = self.hashes[pos_c] == h[maybe]
        if not hit.any():
            return best, best_item
        rec = rec_of[maybe][hit]
        g = pos_c[hit]
        rg = np.unique(rec * len(self.hashes) + g)                     # distinct (record, n-gram)
        rec, g = rg // len(self.hashes), rg % len(self.hashes)
        cnt = self.item_ptr[g + 1] - self.item_ptr[g]
        rec_e = np.repeat(rec, cnt)
        first = np.repeat(self.item_ptr[g], cnt)
        within = np.arange(len(rec_e)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        item_e = self.item_idx[first + within]
        n_items = len(self.item_total)
        key, c = np.unique(rec_e * n_items + item_e, return_counts=True)
        ri = (key // n_items, key % n_items)
        frac = c / self.item_total[ri[1]]
        order = np.lexsort((-ri[1], frac, ri[0]))                    # per record: highest fraction, lowest item
        last = np.ones(len(order), dtype=bool)
        last[:-1] = ri[0][order][1:] != ri[0][order][:-1]
        o = order[last]
        best[ri[0][o]] = frac[o]
        best_item[ri[0][o]] = ri[1][o]
        return best, best_item
