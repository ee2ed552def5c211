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


def compute_shard(sig: Signal, shard: pa.Table) -> dict[str, np.ndarray]:
    """Run ``sig.compute`` over a shard in batches and concatenate the columns."""
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
    return {k: (np.concatenate(v) if isinstance(v[0], np.ndarray) else pa.chunked_array(v))
            for k, v in out.items()}


def _worker(args: tuple[Signal, pa.Table]) -> dict[str, np.ndarray]:
    sig, shard = args
    return compute_shard(sig, shard)


def run_shards(sig: Signal, shards: list[pa.Table], on_done: Callable[[int, dict[str, Any]], None],
               workers: int = 1) -> None:
    """Compute every shard; ``on_done(i, values)`` is called in the parent as each one finishes."""
    if workers <= 1 or len(shards) <= 1 or not sig.parallel:
        for i, shard in enumerate(shards):
            on_done(i, compute_shard(sig, shard))
        return
    from ..workers import process_pool

    with process_pool(min(workers, len(shards))) as ex:
        futs = [ex.submit(_worker, (sig, s)) for s in shards]
        for i, f in enumerate(futs):
            on_done(i, f.result())


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)
