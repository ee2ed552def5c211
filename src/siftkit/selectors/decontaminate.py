"""``decontaminate``: drop training records that leak evaluation items (a filter step).

``{step: decontaminate, against: [eval/]}`` in a recipe (or ``- decontaminate: {against: [...]}``), or
``siftkit select ... --decontaminate eval/`` (repeatable). Eval items are read by
``siftkit.selectors.eval_index.read_eval_items`` (MMLU CSV, GSM8K, BBH, IFEval, HumanEval, or any file siftkit
reads). Three tests, in this order; a record is dropped by the first that fires:

1. ``exact``: a user/system turn of the record, normalised (lower-cased words, punctuation dropped), equals
   an item's normalised question text.
2. ``ngram``: word n-gram overlap of the record's ``segment`` (default the whole conversation) with an item:
   the share of the item's distinct n-grams found in the record; dropped at ``overlap >= threshold``
   (default 0.5). Items of at least ``ngram`` words (default 13) use ``ngram``-grams; items of
   ``min_ngram`` (default 8) to ``ngram - 1`` words use ``min_ngram``-grams; shorter items are matched
   exactly only. N-grams found in more than ``max_item_df`` items (default 10: shared task instructions,
   answer-option boilerplate) are not counted.
3. ``embedding`` (optional, ``embedding: {backend: static}`` or any embedding signal spec): cosine similarity
   of the record's embedding (the spec's segment, default the query) with its nearest eval item;
   dropped at ``similarity >= embedding_threshold`` (default 0.9). The candidates' embeddings are read from
   the float16 vector cache 8,192 rows at a time (``nearest_items``), never as one float32 copy.

The pool is processed in batches of 16,384 records, in ``workers`` forked processes (default: one per core
from 50,000 candidates on). Every dropped record names the item it matched: the step's ``dropped`` reasons are
``contaminated: <benchmark> (<method>)``, ``details`` holds counts per benchmark, per source and method and
the first ``sample`` matches, and ``selection.parquet`` gets the per-record columns
``decontam_match`` (``file#item``), ``decontam_method`` and ``decontam_overlap`` (the best n-gram overlap,
for every record with any overlap, kept ones too).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.segments import SEGMENTS, flatten
from ..workers import mp_context, process_pool
from .base import SelectionContext, Selector, StepResult
from .eval_index import NgramIndex, normalize, normalized_key, read_eval_items, word_ids

BATCH = 16384
PARALLEL_FROM = 50_000      # candidates from which the default is one process per core


@register_selector("decontaminate")
class Decontaminate(Selector):
    role = "filter"

    def __init__(self, against: Any = None, ngram: int = 13, min_ngram: int = 8, threshold: float = 0.5,
                 segment: str = "conversation", exact: bool = True, max_item_df: int = 10,
                 embedding: Any = None, embedding_threshold: float = 0.9, sample: int = 20,
                 workers: int | None = None):
        if not against:
            raise ConfigError("decontaminate: 'against' needs eval files or folders (e.g. against: [eval/])")
        self.against = [against] if isinstance(against, str) else [str(a) for a in against]
        if int(ngram) < 1 or int(min_ngram) < 1 or int(min_ngram) > int(ngram):
            raise ConfigError("decontaminate: need 1 <= min_ngram <= ngram")
        if not 0 < float(threshold) <= 1:
            raise ConfigError("decontaminate: threshold must be in (0, 1]")
        if segment not in SEGMENTS:
            raise ConfigError(f"decontaminate: segment must be one of {', '.join(SEGMENTS)}")
        if embedding is not None and not isinstance(embedding, (dict, str)):
            raise ConfigError("decontaminate: embedding must be an embedding signal spec, e.g. {backend: static}")
        self.ngram, self.min_ngram, self.threshold = int(ngram), int(min_ngram), float(threshold)
        self.segment, self.exact, self.max_item_df = segment, bool(exact), int(max_item_df)
        self.embedding = ({"name": "embedding", "backend": embedding} if isinstance(embedding, str)
                          else ({"name": "embedding", **embedding} if embedding is not None else None))
        self.embedding_threshold, self.sample = float(embedding_threshold), int(sample)
        if workers is not None and int(workers) < 1:
            raise ConfigError("decontaminate: workers must be a positive integer")
        self.workers = None if workers is None else int(workers)   # None: all cores from 50K candidates

    def config(self) -> dict[str, Any]:
        c: dict[str, Any] = {"against": self.against, "ngram": self.ngram, "min_ngram": self.min_ngram,
                             "threshold": self.threshold, "segment": self.segment, "exact": self.exact,
                             "max_item_df": self.max_item_df}
        if self.embedding is not None:
            c |= {"embedding": self.embedding, "embedding_threshold": self.embedding_threshold}
        return c

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        items = read_eval_items(self.against)
        result = match_pool(ctx.pool, candidates, items, self)
        method, match, overlap, sim = result
        if self.embedding is not None:
            sim_best, sim_item = self._embedding_match(ctx, candidates, items)
            hit = (method == "") & (sim_best >= self.embedding_threshold)
            method[hit] = "embedding"
            match[hit] = sim_item[hit]
            sim[:] = sim_best
        drop = method != ""
        src = np.asarray(ctx.pool.column("source").take(candidates).to_pylist(), dtype=object) \
            if len(candidates) else np.zeros(0, object)
        dropped: dict[str, int] = {}
        by_bench: dict[str, dict[str, int]] = {}
        by_source: dict[str, dict[str, int]] = {}
        sample = []
        labels = np.full(len(candidates), None, dtype=object)
        for j in np.flatnonzero(drop).tolist():
            b, m = items.benchmark[match[j]], str(method[j])
            labels[j] = items.label(match[j])
            key = f"contaminated: {b} ({m})"
            dropped[key] = dropped.get(key, 0) + 1
            by_bench.setdefault(b, {}).setdefault(m, 0)
            by_bench[b][m] += 1
            by_source.setdefault(str(src[j]), {}).setdefault(b, 0)
            by_source[str(src[j])][b] += 1
            if len(sample) < self.sample:
                row = int(candidates[j])
                sample.append({"id": ctx.pool.column("id")[row].as_py(), "source": str(src[j]),
                               "match": labels[j], "method": m, "overlap": round(float(overlap[j]), 4)})
        has_overlap = overlap > 0
        rows_any = np.flatnonzero(has_overlap | drop)
        item_labels = np.asarray([labels[j] if labels[j] is not None else
                                  (items.label(match[j]) if match[j] >= 0 else None) for j in rows_any.tolist()],
                                 dtype=object)
        record_columns = {
            "decontam_match": (candidates[rows_any], item_labels),
            "decontam_method": (candidates[rows_any],
                                np.asarray([str(method[j]) or None for j in rows_any.tolist()], dtype=object)),
            "decontam_overlap": (candidates[rows_any], overlap[rows_any].astype(np.float64)),
        }
        if self.embedding is not None:
            record_columns["decontam_similarity"] = (candidates, sim.astype(np.float64))
        details = {"eval_items": items.counts(), "by_benchmark": dict(sorted(by_bench.items())),
                   "by_source": dict(sorted(by_source.items())), "with_overlap": int(has_overlap.sum()),
                   "sample": sample, "record_columns": record_columns}
        progress.debug(f"decontaminate: {int(drop.sum()):,} of {len(candidates):,} records match "
                       f"{len(items):,} eval items")
        return StepResult(candidates[~drop], dropped=dict(sorted(dropped.items())), details=details)

    def _embedding_match(self, ctx: SelectionContext, candidates: np.ndarray, items: Any
                         ) -> tuple[np.ndarray, np.ndarray]:
        from ..signals.compute import build_signal

        sig = build_signal(self.embedding)
        sig.setup()
        ev = np.asarray(sig.encode(items.exact_text), dtype=np.float32)
        ev /= np.maximum(np.linalg.norm(ev, axis=1, keepdims=True), 1e-12)
        return nearest_items(ctx.embeddings(self.embedding), candidates, ev)


def nearest_items(vectors: np.ndarray, candidates: np.ndarray, ev: np.ndarray,
                  block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(best cosine, index of that eval item) per candidate: ``vectors`` are the pool's embeddings (the
    float16 memory-map), ``ev`` the normalised eval items (E x d float32). The candidates' rows are read,
    converted and normalised ``block`` at a time, never as one float32 copy."""
    best = np.full(len(candidates), -1.0)
    arg = np.full(len(candidates), -1, dtype=np.int64)
    for s in range(0, len(candidates), block):
        pool = np.asarray(vectors[candidates[s:s + block]], dtype=np.float32)
        pool = pool / np.maximum(np.linalg.norm(pool, axis=1, keepdims=True), 1e-12)
        sims = pool @ ev.T
        arg[s:s + block] = sims.argmax(axis=1)
        best[s:s + block] = sims[np.arange(len(sims)), arg[s:s + block]]
    return best, arg


class FlatTexts:
    """Segment texts of a batch built from already-normalised turns (normalising is per word, so a segment's
    normalised text is its non-empty normalised turns joined by spaces)."""

    def __init__(self, norm: list[str], fb: Any):
        self.norm, self.fb = norm, fb

    def texts(self, segment: str) -> list[str]:
        fb, norm = self.fb, self.norm
        off, last = fb.offsets.tolist(), fb.last_assistant.tolist()
        out = []
        for k in range(fb.n):
            s, e = off[k], off[k + 1]
            if segment == "response":
                s, e = (last[k], last[k] + 1) if last[k] >= 0 else (e, e)
            elif segment == "query":
                e = last[k] if last[k] >= 0 else s
            out.append(" ".join(t for t in norm[s:e] if t))
        return out


def match_pool(pool: Any, candidates: np.ndarray, items: Any, opts: Decontaminate
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact and n-gram tests for the candidate rows of a canonical pool table: per candidate the method that
    fired (``"exact"``, ``"<n>-gram"`` or ``""``), the item index it matched (-1 if none), the best n-gram
    overlap and a similarity placeholder (NaN)."""
    len(items)
    norm_exact = [normalize(t) for t in items.exact_text]
    norm_ngram = [normalize(t) for t in items.ngram_text]
    nwords = np.asarray([t.count(" ") + 1 if t else 0 for t in norm_ngram], dtype=np.int64)
    long_items = np.flatnonzero(nwords >= opts.ngram)
    short_items = np.flatnonzero((nwords >= opts.min_ngram) & (nwords < opts.ngram))
    vocab: dict[str, int] = {}
    item_ids, item_off = word_ids(norm_ngram, vocab, grow=True)
    indexes = [NgramIndex.build(item_ids, item_off, long_items, opts.ngram, opts.max_item_df)]
    if opts.min_ngram < opts.ngram and len(short_items):
        indexes.append(NgramIndex.build(item_ids, item_off, short_items, opts.min_ngram, opts.max_item_df))
    exact_map: dict[int, int] = {}
    if opts.exact:
        for i, t in enumerate(norm_exact):
            if t:
                exact_map.setdefault(normalized_key(t), i)
    state = {"pool": pool.select(["messages"]), "candidates": candidates, "indexes": indexes, "vocab": vocab,
             "exact_map": exact_map, "opts": opts}
    n = len(candidates)
    bounds = [(s, min(n, s + BATCH)) for s in range(0, n, BATCH)]
    workers = opts.workers if opts.workers is not None else (min(os.cpu_count() or 1, len(bounds))
                                                           if n >= PARALLEL_FROM else 1)
    if workers > 1 and mp_context().get_start_method() == "fork" and len(bounds) > 1:
        _STATE.update(state)          # forked workers inherit it: nothing is pickled but the chunk bounds
        try:
            with process_pool(workers) as ex:
                parts = list(ex.map(_match_chunk, bounds))
        finally:
            _STATE.clear()
    else:
        parts = [_match_batch(state, s, e) for s, e in bounds]
    if not parts:
        return np.zeros(0, object), np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    method = np.concatenate([p[0] for p in parts])
    match = np.concatenate([p[1] for p in parts])
    overlap = np.concatenate([p[2] for p in parts])
    return method, match, overlap, np.full(n, np.nan)


_STATE: dict[str, Any] = {}


def _match_chunk(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _match_batch(_STATE, *bounds)


def _match_batch(state: dict[str, Any], s: int, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(method, match, overlap) for candidates[s:e] (see ``match_pool``)."""
    opts, exact_map, vocab = state["opts"], state["exact_map"], state["vocab"]
    rows = state["candidates"][s:e]
    method = np.full(len(rows), "", dtype=object)
    match = np.full(len(rows), -1, dtype=np.int64)
    overlap = np.zeros(len(rows), dtype=np.float64)
    fb = flatten(state["pool"].take(rows))
    norm = [normalize(c) for c in fb.contents]          # each turn once; segments join them
    roles, off = fb.roles, fb.offsets.tolist()
    if opts.exact and exact_map:
        for k in range(len(rows)):
            for j in range(off[k], off[k + 1]):
                if roles[j] in ("user", "system") and norm[j]:
                    hit = exact_map.get(normalized_key(norm[j]))
                    if hit is not None:
                        method[k], match[k] = "exact", hit
                        break
    ids, ids_off = word_ids(FlatTexts(norm, fb).texts(opts.segment), vocab)
    for idx in state["indexes"]:
        best, item = idx.overlap(ids, ids_off)
        better = best > overlap
        upd = better & (method == "")
        match[upd] = item[upd]
        overlap[better] = best[better]
        fire = (method == "") & (best >= opts.threshold)
        method[fire] = f"{idx.n}-gram"
        match[fire] = item[fire]
    return method, match, overlap


def decontaminate_pool(pool: Any, against: list[str], params: Any = True) -> tuple[Any, dict[str, Any]]:
    """A pool without the records that match eval items in ``against`` (``siftkit bench`` runs this on its
    pool against its own eval tasks), and a summary: items per benchmark, drops per reason / benchmark /
    source, and a sample of matches. ``params``: True or a mapping of the step's parameters."""
    import pyarrow as pa

    from ..io.pool import Pool

    if not against:
        return pool, {"against": [], "dropped": {}}
    sel = Decontaminate(against=list(against), **(params if isinstance(params, dict) else {}))
    ctx = SelectionContext(pool=pool.table, signals=pa.table({}))
    res = sel.run(ctx, np.arange(len(pool), dtype=np.int64), None)
    res.details.pop("record_columns", None)
    summary = {"against": list(against), "records_in": len(pool), "records_out": len(res.kept),
               "dropped": res.dropped, **res.details}
    n_drop = len(pool) - len(res.kept)
    progress.info(f"decontaminate: dropped {n_drop:,} of {len(pool):,} pool records matching "
                  f"{sum(summary['eval_items'].values()):,} eval items"
                  + (f" ({', '.join(f'{k}: {v}' for k, v in res.dropped.items())})" if n_drop else ""))
    if not n_drop:
        return pool, summary
    kept = pool.table.take(pa.array(res.kept, pa.int64()))
    return Pool(table=kept, rejects=pool.rejects, files=pool.files, skipped_files=pool.skipped_files,
                read_seconds=pool.read_seconds), summary


def report_sections(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report sections for the decontaminate steps of a run (manifest step dicts): drops per source and
    benchmark, and the matched eval items of the first dropped records."""
    out = []
    for st in steps:
        if st.get("name") != "decontaminate" or not st.get("details"):
            continue
        d = st["details"]
        benches = list(d.get("eval_items", {}))
        rows = [["source", *benches]] + [[src, *[per.get(b, 0) for b in benches]]
                                         for src, per in d.get("by_source", {}).items()]
        items = ", ".join(f"{b} {n:,}" for b, n in d.get("eval_items", {}).items())
        text = (f"{st['in'] - st['out']:,} of {st['in']:,} records dropped as matching evaluation items "
                f"({items} items); {d.get('with_overlap', 0):,} records share n-grams with an item. Per-record "
                f"matches: decontam_match / decontam_method / decontam_overlap in _siftkit/selection.parquet.")
        out.append({"title": "Decontamination", "text": text, "table": rows if len(rows) > 1 else None})
        if d.get("sample"):
            out.append({"title": "Decontamination: first matches", "table": d["sample"]})
    return out
