"""Local engine: runs a signal over shards of the pool, in this process or a process pool.

The engine knows nothing about what a signal computes: it shards, calls ``Signal.setup`` once per worker
and ``Signal.compute`` per batch, and hands each finished shard to the store. Workers come from
``siftkit.workers.process_pool``: they die with the parent. The Ray engine (issue 4)
implements the same ``run_shards`` contract.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ..signals.base import Signal

_WORKER_SIGNAL: dict[str, Signal] = {}


def compute_shard(sig: Signal, shard: pa.Table,
                  on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Run ``sig.compute`` over a shard in batches and concatenate the columns; ``on_batch(rows)`` is called
    after each batch (progress within a shard)."""
    key = sig.fingerprint()
    live = _WORKER_SIGNAL.get(key)
    if live is None:
        sig.setup()
        _WORKER_SIGNAL[key] = live = sig
    out: dict[str, list[np.ndarray]] = {}
    bs = max(1, live.batch_size)
    for start in range(0, shard.num_rows, bs):
        res = live.compute(shard.slice(start, bs))
        for k, v in res.items():
            out.setdefault(k, []).append(np.asarray(v) if not isinstance(v, (pa.Array, pa.ChunkedArray)) else v)
        if on_batch is not None:
            on_batch(min(bs, shard.num_rows - start))
    return {k: (np.concatenate(v) if isinstance(v[0], np.ndarray) else pa.chunked_array(v))
            for k, v in out.items()}


_ROWS_DONE: Any = None   # in a worker: a shared counter of rows computed (progress between shard results)


def _init_worker(counter: Any) -> None:
    global _ROWS_DONE
    _ROWS_DONE = counter


def _count_rows(n: int) -> None:
    with _ROWS_DONE.get_lock():
        _ROWS_DONE.value += n


def _worker(args: tuple[Signal, pa.Table]) -> dict[str, np.ndarray]:
    sig, shard = args
    return compute_shard(sig, shard, _count_rows if _ROWS_DONE is not None else None)


def run_shards(sig: Signal, shards: list[pa.Table], on_done: Callable[[int, dict[str, Any]], None],
               workers: int = 1, on_progress: Callable[[int], None] | None = None) -> None:
    """Compute every shard; ``on_done(i, values)`` is called in the parent as each one finishes.

    ``on_progress(rows)`` (optional) is called in the parent as batches finish, also inside shards: directly in
    this process, or from a counter shared with the worker processes (polled twice a second).
    """
    if workers <= 1 or len(shards) <= 1 or not sig.parallel:
        for i, shard in enumerate(shards):
            on_done(i, compute_shard(sig, shard, on_progress))
        return
    from concurrent.futures import FIRST_COMPLETED, wait

    from ..workers import mp_context, process_pool

    counter = mp_context().Value("q", 0)
    reported = 0

    def poll() -> None:
        nonlocal reported
        if on_progress is not None:
            now = counter.value
            if now > reported:
                on_progress(now - reported)
                reported = now

    with process_pool(min(workers, len(shards)), initializer=_init_worker, initargs=(counter,)) as ex:
        futs = [ex.submit(_worker, (sig, s)) for s in shards]
        for i, f in enumerate(futs):
            while not f.done():
                wait([f], timeout=0.5, return_when=FIRST_COMPLETED)
                poll()
            values = f.result()
            poll()
            on_done(i, values)


def make_shards(pool: pa.Table, rows: np.ndarray, shard_size: int) -> list[pa.Table]:
    """Compact shard tables of the given pool rows (without the ``original`` column).

    Each shard is its own ``take`` rather than a slice of one big table: a slice pickles (to a worker
    process) with the whole underlying buffers, which at 1M records ships gigabytes per shard.
    """
    cols = pool.select([c for c in pool.column_names if c != "original"])
    return [cols.take(pa.array(rows[s:s + shard_size], pa.int64())) for s in range(0, len(rows), shard_size)]


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)
