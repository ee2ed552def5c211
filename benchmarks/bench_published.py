"""Published selectors (ZIP, RDS+, InsTag coverage) vs naive references, side by side, in one run.

    .venv/bin/python benchmarks/bench_published.py                 # defaults below
    .venv/bin/python benchmarks/bench_published.py --zip-n 20000 --n 1000000

- ZIP: recompress (selected + x recompressed) vs fast (primed compressor copy) on the same real texts
  (benchmarks/data/pool_100k from make_pool_1m.py when present, else ../shared/data/pool; synthetic otherwise), same k1/k2/k3:
  time and overlap of the selections; the published rule (mode faithful: k2 - k3 discarded per round)
  vs fast: overlap; then the fast mode alone on a larger pool.
- RDS+ rules: overlap of rule=reference (the released scripts) with rule=balanced (siftkit's default).
- RDS+: chunked per-target top-k + round-robin at --n synthetic 4096-d... (``--dim``) vectors vs a dense
  N x Q matrix with full per-target argsorts on a subsample.
- InsTag coverage: at --n records with synthetic tag lists vs the literal set-based loop on a subsample.

Writes benchmarks/results/bench_published.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from siftkit import progress
from siftkit.selectors.instag import coverage_select
from siftkit.selectors.rds import rds_select
from siftkit.selectors.zip import zip_select


def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def texts(n: int, seed: int) -> tuple[list[bytes], str]:
    for folder in (ROOT / "benchmarks" / "data" / "pool_100k", ROOT.parent / "shared" / "data" / "pool"):
        if folder.is_dir():
            from siftkit.errors import SiftkitError
            from siftkit.io.pool import read_pool
            from siftkit.signals.segments import flatten

            try:
                table = read_pool([str(folder)], on_error="skip").table
            except SiftkitError:
                continue
            rows = np.sort(np.random.default_rng(seed).choice(len(table), min(n, len(table)), replace=False))
            t = flatten(table.select(["messages"]).take(rows)).texts("conversation")
            return [s.encode("utf-8", "surrogatepass") for s in t], str(folder)
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{v}" for v in rng.integers(0, 20000, int(rng.integers(20, 400)))).encode()
            for _ in range(n)], "synthetic"


def ref_coverage(tags: list[list[int]], budget: int) -> list[int]:
    order = sorted([i for i, t in enumerate(tags) if t], key=lambda i: (-len(tags[i]), i))
    picks: list[int] = []
    while order and len(picks) < budget:
        covered: set[int] = set()
        rest = []
        for i in order:
            if len(picks) < budget and not set(tags[i]) <= covered:
                picks.append(i)
                covered |= set(tags[i])
            else:
                rest.append(i)
        order = rest
    return picks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zip-n", type=int, default=5000, help="pool for faithful vs fast ZIP")
    ap.add_argument("--zip-budget", type=int, default=500)
    ap.add_argument("--zip-k", default="1000,200,100", help="k1,k2,k3 for the side-by-side run")
    ap.add_argument("--zip-big-n", type=int, default=50000, help="pool for fast ZIP with published k's")
    ap.add_argument("--zip-big-budget", type=int, default=1000)
    ap.add_argument("--n", type=int, default=1_000_000, help="pool size for RDS+ and InsTag coverage")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--targets", type=int, default=64)
    ap.add_argument("--budget", type=int, default=50_000)
    ap.add_argument("--sub", type=int, default=50_000, help="subsample for the naive references")
    args = ap.parse_args()
    progress.set_quiet(True)
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)

    # ---------------------------------------------------------------- ZIP recompress vs fast
    k1, k2, k3 = (int(v) for v in args.zip_k.split(","))
    data, src = texts(args.zip_n, 0)
    (fast, _), t_fast = timed(lambda: zip_select(data, args.zip_budget, k1, k2, k3, "fast"))
    (faith, _), t_faith = timed(lambda: zip_select(data, args.zip_budget, k1, k2, k3, "recompress"))
    overlap = len(set(fast.tolist()) & set(faith.tolist())) / max(len(fast), 1)
    rows.append({"method": "zip", "n": len(data), "budget": args.zip_budget, "k": [k1, k2, k3], "data": src,
                 "recompress_s": round(t_faith, 2), "fast_s": round(t_fast, 2),
                 "speedup": round(t_faith / t_fast, 1), "overlap": overlap,
                 "same_order": fast.tolist() == faith.tolist()})
    (pub, dp), t_pub = timed(lambda: zip_select(data, args.zip_budget, k1, k2, k3, "faithful"))
    rows.append({"method": "zip faithful (published rule) vs fast", "n": len(data), "budget": args.zip_budget,
                 "k": [k1, k2, k3], "data": src, "faithful_s": round(t_pub, 2), "selected": len(pub),
                 "discarded": dp["discarded"],
                 "overlap": len(set(fast.tolist()) & set(pub.tolist())) / max(len(fast), 1)})
    big, src = texts(args.zip_big_n, 1)
    (_, d), t_big = timed(lambda: zip_select(big, args.zip_big_budget, mode="fast"))
    rows.append({"method": "zip-fast (published k)", "n": len(big), "budget": args.zip_big_budget,
                 "fast_s": round(t_big, 1), "rounds": d["rounds"], "data": src,
                 "per_round_s": round(t_big / d["rounds"], 2)})

    # ---------------------------------------------------------------- RDS+
    def unit(m: int, d: int) -> np.ndarray:
        x = rng.standard_normal((m, d), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    x = unit(args.n, args.dim)
    t = unit(args.targets, args.dim)
    tasks = np.asarray([f"task{i % 4}" for i in range(args.targets)], dtype=object)
    _, t_rds = timed(lambda: rds_select(x, t, tasks, args.budget))
    sub = x[: args.sub]
    sb = max(1, args.budget * args.sub // args.n)
    _, t_rds_sub = timed(lambda: rds_select(sub, t, tasks, sb))

    def naive_rds() -> list[int]:
        # dense N x Q, same float32 product order as siftkit's chunks (sub @ t.T differs by ~1 ulp and can
        # swap two candidates whose similarities differ by 1e-7)
        sims = (t @ sub.T).T
        ranked = np.argsort(-sims, axis=0, kind="stable").T
        taken: set[int] = set()
        out: list[int] = []
        order = list(dict.fromkeys(tasks.tolist()))
        members = {tk: [q for q in range(len(t)) if tasks[q] == tk] for tk in order}
        turn = dict.fromkeys(order, 0)
        ptr = [0] * len(t)
        while len(out) < sb:
            for tk in order:
                if len(out) == sb:
                    break
                q = members[tk][turn[tk] % len(members[tk])]
                turn[tk] += 1
                while int(ranked[q, ptr[q]]) in taken:
                    ptr[q] += 1
                taken.add(int(ranked[q, ptr[q]]))
                out.append(int(ranked[q, ptr[q]]))
        return out

    ref, t_naive = timed(naive_rds)
    same = ref == rds_select(sub, t, tasks, sb).tolist()
    rows.append({"method": "rds", "n": args.n, "dim": args.dim, "targets": args.targets, "budget": args.budget,
                 "siftkit_s": round(t_rds, 2), "sub_n": args.sub, "siftkit_sub_s": round(t_rds_sub, 3),
                 "naive_sub_s": round(t_naive, 3), "same_picks": same})
    for label, tk in (("4 tasks", tasks), ("1 task", np.asarray(["task0"] * len(t), dtype=object))):
        bal, ref_rule = rds_select(x, t, tk, args.budget), rds_select(x, t, tk, args.budget, rule="reference")
        rows.append({"method": f"rds rule=reference vs balanced ({label})", "n": args.n, "budget": args.budget,
                     "overlap": len(set(bal.tolist()) & set(ref_rule.tolist())) / max(len(bal), 1)})

    # ---------------------------------------------------------------- InsTag coverage
    vocab = 6000
    counts = rng.poisson(3, args.n)
    zipf = rng.zipf(1.3, counts.sum()) % vocab
    cuts = np.cumsum(counts)[:-1]
    tags = [[f"t{v}" for v in part] for part in np.split(zipf, cuts)]
    (_, det), t_cov = timed(lambda: coverage_select(tags, args.budget))
    subtags = tags[: args.sub]
    sb2 = max(1, args.budget * args.sub // args.n)
    (got, _), t_cov_sub = timed(lambda: coverage_select(subtags, sb2))
    coded = [[int(s[1:]) for s in ts] for ts in subtags]
    ref2, t_cov_ref = timed(lambda: ref_coverage([list(dict.fromkeys(c)) for c in coded], sb2))
    rows.append({"method": "instag-coverage", "n": args.n, "budget": args.budget, "siftkit_s": round(t_cov, 2),
                 "passes": det["passes"], "sub_n": args.sub, "siftkit_sub_s": round(t_cov_sub, 3),
                 "naive_sub_s": round(t_cov_ref, 3), "same_picks": got.tolist() == ref2})

    for r in rows:
        print(json.dumps(r))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_published.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
