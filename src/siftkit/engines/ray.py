"""Ray engine: signal computation as a Ray Data batch map over an actor pool.

Same contract as ``engines.local.run_shards``: compute every shard and call ``on_done(i, values)`` in the
driver as each shard completes (the driver writes the cache, so a killed run resumes by shard here too).

Each shard becomes one Ray Data block tagged with its shard index and row positions; an actor (one model
copy; ``num_gpus=1`` per actor when the signal asks for a GPU) runs ``Signal.setup`` once and computes a
whole shard with the same ``compute_shard`` as the local engine, so batches, and therefore results, are
identical to a local run. Shards are cut by the caller from the pool in a deterministic order (pool order
of the missing record ids), so the sharding does not depend on the cluster.

Cluster use: start Ray on the cluster (``ray start --head`` / KubeRay), then either export
``RAY_ADDRESS=ray://<head>:10001`` (or ``auto`` on a cluster node) before running siftkit, or pass
``address=`` here. Workers need siftkit and the signal's dependencies installed (or a ``runtime_env``)
and must be able to load the model (hub name, or a path visible on every node). Without an address a local
Ray instance is started on this machine, bound to 127.0.0.1 (no dashboard). A shared cluster is the
operator's to secure: Ray's token authentication (``RAY_AUTH_MODE=token``, the default in recent Ray) and a
private network (head and worker ports reachable only from the cluster's nodes); see docs/outputs.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import MissingDependencyError
from ..signals.base import Signal

SHARD_COL, POS_COL = "_siftkit_shard", "_siftkit_pos"


LOCALHOST = "127.0.0.1"


def init_ray(address: str | None = None) -> Any:
    """Connect to the Ray cluster at ``address`` (or ``RAY_ADDRESS``), else start a local instance that
    listens on 127.0.0.1 only (no dashboard), so nothing on the network can reach it."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        # Ray resolves "127.0.0.1" to the machine's outward address unless it runs as a single-machine
        # "cluster"; this switch (read by Ray's constants, also inherited by its processes) keeps every
        # Ray process (GCS, raylet, workers, agents) bound to the loopback interface.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError("ray", "ray", "the Ray engine") from None
    if not ray.is_initialized():
        opts: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False,
                                "log_to_driver": False, "configure_logging": False}
        if address is None:
            _keep_ray_local()
            opts["_node_ip_address"] = LOCALHOST
        ray.init(address=address, **opts)
    return ray


def _keep_ray_local() -> None:
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - a Ray without this module
        return
    if hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        ray_constants.ENABLE_RAY_CLUSTER = False   # Ray was imported before the variable was set


class _ShardWorker:
    """Actor body: one signal instance per actor, set up once, whole shards per call."""

    def __init__(self, sig: Signal):
        self.sig = sig
        self.ready = False

    def __call__(self, table: pa.Table) -> pa.Table:
        from .local import compute_shard

        if not self.ready:
            self.sig.setup()
            self.ready = True
        out = []
        shard_ids = table.column(SHARD_COL).to_numpy()
        for s in np.unique(shard_ids):
            sub = table.filter(pa.array(shard_ids == s))
            order = np.argsort(sub.column(POS_COL).to_numpy(), kind="stable")
            sub = sub.take(pa.array(order))
            values = compute_shard(self.sig, sub.drop_columns([SHARD_COL, POS_COL]))
            cols = {SHARD_COL: sub.column(SHARD_COL), POS_COL: sub.column(POS_COL)}
            for k, v in values.items():
                cols[k] = _to_arrow(v)
            out.append(pa.table(cols))
        return pa.concat_tables(out)


def _to_arrow(v: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(v, (pa.Array, pa.ChunkedArray)):
        return v
    v = np.asarray(v)
    if v.ndim == 2:      # vector signals: one fixed-size list per row
        return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
    if v.dtype == object:
        return pa.array(v.tolist())
    return pa.array(v)


def _to_numpy(col: pa.ChunkedArray) -> np.ndarray:
    col = col.combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)


def run_shards(sig: Signal, shards: list[pa.Table], on_done: Callable[[int, dict[str, Any]], None],
               workers: int = 1, *, address: str | None = None, num_actors: int | None = None) -> None:
    """Compute ``shards`` on Ray; ``num_actors`` defaults to one per GPU for GPU signals, ``workers`` (or
    the cluster's CPUs) for parallel CPU signals, and 1 for CPU signals that use all cores themselves."""
    if not shards:
        return
    ray = init_ray(address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    gpus = float(sig.resources.get("gpus", 0))
    if num_actors is None:
        res = ray.cluster_resources()
        if gpus:
            num_actors = max(1, int(res.get("GPU", 1) // gpus))
        elif sig.parallel:
            num_actors = max(1, workers if workers > 1 else int(res.get("CPU", 1)))
        else:
            num_actors = 1
    num_actors = max(1, min(num_actors, len(shards)))
    tagged = [s.append_column(SHARD_COL, pa.array(np.full(s.num_rows, i, np.int64)))
               .append_column(POS_COL, pa.array(np.arange(s.num_rows, dtype=np.int64)))
              for i, s in enumerate(shards)]
    ds = ray.data.from_arrow(tagged)
    out = ds.map_batches(_ShardWorker, fn_constructor_args=(sig,), batch_size=None, batch_format="pyarrow",
                         compute=ray.data.ActorPoolStrategy(size=num_actors),
                         num_gpus=gpus or None, num_cpus=None if gpus else float(sig.resources.get("cpus", 1)))
    sizes = [s.num_rows for s in shards]
    parts: dict[int, list[pa.Table]] = {}
    got = [0] * len(shards)
    for block in out.iter_batches(batch_size=None, batch_format="pyarrow"):
        ids = block.column(SHARD_COL).to_numpy()
        for s in np.unique(ids):
            i = int(s)
            sub = block.filter(pa.array(ids == s))
            parts.setdefault(i, []).append(sub)
            got[i] += sub.num_rows
            if got[i] == sizes[i]:
                whole = pa.concat_tables(parts.pop(i))
                whole = whole.take(pa.array(np.argsort(whole.column(POS_COL).to_numpy(), kind="stable")))
                on_done(i, {k: _to_numpy(whole.column(k)) for k in whole.column_names
                            if k not in (SHARD_COL, POS_COL)})
    if parts or any(g != n for g, n in zip(got, sizes)):  # pragma: no cover - a Ray bug, never silent
        raise RuntimeError(f"ray engine: shards incomplete after the run: {sorted(parts)}")
