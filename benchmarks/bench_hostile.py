"""Hostile inputs, before and after: run every case of ``tests/hostile_inputs.py`` through ``siftkit read`` (in a
subprocess, strict and ``--on-error skip``) with one or more siftkit source trees, and classify each outcome:

- ``ok``: exit 0 and every record accounted for (records kept + rejected = records the case holds);
- ``clear error``: exit 2/3/4 with a ``siftkit: error:`` line (3 must name the offending file);
- ``traceback``: exit 1 or a Python traceback on stderr;
- ``hang``: still running after ``--timeout`` seconds;
- ``silent loss``: exit 0 but records missing from both the pool and the rejects.

Usage (compare the current tree with an older checkout of the project)::

    git worktree add --detach /tmp/siftkit-old <old commit>
    python benchmarks/bench_hostile.py --src src --src /tmp/siftkit-old/src --out hostile.json

Prints a table per tree and writes JSON with the outcome of every case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import hostile_inputs as H

KINDS = ("ok", "clear error", "traceback", "hang", "silent loss")


def classify(case: H.Case, mode: str, rc: int | None, out: str, err: str) -> str:
    if rc is None:
        return "hang"
    if rc == 1 or "Traceback (most recent call last)" in err:
        return "traceback"
    if rc in (2, 3, 4):
        if "siftkit: error:" not in err:
            return "traceback"
        if rc == 3 and case.names and case.names not in err:
            return "silent loss"     # an error, but it does not say which file
        return "clear error"
    if rc != 0:
        return "traceback"
    try:
        counts = json.loads(out[out.index("{"):])
    except ValueError:
        return "silent loss"
    extra = H.COMPANION_RECORDS if case.companion else 0
    held = None if case.records is None else case.records + extra
    rejected = counts.get("rejected", 0)
    kept = counts.get("records", 0)
    if held is not None and kept + rejected != held:
        return "silent loss"
    if held is None and kept < case.good + extra:
        return "silent loss"
    return "ok"


def run_one(src: str, case: H.Case, inp: Path, mode: str, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "siftkit.cli", "-q", "read", str(inp), *case.args, "--on-error", mode, "--json"]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL, errors="replace", check=False)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = None, "", ""
    kind = classify(case, mode, rc, out, err)
    line = next((ln for ln in err.splitlines() if ln.startswith("siftkit: error:")), err.strip()[-200:])
    return {"case": case.name, "mode": mode, "rc": rc, "outcome": kind, "message": line[:300]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", required=True, help="a siftkit source tree (the folder holding siftkit/)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="hostile_before_after.json")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="siftkit-hostile-"))
    cases = [c for c in H.cases() if not (c.needs == "fifo" and not hasattr(os, "mkfifo"))]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cases = [c for c in cases if c.needs != "nonroot"]
    built = {c.name: H.build(c, root) for c in cases}
    results: dict[str, list[dict]] = {}
    for src in a.src:
        with ThreadPoolExecutor(a.jobs) as ex:
            futs = [ex.submit(run_one, src, c, built[c.name], m, a.timeout) for c in cases for m in ("raise", "skip")]
            results[src] = [f.result() for f in futs]
    print(f"{len(cases)} hostile inputs x 2 modes (raise, skip) through `siftkit read`\n")
    print(f"{'tree':<40}" + "".join(f"{k:>14}" for k in KINDS))
    for src, rows in results.items():
        c = Counter(r["outcome"] for r in rows)
        print(f"{src[-39:]:<40}" + "".join(f"{c.get(k, 0):>14}" for k in KINDS))
    with open(a.out, "w") as fh:
        json.dump({"cases": len(cases), "results": results}, fh, indent=1)
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
