"""Ray engine benchmark: its overhead against the local engine on the same cores, and scaling with nodes.

Every run is the public CLI in its own subprocess, on the same pool, with a fresh signal cache:

    siftkit -q select POOL --budget B <plan> --engine E --workers W --cache-dir FRESH --out OUT

Runs, for each plan:

=================  ==========================================================================================
run                what
=================  ==========================================================================================
local              ``--engine local --workers W`` (W = ``--workers``, default 2: this machine's cores)
ray (local Ray)    ``--engine ray --workers W``: siftkit starts its own Ray instance on this machine (Ray
                   start-up is inside the measured time: that is what a user waits for)
ray, N nodes       a ``ray.cluster_utils.Cluster`` already running (head without CPUs + N worker nodes of 1
                   CPU each, all on this machine, 127.0.0.1 only), ``RAY_ADDRESS`` set to it,
                   ``--engine ray --workers N`` (one actor per node's CPU); cluster start-up is not timed
                   (a real cluster is already up)
=================  ==========================================================================================

Plans: ``cheap`` = ``--filter 'tokens_total >= 16' --dedup first --stratify source --by tokens_total``
(token counts + exact hash, no embeddings), and ``length-kmeans`` = ``--preset length-kmeans`` (exact
dedup, static embeddings, faiss k-means, longest per cluster) when faiss is installed.

Measured: wall seconds of the subprocess (imports, read, signals, selection, writing), and the run's own
stage timings from its ``manifest.json`` (``read``, ``signals``, ``total``). Every run's ``selected.jsonl``
and ``_siftkit/selection.parquet`` are compared byte for byte with the local run's (``same`` column). The
load average before/after each run is recorded: on a shared machine the figures move with other load.

Simulated nodes share this machine's cores, so "scaling" here shows the engine's overhead per node, not a
speed-up: N nodes of 1 CPU on a 2-core machine cannot be faster than 2 cores.

The pool is built by ``make_pool_1m.py`` from the real shared pool (in a temporary folder, never in the
repository) unless ``--pool DIR`` is given. Results: a table on stdout and ``benchmarks/results/bench_ray.json``.

Usage::

    .venv/bin/python benchmarks/bench_ray.py --records 20000               # ~10 runs of 10-60 s each
    .venv/bin/python benchmarks/bench_ray.py --records 200000 --nodes 1,2  # the issue's 1.2x target size
    .venv/bin/python benchmarks/bench_ray.py --plans cheap --nodes ''      # local vs local Ray only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOOPBACK = "127.0.0.1"
NODE_STORE = 200 * 2**20     # object store per simulated node
PLANS: dict[str, list[str]] = {
    "cheap": ["--filter", "tokens_total >= 16", "--dedup", "first", "--stratify", "source", "--by", "tokens_total"],
    "length-kmeans": ["--preset", "length-kmeans"],
}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def build_pool(records: int, root: Path) -> Path:
    out = root / f"pool_{records}"
    cmd = [sys.executable, str(HERE / "make_pool_1m.py"), "--records", str(records), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode:
        sys.exit(f"bench_ray: building the pool failed (needs ../shared/data/pool):\n{r.stderr[-2000:]}")
    return out


def run_select(pool: Path, plan: list[str], budget: int, engine: str, workers: int, work: Path, tag: str,
               env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    out, cache = work / f"out-{tag}", work / f"cache-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RAY_ADDRESS", None)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "siftkit.cli", "-q", "select", str(pool), "--budget", str(budget), *plan,
           "--engine", engine, "--workers", str(workers), "--cache-dir", str(cache), "--out", str(out)]
    before = load()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"bench_ray: {tag} failed (exit {r.returncode}):\n{' '.join(cmd)}\n{r.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    t = manifest.get("timings", {})
    shutil.rmtree(cache, ignore_errors=True)
    return {"run": tag, "engine": engine, "workers": workers, "wall_s": round(wall, 2),
            "read_s": t.get("read"), "signals_s": t.get("signals"), "total_s": t.get("total"),
            "load_before": before, "load_after": load(), "out": str(out)}


def same_output(a: str, b: str) -> bool:
    return all((Path(a) / f).read_bytes() == (Path(b) / f).read_bytes()
               for f in ("selected.jsonl", "_siftkit/selection.parquet"))


def start_cluster(nodes: int) -> Any:
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": NODE_STORE, "include_dashboard": False,
        "node_ip_address": LOOPBACK})
    for _ in range(nodes):
        c.add_node(num_cpus=1, object_store_memory=NODE_STORE, node_ip_address=LOOPBACK)
    c.wait_for_nodes()
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--pool", help="an existing pool folder (default: built with make_pool_1m.py in --work)")
    ap.add_argument("--budget", type=int, default=0, help="records to select (default: records / 10)")
    ap.add_argument("--workers", type=int, default=2, help="workers of the local and local-Ray runs")
    ap.add_argument("--nodes", default="1,2,3", help="simulated cluster sizes, comma-separated ('' for none)")
    ap.add_argument("--plans", default="cheap,length-kmeans")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "siftkit-bench-ray"))
    ap.add_argument("--json", default=str(HERE / "results" / "bench_ray.json"))
    args = ap.parse_args()

    # every Ray process this benchmark starts (and the CLI's, which inherit it) listens on 127.0.0.1 only
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pool = Path(args.pool) if args.pool else build_pool(args.records, work)
    budget = args.budget or max(1, args.records // 10)
    nodes = [int(x) for x in args.nodes.split(",") if x.strip()]
    plans = [p for p in args.plans.split(",") if p]
    try:
        import faiss  # noqa: F401
    except ImportError:
        if "length-kmeans" in plans:
            print("# length-kmeans skipped: faiss is not installed")
            plans.remove("length-kmeans")

    rows: list[dict[str, Any]] = []
    for plan in plans:
        argv = PLANS[plan]
        base = run_select(pool, argv, budget, "local", args.workers, work, f"{plan}-local")
        base["plan"] = plan
        rows.append(base)
        ray_local = run_select(pool, argv, budget, "ray", args.workers, work, f"{plan}-ray")
        rows.append({**ray_local, "plan": plan})
        for n in nodes:
            c = start_cluster(n)
            try:
                r = run_select(pool, argv, budget, "ray", n, work, f"{plan}-ray-{n}nodes",
                               {"RAY_ADDRESS": c.address})
            finally:
                c.shutdown()
            rows.append({**r, "plan": plan, "nodes": n})
        for r in rows:
            if r["plan"] == plan:
                r["same_as_local"] = same_output(r["out"], base["out"])
                r["vs_local_wall"] = round(r["wall_s"] / base["wall_s"], 2)
                if base.get("signals_s") and r.get("signals_s") is not None:
                    r["vs_local_signals"] = round(r["signals_s"] / base["signals_s"], 2)

    hdr = ("| plan | run | wall s | signals s | read s | x local (wall) | x local (signals) | same selection "
           "| load before/after |")
    print(f"\n{args.records:,} records, budget {budget:,}, {os.cpu_count()} cores\n")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for r in rows:
        name = f"ray, {r['nodes']} node(s) of 1 CPU" if "nodes" in r else (
            f"ray (local instance, {r['workers']} workers)" if r["engine"] == "ray" else f"local, {r['workers']} workers")
        print(f"| {r['plan']} | {name} | {r['wall_s']:.1f} | {r['signals_s']} | {r['read_s']} | "
              f"{r['vs_local_wall']:.2f} | {r.get('vs_local_signals', '')} | {'yes' if r['same_as_local'] else 'NO'} | "
              f"{r['load_before']}/{r['load_after']} |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"records": args.records, "budget": budget, "cpus": os.cpu_count(),
                               "python": platform.python_version(), "pool": str(pool), "rows": rows}, indent=2))
    print(f"\nwrote {out}")
    if not all(r["same_as_local"] for r in rows):
        sys.exit("bench_ray: a Ray run's selection differs from the local run's")


if __name__ == "__main__":
    main()
