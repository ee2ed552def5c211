"""Select many times: read -> signals (cached) -> filter -> dedup -> select, with counts at every step."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from . import progress
from .config import RunConfig
from .errors import ConfigError, EmptyResultError
from .io.pool import Pool, read_pool, take_rows
from .plan import POOL_COLUMNS, make_selector, plan_signals  # noqa: F401 (POOL_COLUMNS re-exported)
from .selectors.base import SelectionContext, Selector, resolve_budget
from .signals.compute import compute_signals


@dataclass
class StepReport:
    role: str
    name: str
    params: dict[str, Any]
    n_in: int
    n_out: int
    dropped: dict[str, int]
    details: dict[str, Any]
    seconds: float
    embeddings: dict[str, str] = field(default_factory=dict)   # fingerprint -> signal name, read by the step

    def as_dict(self) -> dict[str, Any]:
        d = {"step": self.role, "name": self.name, "params": self.params, "in": self.n_in, "out": self.n_out,
             "dropped": self.dropped}
        if self.embeddings:
            d["embeddings"] = dict(self.embeddings)
        small = {k: v for k, v in self.details.items() if k != "groups"}
        if small:
            d["details"] = small
        return d

STATUS_LABELS = ("not_selected", "selected")   # status codes 0 and 1; drop labels follow, in step order


@dataclass
class Selection:
    """The outcome of a run: the pool, its signals and the chosen pool rows (``selected``: sorted, pool
    order; ``order``: the same rows in the order the last budgeted step picked them, i.e. the rank written
    to ``_siftkit/selection.parquet``; pool order when no step ranks)."""

    pool: Pool
    signals: pa.Table
    selected: np.ndarray
    steps: list[StepReport]
    config: RunConfig
    # per pool row a code into ``status_labels``: "not_selected" (0), "selected" (1), "dropped:<step reason>"
    # (small ints, not one Python object per record; ``status`` gives the labels)
    status_codes: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    signal_stats: dict[str, Any] = field(default_factory=dict)
    drop_roles: dict[str, str] = field(default_factory=dict)   # status label -> "filter" | "dedup"
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # embeddings the selectors used (by spec)
    vector_loader: Any = None                                     # computes embeddings through the cache
    budget_resolved: int | None = None                            # the budget as a count of records
    # Per-record columns a step reports (e.g. decontaminate's matched eval item), aligned with the pool;
    # written into selection.parquet beside the status.
    record_columns: dict[str, np.ndarray] = field(default_factory=dict)
    order: np.ndarray | None = None                               # selected rows in pick order (rank)
    status_labels: list[str] = field(default_factory=lambda: list(STATUS_LABELS))

    @property
    def status(self) -> np.ndarray:
        """Per pool row: "selected", "not_selected" or "dropped:<step reason>" (an object array)."""
        return np.asarray(self.status_labels, dtype=object)[self.status_codes]

    def status_array(self) -> pa.Array:
        """The status labels as an Arrow string array (``selection.parquet``'s ``status`` column)."""
        return pa.array(self.status_labels, pa.string()).take(pa.array(self.status_codes.astype(np.int32)))

    @property
    def pick_order(self) -> np.ndarray:
        """The selected rows in pick order (k-center's coverage ranking, kmeans' round-robin over clusters,
        RDS's round-robin, top's descending value, random's draw order); ``selected`` when unranked."""
        return self.selected if self.order is None else self.order

    def cache_hits(self) -> dict[str, Any]:
        """Per signal: records computed now vs reused from the cache (varies between runs)."""
        return {k: {"computed": v["computed"], "cached": v["cached"]} for k, v in self.signal_stats.items()}

    def usage(self) -> dict[str, Any]:
        """Per LLM signal: requests, retries, failures by reason, tokens, wall time, cost (this run; see
        ``siftkit.llm.usage``), and what the response cache holds for it."""
        return {k: v["usage"] for k, v in self.signal_stats.items() if "usage" in v}

    def signal_stats_public(self) -> dict[str, Any]:
        """Signal names -> fingerprint and config (deterministic; cache hits and times go to timings)."""
        return {k: {"fingerprint": v["fingerprint"], "config": v["config"]} for k, v in self.signal_stats.items()}

    @property
    def ids(self) -> list[str]:
        return self.pool.table.column("id").take(pa.array(self.selected, pa.int64())).to_pylist()

    @property
    def mask(self) -> np.ndarray:
        m = np.zeros(len(self.pool), dtype=bool)
        m[self.selected] = True
        return m

    # ------------------------------------------------------------ exports

    def _rows(self) -> pa.Array:
        return pa.array(self.selected, pa.int64())

    def records(self, original: bool = False) -> list[Any]:
        """The selected records as Python objects, in the order of ``ids``: canonical rows (dicts with
        ``id``, ``source``, ``file``, ``row``, ``line``, ``messages``, ``original``), or with ``original=True``
        each record as it was read (the ``original`` JSON parsed)."""
        if original:
            import orjson

            return [orjson.loads(s) for s in self.pool.table.column("original").take(self._rows()).to_pylist()]
        return take_rows(self.pool.table, self.selected).to_pylist()

    def to_arrow(self, original: bool = False, signals: bool = False) -> pa.Table:
        """The selected pool rows as an Arrow table, in the order of ``ids`` (pool order, as ``write``
        writes them): the canonical schema (``siftkit.io.pool.POOL_SCHEMA``), plus the signal columns with
        ``signals=True``. ``original=True``: the original records instead (``original`` parsed; columns are
        the union of their fields; records that are not mappings, or whose fields' types clash, are an
        error: use ``records(original=True)``)."""
        if original:
            table = _records_table(self.records(original=True))
        else:
            table = take_rows(self.pool.table, self.selected)
        if signals and self.signals.num_columns:
            sig = self.signals.take(self._rows())
            for name in sig.column_names:
                if name not in table.column_names:
                    table = table.append_column(name, sig.column(name))
        return table

    def to_pandas(self, original: bool = False, signals: bool = False) -> Any:
        """``to_arrow(...)`` as a pandas DataFrame (needs pandas). With ``original=True`` the original
        records go straight into ``pandas.DataFrame`` (missing fields are NaN)."""
        from .preflight import require

        require({"pandas": ""}, "Selection.to_pandas()")
        if original:
            import pandas as pd

            df = pd.DataFrame.from_records(self.records(original=True))
            if signals and self.signals.num_columns:
                sig = self.signals.take(self._rows()).to_pandas()
                for name in sig.columns:
                    if name not in df.columns:
                        df[name] = sig[name].to_numpy()
            return df
        return self.to_arrow(signals=signals).to_pandas()

    def to_dataset(self, original: bool = False, signals: bool = False) -> Any:
        """``to_arrow(...)`` as a Hugging Face ``datasets.Dataset`` (needs the ``hf`` extra)."""
        from .preflight import require

        require({"datasets": ""}, "Selection.to_dataset()")
        import datasets

        return datasets.Dataset(self.to_arrow(original=original, signals=signals))

    def counts(self) -> dict[str, Any]:
        c = self.pool.counts()
        by_step: dict[str, int] = {}
        for s in self.steps:
            for reason, n in s.dropped.items():
                by_step[reason] = by_step.get(reason, 0) + n
        c["duplicates"] = sum(n for s in self.steps if s.role == "dedup" for n in s.dropped.values())
        c["filtered"] = sum(n for s in self.steps if s.role == "filter" for n in s.dropped.values())
        c["dropped_by_step"] = by_step
        from .signals.base import reason_counts

        failures = {k: v for k, v in reason_counts(self.signals).items() if v}
        if failures:
            c["signal_failures"] = failures
        c["selected"] = len(self.selected)
        codes = self.status_codes
        c["not_selected"] = int((codes == STATUS_LABELS.index("not_selected")).sum())
        # sources as dictionary codes (one small int per record, the names once), not Python strings
        enc = self.pool.table.column("source").combine_chunks().dictionary_encode()
        names = enc.dictionary.to_pylist()
        src = enc.indices.to_numpy(zero_copy_only=False)

        def per_source(rows: np.ndarray) -> dict[str, int]:
            n = np.bincount(src[rows], minlength=len(names)) if len(rows) else np.zeros(len(names), np.int64)
            return {names[i]: int(k) for i, k in enumerate(n) if k}

        for s, n in per_source(np.asarray(self.selected, dtype=np.int64)).items():
            c["by_source"].setdefault(s, {"read": 0, "rejected": 0})["selected"] = int(n)
        for v in c["by_source"].values():
            v.setdefault("selected", 0)
        for role, key in (("dedup", "duplicates"), ("filter", "filtered")):
            labels = [self.status_labels.index(lab) for lab, r in self.drop_roles.items() if r == role]
            per = per_source(np.flatnonzero(np.isin(codes, labels))) if labels else {}
            for s_name, v in c["by_source"].items():
                v[key] = int(per.get(s_name, 0))
        return c


def _records_table(records: list[Any]) -> pa.Table:
    """Original records (mappings) as one Arrow table whose columns are the union of their fields."""
    from .errors import InputDataError

    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise InputDataError(f"selected record {bad} was read as a {type(records[bad]).__name__}, not a mapping: "
                             f"it has no columns (use records(original=True), or original=False)")
    if not records:
        return pa.table({})
    try:
        return pa.Table.from_struct_array(pa.array(records))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputDataError(f"the original records do not fit one table ({e}); use records(original=True) "
                             f"or to_pandas(original=True)") from None


def resolve_model_signals(cfg: RunConfig, pool: Pool, workers: int = 1) -> RunConfig:
    """The config with every signal whose model is built from the pool first (a derived model,
    ``siftkit.derive``) pointed at that model (built now, or reused from the cache). ``raw`` is kept."""
    from .derive import resolve_models

    return resolve_models(cfg, pool.table, workers)


def run_selection(cfg: RunConfig, pool: Pool | None = None) -> Selection:
    from .preflight import preflight

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    preflight(cfg)   # extras, columns and local paths: before any reading or computing
    selectors = [make_selector(s) for s in cfg.steps]
    reader = None
    planned = None    # the run's signals, when known before reading (no derived model to build from the pool)
    if pool is None:
        if cfg.engine == "ray":   # files listed here, read, normalised and cheaply scored on the workers
            from .derive import needs_resolving
            from .engines.ray import ray_task_reader

            # the cheap signals are computed by the reading tasks (a derived model's signals wait for the pool)
            planned = None if needs_resolving(cfg) else plan_signals(cfg, selectors)
            reader = ray_task_reader(cfg.cache_dir, cfg.ray, planned or [])
        pool = read_pool(cfg.inputs, on_error=cfg.on_error, workers=cfg.workers, run_tasks=reader)
    timings["read"] = round(time.perf_counter() - t0, 3)
    n_memory = sum(1 for f in pool.table.column("file").unique().to_pylist() if f.startswith("<"))
    progress.info(f"read {len(pool):,} records from {len(pool.files)} file(s)"
                  + (f" and {n_memory} in-memory input(s)" if n_memory else "")
                  + (f", {pool.counts()['rejected']:,} rejected" if pool.rejects else ""))
    workers = cfg.workers or _auto_workers(len(pool))
    progress.debug(f"workers: {workers} (of {os.cpu_count()} cores), engine {cfg.engine}, "
                   f"cache {cfg.cache_dir}")
    tb = time.perf_counter()
    resolved = resolve_model_signals(cfg, pool, workers)
    if resolved is not cfg:
        cfg, planned = resolved, None
        timings["models"] = round(time.perf_counter() - tb, 3)
    t1 = time.perf_counter()
    sig_stats: dict[str, Any] = {}
    sigs = planned if planned is not None else plan_signals(cfg, selectors)
    signals = compute_signals(pool.table, sigs, cfg.cache_dir, workers=workers, engine=cfg.engine,
                              shard_size=cfg.shard_size, stats=sig_stats, ray=cfg.ray,
                              spill=pool.spill, read_scored=getattr(reader, "scored", ())) if sigs else pa.table({})
    timings["signals"] = round(time.perf_counter() - t1, 3)
    for k, v in sig_stats.items():
        timings[f"signal:{k}"] = v["seconds"]
    ctx = SelectionContext(pool=pool.table, signals=signals, seed=cfg.seed,
                           vector_loader=_vector_loader(pool, cfg, workers), cache_dir=cfg.cache_dir)
    n = len(pool)
    budget: int | None = None   # resolved at the select step: a fraction is of the records that reach it
    status = np.zeros(n, dtype=np.int16)           # codes into status_labels (0: not_selected)
    status_labels = list(STATUS_LABELS)
    candidates = np.arange(n, dtype=np.int64)
    reports: list[StepReport] = []
    drop_roles: dict[str, str] = {}
    record_columns: dict[str, np.ndarray] = {}
    t2 = time.perf_counter()
    for spec, sel in zip(cfg.steps, selectors):
        ts = time.perf_counter()
        b = None
        if spec.role == "select" and cfg.budget is not None:
            budget = b = resolve_budget(cfg.budget, len(candidates))
        if spec.role == "select" and budget is not None and budget > len(candidates):
            progress.warn(f"budget {budget:,} is larger than the {len(candidates):,} records left after "
                          f"earlier steps: selecting all of them")
        if ctx.vector_loader is not None and hasattr(ctx.vector_loader, "begin_step"):
            ctx.vector_loader.begin_step()
        with progress.stage(f"{spec.role}:{spec.selector}", total=len(candidates)) as st:
            progress.debug(f"{spec.where}: {spec.selector} {sel.config()} on {len(candidates):,} records"
                           + (f", budget {b:,}" if b is not None else ""))
            res = sel.run(ctx, candidates, b)
            st.update(len(candidates))
            st.set(kept=len(res.kept), dropped={str(k): int(v) for k, v in res.dropped.items() if v})
        used = getattr(ctx.vector_loader, "step_used", {}) or {}
        for col, (rows, vals) in (res.details.pop("record_columns", None) or {}).items():
            vals = np.asarray(vals)
            arr = record_columns.setdefault(col, np.full(n, np.nan) if vals.dtype.kind == "f"
                                            else np.full(n, None, dtype=object))
            arr[np.asarray(rows, dtype=np.int64)] = vals
        kept = np.asarray(res.kept, dtype=np.int64)
        _check_subset(sel, candidates, kept)
        gone = np.setdiff1d(candidates, kept, assume_unique=True)
        if spec.role != "select" and len(gone):
            label = next(iter(res.dropped)) if len(res.dropped) == 1 else spec.selector
            if f"dropped:{label}" not in status_labels:
                status_labels.append(f"dropped:{label}")
            status[gone] = status_labels.index(f"dropped:{label}")
            drop_roles[f"dropped:{label}"] = spec.role
        reports.append(StepReport(spec.role, spec.selector, sel.config(), len(candidates), len(kept),
                                  dict(res.dropped), res.details, time.perf_counter() - ts,
                                  {fp: e["name"] for fp, e in used.items()}))
        candidates = kept if spec.role == "select" else np.sort(kept)   # a select step's kept: pick order
        if len(candidates) == 0:
            raise EmptyResultError(f"{spec.where} ({spec.selector}) left no records: nothing to select")
    if cfg.budget is not None and not any(s.role == "select" for s in cfg.steps):
        raise ConfigError("a budget was given but there is no select step (add --method or a select step)")
    selected = np.sort(candidates)
    status[selected] = STATUS_LABELS.index("selected")
    for i, r in enumerate(reports):
        timings[f"step{i}:{r.name}"] = round(r.seconds, 3)
    timings["select"] = round(time.perf_counter() - t2, 3)
    timings["total"] = round(time.perf_counter() - t0, 3)
    return Selection(pool, signals, selected, reports, cfg, status, timings, sig_stats, drop_roles,
                     dict(ctx._vectors), ctx.vector_loader, budget, record_columns, candidates, status_labels)


def _check_subset(sel: Selector, candidates: np.ndarray, kept: np.ndarray) -> None:
    if len(np.unique(kept)) != len(kept) or not np.isin(kept, candidates).all():
        raise RuntimeError(f"selector {sel.name} returned rows that are not a subset of its candidates")


def _auto_workers(n: int) -> int:
    import os

    return 1 if n < 50_000 else max(1, os.cpu_count() or 1)


def _vector_loader(pool: Pool, cfg: RunConfig, workers: int):
    """Embeddings through the cache; records which ones each step used (for the manifest)."""
    from .signals.vectors import VectorLoader

    return VectorLoader(pool.table, cfg.cache_dir, workers=workers, engine=cfg.engine, ray=cfg.ray,
                        spill=pool.spill)
