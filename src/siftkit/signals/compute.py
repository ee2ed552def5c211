"""Score once: compute (or reuse) signals for a pool, shard by shard, through the cache."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .. import progress
from ..engines.local import make_shards
from ..errors import ConfigError
from ..registry import make, signal_class
from .base import Signal
from .store import SignalStore

SHARD_SIZE = 65536


def build_signal(spec: str | dict[str, Any] | Signal) -> Signal:
    """``"tokens"``, ``{"name": "tokens", "tokenizer": "gpt2"}`` or a Signal instance."""
    if isinstance(spec, Signal):
        return spec
    if isinstance(spec, str):
        return make(signal_class(spec), {}, f"signal {spec!r}")
    if isinstance(spec, dict):
        if "name" not in spec:
            raise ConfigError(f"a signal needs a 'name': {spec}")
        params = {k: v for k, v in spec.items() if k != "name"}
        return make(signal_class(spec["name"]), params, f"signal {spec['name']!r}")
    raise ConfigError(f"cannot make a signal from {spec!r}")


def compute_signals(pool: pa.Table, signals: Sequence[str | dict[str, Any] | Signal], cache_dir: str,
                    *, workers: int = 1, shard_size: int | None = None, engine: str = "local",
                    refresh: bool = False, stats: dict[str, Any] | None = None, ray: Any = None,
                    spill: Sequence[tuple[str, int]] | None = None,
                    read_scored: Sequence[dict[str, Any]] = ()) -> pa.Table:
    """Return a table aligned with ``pool`` holding every column of every signal.

    Cached values are reused by record id; missing ones are computed in shards of ``shard_size``
    records (default: the signal's own ``shard_size``, else ``SHARD_SIZE``), each written to the cache as
    soon as it is done (so a killed run resumes).
    ``stats`` (if given) receives per-signal timings and cache hits.
    ``engine="ray"``: every missing signal in one plan (``engines.ray.run_plan``: one pass for the cheap
    signals, one per model signal; the workers write the cache); ``ray`` is its ``RaySettings``
    (default: ``RAY_ADDRESS`` or a local instance) and ``shard_size`` defaults to about four shards per actor;
    ``spill`` (``Pool.spill``, a pool read on the workers) lets the workers read their shards themselves;
    ``read_scored``: the done records of the signals the Ray reading tasks computed as they read
    (``engines.ray.RayTaskReader.scored``), found in the cache here and counted as computed by this run.
    """
    if engine == "ray":
        return _compute_signals_ray(pool, signals, cache_dir, shard_size=shard_size, refresh=refresh,
                                    stats=stats, settings=ray, spill=spill, read_scored=read_scored)
    if engine != "local":
        raise ConfigError(f"unknown engine {engine!r}; use 'local' or 'ray'")
    store = SignalStore(cache_dir)
    ids = pool.column("id")
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for spec in signals:
        sig = build_signal(spec)
        t0 = time.perf_counter()
        if refresh:
            store.clear(sig)
        if hasattr(sig, "begin_run"):   # LLM signals: response cache folder, usage counters of this run
            sig.begin_run(cache_dir)
        cached, missing = store.load(sig, ids)
        todo = np.flatnonzero(missing)
        computed = 0
        progress.debug(f"signal:{sig.name}: fingerprint {sig.fingerprint()}, {len(ids) - len(todo):,} cached, "
                       f"{len(todo):,} to compute" + (f" with {workers} worker(s), engine {engine}" if len(todo) else ""),
                       stage=f"signal:{sig.name}", fingerprint=sig.fingerprint(), cached=int(len(ids) - len(todo)),
                       computed=len(todo), workers=workers, engine=engine)
        if not len(todo):
            progress.event("stage_end", stage=f"signal:{sig.name}", records=0, cached=len(ids),
                           seconds=round(time.perf_counter() - t0, 3), rate=0.0)
        if len(todo):
            computed = _compute_missing(sig, pool, todo, store, workers,
                                        shard_size or sig.shard_size or SHARD_SIZE)
            cached, missing = store.load(sig, ids)
            if missing.any():  # pragma: no cover - would be a bug in a signal or the store
                raise RuntimeError(f"signal {sig.name}: {int(missing.sum())} records still missing after compute")
        _collect(sig, cached, columns, stats, computed, len(ids), time.perf_counter() - t0)
    return pa.table(columns) if columns else pa.table({"_": pa.nulls(len(ids))}).drop(["_"])


def _collect(sig: Signal, cached: pa.Table, columns: dict[str, Any], stats: dict[str, Any] | None,
             computed: int, n: int, seconds: float) -> None:
    """Add a signal's cached columns to ``columns`` (a column name made by two signals is a config error) and
    its timings, cache hits and LLM usage of this run to ``stats``."""
    for name in cached.column_names:
        if name in columns:
            raise ConfigError(f"two signals produce the column {name!r}; give one a different config")
        columns[name] = cached.column(name)
    if stats is not None:
        stats[sig.name] = {"fingerprint": sig.fingerprint(), "config": sig.config(), "computed": int(computed),
                           "cached": int(n - computed), "seconds": round(seconds, 3)}
        usage = sig.end_run() if hasattr(sig, "end_run") else None
        if usage is not None:
            stats[sig.name]["usage"] = usage


def _compute_missing(sig: Signal, pool: pa.Table, todo: np.ndarray, store: SignalStore, workers: int,
                     shard_size: int) -> int:
    shards = make_shards(pool, todo, shard_size)
    with progress.stage(f"signal:{sig.name}", total=len(todo)) as bar:
        bar.set(cached=int(len(pool) - len(todo)))

        def done(i: int, values: dict[str, Any]) -> None:
            store.write_part(sig, shards[i].column("id").combine_chunks(), values)

        from ..engines.local import run_shards

        run_shards(sig, shards, done, workers=workers, on_progress=bar.update)   # progress per batch
    return len(todo)


def _compute_signals_ray(pool: pa.Table, signals: Sequence[str | dict[str, Any] | Signal], cache_dir: str, *,
                         shard_size: int | None, refresh: bool, stats: dict[str, Any] | None,
                         settings: Any, spill: Sequence[tuple[str, int]] | None = None,
                         read_scored: Sequence[dict[str, Any]] = ()) -> pa.Table:
    """``compute_signals`` on Ray: what the cache lacks for every signal goes into one plan
    (``engines.ray.run_plan``), written to the cache by the workers; the values are then read from it."""
    from ..engines.ray import run_plan

    store = SignalStore(cache_dir)
    ids = pool.column("id")
    t0 = time.perf_counter()
    while_reading: dict[str, list[float]] = {}    # fingerprint -> [rows, worker seconds] computed while reading
    for rec in read_scored:
        acc = while_reading.setdefault(rec["fingerprint"], [0, 0.0])
        acc[0] += rec["rows"]
        acc[1] += rec["seconds"]
    built, todo = [], []
    for spec in signals:
        sig = build_signal(spec)
        if refresh:
            store.clear(sig)
        if hasattr(sig, "begin_run"):
            sig.begin_run(cache_dir)
        _, missing = store.load(sig, ids)
        rows = np.flatnonzero(missing)
        early = while_reading.get(sig.fingerprint())
        if early:
            progress.debug(f"signal:{sig.name}: {int(early[0]):,} record(s) computed while reading "
                           f"({early[1]:.2f} s on the workers)", stage=f"signal:{sig.name}",
                           computed=int(early[0]), seconds=round(early[1], 3), engine="ray")
        progress.debug(f"signal:{sig.name}: fingerprint {sig.fingerprint()}, {len(ids) - len(rows):,} cached, "
                       f"{len(rows):,} to compute" + (", engine ray" if len(rows) else ""),
                       stage=f"signal:{sig.name}", fingerprint=sig.fingerprint(),
                       cached=int(len(ids) - len(rows)), computed=len(rows), engine="ray")
        built.append((sig, len(rows) + int(early[0] if early else 0)))
        if len(rows):
            todo.append((sig, rows))
    worker_seconds: dict[str, float] = {}
    if todo:
        total = sum(len(r) for _, r in todo)
        by_fp = {s.fingerprint(): s for s, _ in todo}
        with progress.stage("signals:ray", total=total) as bar, contextlib.ExitStack() as open_stages:
            bar.set(signals=[s.name for s, _ in todo])
            # one stage per signal, as the local engine reports them: rows done and rate, as the workers'
            # batches finish (``run_plan``'s on_progress: inside a shard too, reconciled with each done record)
            stages, left = {}, {}
            for s, r in todo:
                st = open_stages.enter_context(progress.stage(f"signal:{s.name}", total=len(r)))
                st.set(cached=int(len(ids) - len(r)), engine="ray")
                stages[s.fingerprint()], left[s.fingerprint()] = st, len(r)

            def advance(fp: str, n: int) -> None:
                stages[fp].update(n)
                bar.update(n)

            def done(rec: dict[str, Any]) -> None:
                fp = rec["fingerprint"]
                worker_seconds[fp] = worker_seconds.get(fp, 0.0) + rec["seconds"]
                if rec.get("usage") is not None and hasattr(by_fp[fp], "add_usage"):
                    by_fp[fp].add_usage(rec["usage"])   # the worker's LLM counters into this run's
                st = stages[fp]   # its rows are in st.n already (advance)
                progress.debug(f"signal:{rec['signal']}: shard {rec['shard']} done, {rec['rows']:,} rows in "
                               f"{rec['seconds']:.2f}s on a worker ({st.n:,}/{st.total:,})",
                               stage=f"signal:{rec['signal']}", shard=rec["shard"], rows=rec["rows"],
                               seconds=rec["seconds"], done=st.n, total=st.total)
                left[fp] -= rec["rows"]
                if left[fp] <= 0:
                    st.close()   # its end line when its last shard is in, not when the whole plan is

            run_plan(todo, pool, cache_dir, settings=settings, shard_size=shard_size, on_done=done, spill=spill,
                     on_progress=advance)
    plan_seconds = time.perf_counter() - t0
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for sig, computed in built:
        cached, missing = store.load(sig, ids)
        if missing.any():  # pragma: no cover - would be a bug in a signal, the store or the engine
            raise RuntimeError(f"signal {sig.name}: {int(missing.sum())} records still missing after compute")
        # seconds: the workers' compute time for this signal (summed over shards), else the plan's wall time
        fp = sig.fingerprint()
        seconds = (worker_seconds.get(fp, 0.0) + while_reading.get(fp, [0, 0.0])[1]
                   if fp in worker_seconds or fp in while_reading else plan_seconds)
        _collect(sig, cached, columns, stats, computed, len(ids), seconds)
    return pa.table(columns) if columns else pa.table({"_": pa.nulls(len(ids))}).drop(["_"])
