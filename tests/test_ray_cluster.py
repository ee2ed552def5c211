"""The Ray engine on a multi-node cluster (``ray.cluster_utils.Cluster``: several nodes on this machine).

A worker node is killed mid-run, while the pool is being read and scored on it (the reading tasks compute the
cheap signals; shards of the plan for the rest); the run must still
finish with the selection a local-engine run makes, byte for byte (pick order, ``selected.jsonl``,
``_siftkit/selection.parquet``). Only public interfaces are used (``siftkit.select(..., engine="ray")`` with
``RAY_ADDRESS`` pointing at the cluster, ``siftkit.write``), so the test holds whatever the engine does
inside.

Every Ray process of the cluster listens on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read by
Ray's constants and inherited by its processes, and ``node_ip_address``).
"""

from __future__ import annotations

import inspect
import os
import random
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
cluster_utils = pytest.importorskip("ray.cluster_utils")
psutil = pytest.importorskip("psutil")

import siftkit
from conftest import convo, write_jsonl

LOOPBACK = "127.0.0.1"
NODE_STORE = 80 * 2**20          # object store per node: small, several nodes share this machine's memory
RECORDS = 3000
SHARD = 250                      # records per shard: 12 shards per signal, so the kill lands mid-run
FILES = 12                       # input files: 12 reading tasks
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
         "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega", "river",
         "stone", "cloud", "bread", "lamp"]


def _ray_local_only() -> tuple[str | None, bool | None]:
    from ray._private import ray_constants

    old = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if old[1] is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False   # Ray was imported before the variable was set
    return old


@pytest.fixture(scope="module")
def cluster():
    """A head node without CPUs (the driver only) and two worker nodes of 1 CPU each."""
    from ray._private import ray_constants

    if ray.is_initialized():
        ray.shutdown()
    old_env, old_const = _ray_local_only()
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": NODE_STORE, "include_dashboard": False,
        "node_ip_address": LOOPBACK})
    try:
        workers = [c.add_node(num_cpus=1, object_store_memory=NODE_STORE, node_ip_address=LOOPBACK)
                   for _ in range(2)]
        c.wait_for_nodes()
        yield c, workers
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        if old_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = old_env
        if old_const is not None:
            ray_constants.ENABLE_RAY_CLUSTER = old_const


def make_pool(folder: Path) -> Path:
    """Random word soup of varied length, every 17th record the same conversation (exact duplicates)."""
    rng = random.Random(7)
    rows = []
    for i in range(RECORDS):
        if i % 17 == 0:
            rows.append(convo("Which river is the longest?", "The Nile, by most measures."))
            continue
        rows.append(convo(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40))),
                          " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 90)))))
    step = RECORDS // FILES      # many files: many reading tasks (they compute the cheap signals), so the
    for k in range(FILES):       # kill after the first part lands while most of them are still to run
        write_jsonl(folder / f"part-{k:02d}.jsonl", rows[k * step:(k + 1) * step])
    return folder


def plan(cache: Path, engine: str) -> dict:
    """A cheap plan: a token-length filter, exact dedup, a seeded stratified pick."""
    opts = {"filters": ["tokens_total >= 8"], "dedup": "first", "stratify": "source", "seed": 3,
            "cache_dir": str(cache), "engine": engine}
    if "shard_size" in inspect.signature(siftkit.selection_config).parameters:
        opts["shard_size"] = SHARD
    return opts


def cache_parts(cache: Path) -> list[Path]:
    return sorted(cache.glob("signals/*/*/part-*.parquet"))


def busy_workers(node) -> list[str]:
    """Titles of the node's Ray worker processes that run a task or actor (not idle workers, not the
    node's agents), e.g. ``ray::MapWorker(MapBatches(_ShardWorker)).submit``."""
    try:
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        titles = [" ".join(p.cmdline()) for p in raylet.children(recursive=True)]
    except (psutil.Error, KeyError, IndexError):
        return []
    return [t.strip() for t in titles if t.startswith("ray::") and not t.startswith("ray::IDLE")
            and not t.split()[0].endswith("Agent")]


def ids(sel) -> list[str]:
    return sel.pool.table.column("id").take(sel.pick_order).to_pylist()


@pytest.mark.slow   # ~50 s: three Ray nodes start on this machine
def test_node_killed_mid_run_same_selection(cluster, tmp_path, monkeypatch):
    c, workers = cluster
    pool = make_pool(tmp_path / "pool")
    local = siftkit.select(str(pool), 400, **plan(tmp_path / "cache-local", "local"))
    siftkit.write(local, str(tmp_path / "out-local"))

    monkeypatch.setenv("RAY_ADDRESS", c.address)   # siftkit's init_ray connects to the running cluster
    if "shard_size" not in plan(tmp_path, "ray"):  # before a --shard-size option: the driver's default
        from siftkit.signals import compute
        monkeypatch.setattr(compute, "SHARD_SIZE", SHARD)
    cache = tmp_path / "cache-ray"
    seen: dict = {}
    stop = threading.Event()

    def kill_when_a_part_appears() -> None:
        while not stop.is_set():
            if cache_parts(cache):
                # the node running a shard computation (one with a busy worker), else the first one
                victim = next((w for w in workers if busy_workers(w)), workers[0])
                seen["busy"] = busy_workers(victim)
                seen["parts_before"] = len(cache_parts(cache))
                c.remove_node(victim, allow_graceful=False)      # like a crashed machine
                seen["killed_at"] = time.monotonic()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_a_part_appears, daemon=True)
    killer.start()
    try:
        got = siftkit.select(str(pool), 400, **plan(cache, "ray"))
    finally:
        stop.set()
        killer.join(timeout=60)
    finished = time.monotonic()
    siftkit.write(got, str(tmp_path / "out-ray"))

    assert "killed_at" in seen and seen["killed_at"] < finished, "the worker node was not killed during the run"
    assert seen["busy"], "the killed node was running no siftkit work"
    assert seen["parts_before"] < len(cache_parts(cache)), "the run had already finished its shards"
    # the GCS marks a crashed node dead after its health checks fail (seconds): wait for it, bounded
    deadline = time.monotonic() + 60
    while sum(n["Alive"] for n in ray.nodes()) != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(ray.nodes()) == 3 and sum(n["Alive"] for n in ray.nodes()) == 2

    assert local.budget_resolved == got.budget_resolved == 400
    assert ids(local) == ids(got)
    for name in ("selected.jsonl", "_siftkit/selection.parquet"):
        a = (tmp_path / "out-local" / name).read_bytes()
        b = (tmp_path / "out-ray" / name).read_bytes()
        assert a == b, f"{name} differs between the local and the Ray engine"
    assert (tmp_path / "out-ray" / "selected.jsonl").read_text(encoding="utf-8").count("\n") == 400
