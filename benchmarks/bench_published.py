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
- Reference rule vs siftkit's other mode at a realistic size (``--real-n`` shared-pool records, default
  20,000; ``--skip-real`` to leave out): ZIP ``faithful`` vs ``fast`` (published k's), RDS+ ``reference``
  vs ``balanced`` (4 tasks of 16 real eval examples, and 1 task), facility location ``euclidean-dense`` vs
  ``euclidean`` graph with the auto k (dense run at the full size), SemDeDup ``semdedup`` vs
  ``semdedup-kept``. Embeddings: the offline static model (tokenlearn-static-model, 64-d, whole
  conversation): real embeddings of real records, not MiniLM (too slow on this CPU for 20K records).

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


def eval_targets(per_task: int = 16) -> tuple[list[str], list[str]]:
    """Real target examples: the first ``per_task`` of GSM8K test, MMLU dev, BBH (boolean expressions) and
    IFEval, one task each."""
    import csv

    ev = ROOT.parent / "shared" / "data" / "eval"
    out: list[tuple[str, str]] = []
    with open(ev / "gsm8k_test.jsonl") as fh:
        out += [("gsm8k", json.loads(line)["question"]) for line, _ in zip(fh, range(per_task))]
    mm = sorted((ev / "mmlu" / "dev").glob("*.csv"))
    for f in mm:
        with open(f, newline="") as fh:
            out += [("mmlu", r[0]) for r in csv.reader(fh)]
        if sum(t == "mmlu" for t, _ in out) >= per_task:
            break
    out = [o for o in out if o[0] != "mmlu"] + [o for o in out if o[0] == "mmlu"][:per_task]
    bbh = json.loads((ev / "bbh" / "boolean_expressions.json").read_text())["examples"]
    out += [("bbh", e["input"]) for e in bbh[:per_task]]
    with open(ev / "ifeval_input.jsonl") as fh:
        out += [("ifeval", json.loads(line)["prompt"]) for line, _ in zip(fh, range(per_task))]
    return [t for t, _ in out], [x for _, x in out]


def fidelity_rows(n: int, budget: int, skip: set[str] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """The reference rule vs siftkit's other mode on real records (issue 18), one row each."""
    import pyarrow as pa

    from siftkit.io.pool import read_pool
    from siftkit.registry import make, selector_class
    from siftkit.selectors.base import SelectionContext
    from siftkit.signals.embeddings import EmbeddingSignal
    from siftkit.signals.segments import flatten

    folder = ROOT.parent / "shared" / "data" / "pool"
    if not folder.is_dir():
        print(f"fidelity rows skipped: {folder} absent")
        return []
    table = read_pool([str(folder)], on_error="skip").table
    pick = np.sort(np.random.default_rng(7).choice(len(table), min(n, len(table)), replace=False))
    pool = table.take(pa.array(pick))
    n = len(pool)
    texts = flatten(pool.select(["messages"])).texts("conversation")
    sig = EmbeddingSignal(backend="static", segment="conversation")
    (x, t_emb) = timed(lambda: sig.encode(texts))
    x = np.asarray(x, dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    ctx = SelectionContext(pool=pool, signals=pa.table({"_": pa.nulls(n)}).drop(["_"]), seed=0,
                           vector_loader=lambda spec, rows=None: x if rows is None else x[rows])
    data = f"{n:,} shared-pool records (seed 7), static 64-d conversation embeddings ({t_emb:.0f} s)"
    out: list[dict[str, Any]] = []

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        return round(len(set(a.tolist()) & set(b.tolist())) / max(len(a), 1), 4)

    def step(name: str, **params: Any) -> Any:
        return make(selector_class(name), params, name)

    if "zip" not in skip:
        out += zip_rows(texts, budget, data, overlap)
    if "rds" not in skip:
        out += rds_rows(x, sig, budget, n, data, overlap)
    if "fl" not in skip:
        out += fl_rows(x, ctx, budget, n, data, overlap, step)
    if "semdedup" not in skip:
        out += semdedup_rows(ctx, n, data, step)
    return out


def zip_rows(texts: list[str], budget: int, data: str, overlap: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    n = len(texts)
    enc = [s.encode("utf-8", "surrogatepass") for s in texts]
    zb = min(budget, 1000)
    (fast, _), t_fast = timed(lambda: zip_select(enc, zb, mode="fast"))
    (pub, dp), t_pub = timed(lambda: zip_select(enc, zb, mode="faithful"))
    out.append({"method": "zip faithful (published) vs fast", "n": n, "budget": zb, "k": [10000, 200, 100],
                "overlap": overlap(fast, pub), "faithful_selected": len(pub), "discarded": dp["discarded"],
                "fast_s": round(t_fast, 1), "faithful_s": round(t_pub, 1), "data": data})
    return out


def rds_rows(x: np.ndarray, sig: Any, budget: int, n: int, data: str, overlap: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tasks, ttexts = eval_targets()
    tv = np.asarray(sig.encode(ttexts), dtype=np.float32)
    tv /= np.maximum(np.linalg.norm(tv, axis=1, keepdims=True), 1e-12)
    for label, tk in (("4 tasks", np.asarray(tasks, dtype=object)),
                      ("1 task (gsm8k)", np.asarray(["gsm8k"] * 16, dtype=object))):
        tt = tv if len(tk) == len(tv) else tv[:16]
        bal, ref = rds_select(x, tt, tk, budget), rds_select(x, tt, tk, budget, rule="reference")
        out.append({"method": f"rds rule=reference vs balanced ({label})", "n": n, "budget": budget,
                    "targets": len(tt), "overlap": overlap(bal, ref), "data": data})
    return out


def fl_rows(x: np.ndarray, ctx: Any, budget: int, n: int, data: str, overlap: Any, step: Any) -> list[dict[str, Any]]:
    from siftkit.selectors.facility_location import dense_objective, euclidean_dense_kernel

    out: list[dict[str, Any]] = []
    fb = budget
    (dres, t_dense) = timed(lambda: step("facility-location", kernel="euclidean-dense", dense_limit=n).run(
        ctx, np.arange(n), fb))
    (gres, t_graph) = timed(lambda: step("facility-location", kernel="euclidean").run(ctx, np.arange(n), fb))
    (cres, t_cos) = timed(lambda: step("facility-location").run(ctx, np.arange(n), fb))
    kern = euclidean_dense_kernel(x)
    f_dense, f_graph, f_cos = (dense_objective(kern, r.kept) for r in (dres, gres, cres))
    floor = n * float(np.exp(-2.0 / x.shape[1]))
    del kern
    out.append({"method": "facility location euclidean (graph, auto k) vs euclidean-dense", "n": n,
                "budget": fb, "overlap": overlap(dres.kept, gres.kept), "knn": gres.details.get("knn"),
                "sample_gap_above_floor": gres.details.get("knn_gap"),
                "sample_gap_raw": gres.details.get("knn_gap_raw"), "sample": gres.details.get("knn_sample"),
                "trials": gres.details.get("knn_trials"),
                "full_gap": round((f_dense - f_graph) / f_dense, 7),
                "full_gap_above_floor": round((f_dense - f_graph) / (f_dense - floor), 5),
                "dense_s": round(t_dense, 1), "graph_s": round(t_graph, 1), "data": data})
    out.append({"method": "facility location cosine-knn (k 10) vs euclidean-dense", "n": n, "budget": fb,
                "overlap": overlap(dres.kept, cres.kept), "full_gap": round((f_dense - f_cos) / f_dense, 7),
                "full_gap_above_floor": round((f_dense - f_cos) / (f_dense - floor), 5),
                "cosine_s": round(t_cos, 1), "data": data})
    return out


def semdedup_rows(ctx: Any, n: int, data: str, step: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ref_k = step("semdedup").run(ctx, np.arange(n), None)
    kept_k = step("semdedup-kept").run(ctx, np.arange(n), None)
    a, b = set(ref_k.kept.tolist()), set(kept_k.kept.tolist())
    out.append({"method": "semdedup (reference) vs semdedup-kept", "n": n, "eps": 0.05,
                "semdedup_kept": len(a), "semdedup_kept_rule_kept": len(b),
                "kept_jaccard": round(len(a & b) / max(len(a | b), 1), 4), "reference_subset": a <= b,
                "data": data})
    return out


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
    ap.add_argument("--real-n", type=int, default=20_000, help="shared-pool records for the fidelity rows")
    ap.add_argument("--real-budget", type=int, default=2_000)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--only-real", action="store_true", help="run the fidelity rows only")
    ap.add_argument("--real-skip", default="", help="fidelity rows to leave out: comma list of zip,rds,fl,semdedup")
    args = ap.parse_args()
    progress.set_quiet(True)
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    if not args.skip_real:
        rows += fidelity_rows(args.real_n, args.real_budget, set(filter(None, args.real_skip.split(","))))
        for r in rows:
            print(json.dumps(r), flush=True)
    if args.only_real:
        write(args, rows, "bench_published_fidelity.json")
        return

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
    write(args, rows, "bench_published.json")


def write(args: argparse.Namespace, rows: list[dict[str, Any]], name: str) -> None:
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
