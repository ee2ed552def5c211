"""Peak driver memory of ``siftkit select`` with ``--engine local`` vs ``--engine ray`` (issue 15).

With the Ray engine the driver lists the files; the workers read and normalise them into the cache
(``<cache>/_pool/*.arrow``, memory-mapped by the driver), compute the signal plan and write the parts, so
the driver's memory should not grow with the text of the pool. This script measures it: each run is a
fresh Python process that runs the CLI in-process and prints its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the driver alone, not Ray's raylet, GCS or workers), and
the peaks of its anonymous (heap) and file-backed resident memory (``/proc/self/status`` ``RssAnon`` /
``RssFile`` / ``RssShmem``, sampled every 50 ms): the pages of the memory-mapped pool files the driver
touches are file-backed, clean and reclaimable under memory pressure; heap is not, nor is shared memory (the
local reader's ``/dev/shm`` spill files, mapped by the driver, hold the pool's text there). The slope
(bytes per record between the smallest and largest size) is what grows with the pool.

Pools come from ``benchmarks/make_pool_1m.py`` (the real shared pool, copied with markers)::

    .venv/bin/python benchmarks/make_pool_1m.py --records 50000 --out benchmarks/data/pool_50k
    .venv/bin/python benchmarks/make_pool_1m.py --records 200000 --out benchmarks/data/pool_200k
    .venv/bin/python benchmarks/bench_ray_memory.py benchmarks/data/pool_50k benchmarks/data/pool_200k

Each run: ``select POOL -n 1000 --method top --by chars_response --signals ... --engine E`` with a fresh
cache (so everything is read and computed), ``--workers 2`` (local). Results: a table on stdout and
``--json`` (default ``benchmarks/results/ray_memory.json``). The selections of both engines are checked to
be byte-identical (``selected.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

CHILD = r"""
import json, resource, sys, threading, time
t0 = time.perf_counter()
peak = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
def sample():
    while True:
        with open("/proc/self/status") as fh:
            for line in fh:
                k = line.split(":")[0]
                if k in peak:
                    peak[k] = max(peak[k], int(line.split()[1]))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
from siftkit.cli import main
rc = main(sys.argv[1:])
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("BENCH " + json.dumps({"rc": rc, "peak_rss_mb": peak_kb / 1024, "peak_anon_mb": peak["RssAnon"] / 1024,
                             "peak_file_mb": peak["RssFile"] / 1024, "peak_shmem_mb": peak["RssShmem"] / 1024,
                             "seconds": time.perf_counter() - t0}))
"""


def records_of(pool: Path) -> int:
    meta = pool / ".pool_meta.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        return int(m.get("records") or m.get("n") or 0)
    return 0


def run_one(pool: Path, engine: str, signals: str, work: Path) -> dict:
    out, cache = work / f"out-{engine}", work / f"cache-{engine}"
    args = ["--quiet", "select", str(pool), "-n", "1000", "--method", "top", "--by", "chars_response",
            "--signal", "text_stats", "--cache-dir", str(cache), "-o", str(out), "--engine", engine,
            "--workers", "2", "--overwrite"]
    for s in signals.split(","):
        if s and s != "text_stats":
            args += ["--signal", s]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env,
                       check=False)
    line = next((x for x in r.stdout.splitlines() if x.startswith("BENCH ")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"{engine} on {pool} failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
    res = json.loads(line[6:])
    res.update(engine=engine, pool=str(pool), wall=time.perf_counter() - t0,
               selected_bytes=(out / "selected.jsonl").stat().st_size)
    res["selected_sha"] = __import__("hashlib").sha256((out / "selected.jsonl").read_bytes()).hexdigest()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pools", nargs="+", type=Path, help="pool folders (make_pool_1m.py), smallest first")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--signals", default="text_stats,exact_hash,quality,special_tokens")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "ray_memory.json")
    a = ap.parse_args()
    rows = []
    for pool in a.pools:
        n = records_of(pool)
        for engine in a.engines.split(","):
            work = Path(tempfile.mkdtemp(prefix="siftkit-bench-mem-"))
            try:
                res = run_one(pool, engine, a.signals, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            res["records"] = n
            rows.append(res)
            print(f"{pool.name:<14}{n:>9,} {engine:<6} peak driver RSS {res['peak_rss_mb']:8.1f} MB "
                  f"(anonymous {res['peak_anon_mb']:7.1f} MB, file-backed {res['peak_file_mb']:7.1f} MB, "
                  f"shared memory {res['peak_shmem_mb']:7.1f} MB)  "
                  f"{res['seconds']:7.1f} s", flush=True)
        shas = {r["selected_sha"] for r in rows if r["pool"] == str(pool)}
        print(f"  selections identical across engines: {len(shas) == 1}")
    slopes = {}
    for engine in a.engines.split(","):
        rs = sorted((r for r in rows if r["engine"] == engine), key=lambda r: r["records"])
        if len(rs) >= 2 and rs[-1]["records"] > rs[0]["records"]:
            d = rs[-1]["records"] - rs[0]["records"]
            slopes[engine] = {k: (rs[-1][k] - rs[0][k]) * 2**20 / d
                              for k in ("peak_rss_mb", "peak_anon_mb", "peak_file_mb", "peak_shmem_mb")}
            print(f"{engine}: per record {slopes[engine]['peak_rss_mb']:,.0f} bytes of driver peak RSS "
                  f"(anonymous {slopes[engine]['peak_anon_mb']:,.0f}, file-backed "
                  f"{slopes[engine]['peak_file_mb']:,.0f}) ({rs[0]['records']:,} -> {rs[-1]['records']:,})")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"runs": rows, "bytes_per_record": slopes, "signals": a.signals,
                                  "cpus": os.cpu_count()}, indent=2))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
