"""Ray progress overhead: ``siftkit.score`` on the Ray engine with the per-batch progress counter on and off.

One local Ray instance (``--cpus``, default 2), runs alternating ``off`` / ``on`` (``--repeat`` pairs), each
with a fresh signal cache, scoring ``--signals`` on the pool (read on the workers; cheap signals computed
while reading, the others in plan passes) with ``--shard-size`` records per shard:

- ``off``: ``engines.ray._progress_counter`` returns ``None`` (no counter actor, no reports, the driver does
  not poll): progress per done record only, as before the counter existed;
- ``on``: the session's counter actor is killed before the run, so an ``on`` run starts afresh (as a CLI run
  does): the driver polls, makes the counter once a call has run ``COUNTER_AFTER_S`` and the workers report.

The log is json with an interval of 0 (every progress update is an event, written to /dev/null): the worst
case for the driver. Wall seconds of each run; the table shows each and the medians. Ray start-up is not
timed. Results: ``benchmarks/results/bench_ray_progress.json``.

Usage::

    .venv/bin/python benchmarks/bench_ray_progress.py --pool /tmp/siftkit-bench-ray/pool_20000
    (a pool from ``make_pool_1m.py --records 20000 --out DIR``)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", required=True, help="a pool folder (make_pool_1m.py --out DIR)")
    ap.add_argument("--signals", default="tokens,exact_hash,text_stats")
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3, help="off/on pairs")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", default=str(HERE / "results" / "bench_ray_progress.json"))
    args = ap.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

    import ray

    import siftkit
    from siftkit import progress
    from siftkit.engines import ray as engine

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _node_ip_address="127.0.0.1")
    make_counter = engine._progress_counter
    signals = args.signals.split(",")
    work = Path(tempfile.mkdtemp(prefix="siftkit-bench-ray-progress-"))
    rows = []
    real_stderr = sys.stderr
    try:
        for i in range(2 * args.repeat):
            mode = "off" if i % 2 == 0 else "on"
            if mode == "off":
                engine._progress_counter = lambda ray: None
            else:
                engine._progress_counter = make_counter
                if engine._COUNTER.get("actor") is not None:
                    ray.kill(engine._COUNTER["actor"])
                engine._COUNTER.clear()
            cache = work / f"cache-{i}"
            load = round(os.getloadavg()[0], 2)
            progress.configure(log_format="json", interval=0.0)
            with open(os.devnull, "w") as devnull:
                sys.stderr = devnull
                t0 = time.perf_counter()
                try:
                    table = siftkit.score(args.pool, signals, cache_dir=str(cache), engine="ray",
                                          shard_size=args.shard_size)
                finally:
                    sys.stderr = real_stderr
                    progress.configure()
            wall = time.perf_counter() - t0
            shutil.rmtree(cache, ignore_errors=True)
            rows.append({"run": i, "mode": mode, "wall_s": round(wall, 2), "records": table.num_rows,
                         "load_before": load, "load_after": round(os.getloadavg()[0], 2)})
            print(f"run {i} {mode}: {wall:.2f} s ({table.num_rows:,} records, load {load})", flush=True)
    finally:
        engine._progress_counter = make_counter
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()
    med = {m: statistics.median(r["wall_s"] for r in rows if r["mode"] == m) for m in ("off", "on")}
    print("\n| mode | runs (wall s) | median |\n|---|---|---|")
    for m in ("off", "on"):
        print(f"| {m} | {', '.join(str(r['wall_s']) for r in rows if r['mode'] == m)} | {med[m]:.2f} |")
    print(f"\non/off median: {med['on'] / med['off']:.3f}")
    out = {"pool": args.pool, "signals": signals, "shard_size": args.shard_size, "cpus": args.cpus,
           "runs": rows, "median_s": med, "ratio_on_off": round(med["on"] / med["off"], 3)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
