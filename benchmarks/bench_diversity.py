"""Diversity and dedup at scale: siftkit vs naive numpy, side by side, in one run.

    .venv/bin/python benchmarks/bench_diversity.py               # 1M x 384 float16, 1M records
    .venv/bin/python benchmarks/bench_diversity.py --n 100000    # smaller
    .venv/bin/python benchmarks/bench_diversity.py --memory --n 200000   # whole float32 copy vs streamed

Every operation runs at full scale with siftkit; the naive numpy implementation runs on a subsample
(naive versions do not finish at 1M) together with siftkit on the same subsample, and the table reports the
ratio. Embeddings are synthetic (a mixture of 2,000 Gaussian clusters on the unit sphere, float16, with
near-duplicates); texts for MinHash and the embedding throughput come from ../shared/data when present
(real pool records, expanded to --n with word edits), else synthetic. Writes
benchmarks/results/bench_diversity.json. Peak RSS is the whole benchmark process.

``--memory`` instead runs kmeans, repr-filter, k-center, semdedup, diverseevol, rds, facility-location,
Cherry's brief-experience clustering and decontaminate's embedding match (MEMORY_RUNS; ``--only`` /
``--skip`` choose; facility-location-flat, the exact kNN graph, only when asked: run it with a smaller
--n) twice each on one --n x --dim float16 .npy memory-map (the signal cache's form), each run in its own
subprocess: once with the whole float32 copy (SIFTKIT_VECTOR_MEMORY unset: 4 GiB fits) and once streamed
(SIFTKIT_VECTOR_MEMORY=0). Per run: wall and
CPU seconds, peak RSS over the process's RSS just before the selector ran (includes the memory-map's
file pages the run touches), the numpy heap peak (tracemalloc), how many rows the streamed path converted
(total and the largest single block) and whether both runs picked the same rows. Writes
benchmarks/results/bench_diversity_memory.json (``--tag T``: bench_diversity_memory-T.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "pool"
sys.path.insert(0, str(ROOT / "src"))

from siftkit import progress
from siftkit.selectors.base import SelectionContext

MSG = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# ------------------------------------------------------------------------------------------------ data

def synthetic_embeddings(n: int, d: int, seed: int = 0, clusters: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, d), dtype=np.float16)
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        lab = rng.integers(0, clusters, size=m)
        x = centers[lab] + rng.normal(scale=rng.uniform(0.02, 0.08, size=(m, 1)), size=(m, d)).astype(np.float32)
        dup = rng.random(m) < 0.05            # 5% near-copies of the previous row
        x[1:][dup[1:]] = x[:-1][dup[1:]] + 0.001 * rng.normal(size=(int(dup[1:].sum()), d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:s + m] = x
    return out


def base_texts(limit: int = 200_000) -> tuple[list[str], str]:
    if SHARED.is_dir():
        from siftkit.io.pool import read_pool
        from siftkit.signals.segments import flatten

        parts = [SHARED / p for p in ("alpaca_en", "t0_50k", "gpteacher", "gsm8k_train.jsonl", "chatdoctor_5k.json",
                                      "codealpaca_2k.json", "lima_train.jsonl", "sharegpt_zh_1k.jsonl")]
        pool = read_pool([str(p) for p in parts if p.exists()], on_error="skip")
        t = pool.table.slice(0, limit)
        return flatten(t).texts("conversation"), f"real pool ({pool.table.num_rows:,} records)"
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(20000)]
    return [" ".join(rng.choice(words, size=rng.integers(20, 300))) for _ in range(50_000)], "synthetic"


def expand_texts(texts: list[str], n: int, seed: int = 2) -> list[str]:
    """n records: the base texts, then copies with a few random word edits (near-duplicates)."""
    rng = np.random.default_rng(seed)
    out = list(texts[:n])
    src = rng.integers(0, len(texts), size=max(0, n - len(out)))
    for i in src.tolist():
        w = texts[i].split()
        if w:
            for p in rng.integers(0, len(w), size=min(3, len(w))).tolist():
                w[p] = "edit"
        out.append(" ".join(w))
    return out


def ctx_for(vectors: np.ndarray, texts: list[str] | None = None, columns: dict[str, Any] | None = None) -> SelectionContext:
    n = len(vectors) if texts is None else len(texts)
    if texts is None:
        pool = pa.table({"id": pa.array(np.arange(n).astype(str))})
    else:
        msgs = pa.array([[{"role": "user", "content": t}, {"role": "assistant", "content": ""}] for t in texts],
                        type=MSG)
        pool = pa.table({"id": pa.array(np.arange(n).astype(str)), "messages": msgs})
    sig = pa.table({k: pa.array(v) for k, v in (columns or {}).items()}) if columns else pa.table({})
    return SelectionContext(pool=pool, signals=sig, seed=0, vector_loader=lambda spec: vectors)


# ------------------------------------------------------------------------------------------------ naive baselines

def naive_kmeans_balanced(x: np.ndarray, k: int, budget: int, score: np.ndarray, iters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = x.astype(np.float32)
    c = x[rng.choice(len(x), k, replace=False)]
    for _ in range(iters):
        lab = np.argmax(x @ c.T, axis=1)
        for j in range(k):
            m = lab == j
            if m.any():
                c[j] = x[m].mean(axis=0)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
    lab = np.argmax(x @ c.T, axis=1)
    out = []
    for j in range(k):
        m = np.flatnonzero(lab == j)
        q = round(budget * len(m) / len(x))
        out += m[np.argsort(-score[m])][:q].tolist()
    return np.asarray(out)


def naive_repr_filter(x: np.ndarray, order: np.ndarray, thr: float, budget: int) -> list[int]:
    kept = np.empty((budget, x.shape[1]), dtype=np.float32)
    idx: list[int] = []
    for i in order.tolist():
        v = x[i].astype(np.float32)
        if idx and float((kept[:len(idx)] @ v).max()) > thr:
            continue
        kept[len(idx)] = v
        idx.append(i)
        if len(idx) == budget:
            break
    return idx


def naive_k_center(x: np.ndarray, budget: int) -> list[int]:
    """One length-N distance vector, every point updated at every pick. Same float32 distance formula as
    siftkit (|x|^2 + |c|^2 - 2 x.c): with np.linalg.norm(x - c) instead, float32 rounding flips near-ties
    among 20K distances after ~1,000 picks, and the two walks diverge from there."""
    x = x.astype(np.float32)
    sq = np.einsum("ij,ij->i", x, x)

    def dist(j: int) -> np.ndarray:
        return np.sqrt(np.maximum(sq + sq[j] - 2.0 * (x @ x[j:j + 1].T)[:, 0], 0.0))

    dmin = dist(0)
    dmin[0] = -1
    picks = [0]
    while len(picks) < budget:
        j = int(np.argmax(dmin))
        picks.append(j)
        dmin = np.minimum(dmin, dist(j))
        dmin[picks] = -1
    return picks


def naive_minhash_dedup(texts: list[str], num_perm: int = 128, n: int = 5, bands: int = 14, rows: int = 9) -> int:
    """Per-record Python shingling + numpy MinHash, dict-of-buckets LSH (the datasketch pattern)."""
    import xxhash

    rng = np.random.default_rng(0)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    sigs = []
    for t in texts:
        w = " ".join(t.lower().split()).split()
        sh = {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))} if w else set()
        if not sh:
            sigs.append(None)
            continue
        h = np.fromiter((xxhash.xxh64_intdigest(s.encode()) >> 32 for s in sh), dtype=np.uint64)
        with np.errstate(over="ignore"):
            sigs.append(((h[:, None] * a + b) >> np.uint64(32)).min(axis=0))
    buckets: dict[tuple, int] = {}
    dup = 0
    for i, s in enumerate(sigs):
        if s is None:
            continue
        hit = False
        for band in range(bands):
            key = (band, s[band * rows:(band + 1) * rows].tobytes())
            if key in buckets:
                hit = True
            else:
                buckets[key] = i
        dup += hit
    return dup


# ------------------------------------------------------------------------------------------------ --memory

MEMORY_RUNS: dict[str, tuple[str, dict[str, Any], int | None]] = {
    # k = 100 keeps the k-means training sample (256 x k rows) below N, so the whole copy is what differs
    "kmeans": ("kmeans", {"k": 100, "by": "tokens_total"}, 10_000),
    "repr-filter": ("repr-filter", {"by": "tokens_total", "threshold": 0.9, "fill": False}, 10_000),
    "k-center": ("k-center", {}, 1_000),
    # the defaults: k = N / 1,000 clusters, eps 0.05, farthest-from-centroid first
    "semdedup": ("semdedup", {}, None),
    # 1,000 random, then one round of k-center to 2,000
    "diverseevol": ("diverseevol", {"initial_size": 1000, "round_size": 1000}, 2_000),
    # 64 synthetic targets (4 tasks of 16, near pool rows) in place of encoded target files
    "rds": ("rds", {"targets": "synthetic", "embedding": "static"}, 10_000),
    # the defaults: 10 neighbours; above exact_limit (100K) an IVF index
    "facility-location": ("facility-location", {}, 10_000),
    # the exact (flat index) kNN graph at any N: N^2 x d work, run it with a smaller --n
    "facility-location-flat": ("facility-location", {"exact_limit": 10**9}, 10_000),
    # Cherry's brief-experience clustering (siftkit.derive.cherry.prompt_clusters): 100 clusters over
    # the 95% of rows with a prompt perplexity
    "cherry-clusters": ("cherry", {"clusters": 100}, None),
    # decontaminate's embedding match against 2,000 eval items (selectors.decontaminate.nearest_items);
    # "whole" is the one-copy computation it replaced (kept here as the reference)
    "decontaminate-embedding": ("decontaminate", {"items": 2000}, None),
}
DEFAULT_SKIP = ("facility-location-flat",)


def run_memory_kind(name: str, v: np.ndarray, ctx: SelectionContext) -> np.ndarray:
    """One --memory run's work; returns what it picked (positions, labels or nearest items)."""
    from siftkit.registry import make, selector_class
    from siftkit.signals import vectors as vec

    kind, params, budget = MEMORY_RUNS[name]
    n = len(v)
    if kind == "cherry":
        from siftkit.derive.cherry import prompt_clusters

        rows = np.flatnonzero(np.random.default_rng(3).random(n) < 0.95)
        return prompt_clusters(v, rows, params["clusters"], 0)
    if kind == "decontaminate":
        from siftkit.selectors.decontaminate import nearest_items

        ev = np.asarray(v[np.random.default_rng(4).choice(n, params["items"], replace=False)], np.float32)
        ev /= np.maximum(np.linalg.norm(ev, axis=1, keepdims=True), 1e-12)
        cand = np.arange(n)
        if os.environ.get(vec.VECTOR_MEMORY_ENV) == "0":
            best, arg = nearest_items(v, cand, ev)
        else:                     # the computation nearest_items replaced: one float32 copy of the candidates
            pool = np.asarray(v[cand], dtype=np.float32)
            pool = pool / np.maximum(np.linalg.norm(pool, axis=1, keepdims=True), 1e-12)
            best, arg = np.full(n, -1.0), np.full(n, -1, dtype=np.int64)
            for s in range(0, n, 8192):
                sims = pool[s:s + 8192] @ ev.T
                arg[s:s + 8192] = sims.argmax(axis=1)
                best[s:s + 8192] = sims[np.arange(len(sims)), arg[s:s + 8192]]
        return np.concatenate([arg, best.view(np.int64)])
    selector = make(selector_class(kind), params, kind)
    if kind == "rds":
        rng = np.random.default_rng(5)
        t = np.asarray(v[rng.choice(n, 64, replace=False)], np.float32) + 0.02 * rng.normal(size=(64, v.shape[1]))
        t = vec.rows_f32(t, np.arange(64), normalize=True)
        tasks = np.asarray([f"task{i // 16}" for i in range(64)], dtype=object)
        selector.target_vectors = lambda: (t, tasks)   # type: ignore[method-assign]
    return selector.run(ctx, np.arange(n), budget).kept


def proc_status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak of this process image; unlike ru_maxrss it does not inherit the
    parent's peak across fork + exec) from /proc/self/status, in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(name: str, path: str) -> None:
    """One selector run on the memory-map at ``path``; prints one JSON line."""
    from siftkit.signals import vectors as vec

    progress.set_quiet(True)
    v = np.load(path, mmap_mode="r")
    n = len(v)
    length = np.random.default_rng(0).integers(1, 4000, size=n).astype(np.float64)
    ctx = ctx_for(v, columns={"tokens_total": length})
    stats = {"calls": 0, "rows": 0, "largest": 0}
    get = vec.RowsF32.__getitem__

    def counting(self: Any, key: Any) -> np.ndarray:
        out = get(self, key)
        stats["calls"] += 1
        stats["rows"] += len(out) if out.ndim == 2 else 1
        stats["largest"] = max(stats["largest"], len(out) if out.ndim == 2 else 1)
        return out

    vec.RowsF32.__getitem__ = counting  # type: ignore[method-assign]
    base = proc_status_mb("VmRSS")
    tracemalloc.start()
    c0, t0 = time.process_time(), time.perf_counter()
    kept = np.asarray(run_memory_kind(name, v, ctx))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    heap = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = proc_status_mb("VmHWM")
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_before_mb": base, "rss_peak_mb": peak,
                      "rss_over_mb": peak - base, "numpy_peak_mb": heap / 2**20,
                      "rows_converted": stats["rows"], "largest_block_rows": stats["largest"],
                      "view_calls": stats["calls"], "kept": len(kept),
                      "kept_sha256": hashlib.sha256(kept.astype(np.int64).tobytes()).hexdigest()}))


def memory_main(args: argparse.Namespace) -> None:
    n, d = args.n, args.dim
    threads = str(args.threads)
    out_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="siftkit-bench-mem-") as tmp:
        path = os.path.join(tmp, "vectors.npy")
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
        mm[:] = synthetic_embeddings(n, d)
        mm.flush()
        del mm
        print(f"# {n:,} x {d} float16 memory-map ({n * d * 2 / 2**20:,.0f} MiB); whole float32 copy "
              f"{n * d * 4 / 2**20:,.0f} MiB; {threads} thread(s) per run", flush=True)
        skip = set(DEFAULT_SKIP) | set(filter(None, args.skip.split(",")))
        names = args.only.split(",") if args.only else [r for r in MEMORY_RUNS if r not in skip]
        for name in names:
            runs: dict[str, dict[str, Any]] = {}
            for mode in ("whole", "streamed"):
                env = {k: v for k, v in os.environ.items() if k != "SIFTKIT_VECTOR_MEMORY"}
                env.update(OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
                if mode == "streamed":
                    env["SIFTKIT_VECTOR_MEMORY"] = "0"
                load0 = os.getloadavg()[0]
                p = subprocess.run([sys.executable, __file__, "--memory-child", name, path], env=env,
                                   capture_output=True, text=True, check=True)
                r = json.loads(p.stdout.strip().splitlines()[-1])
                r.update(selector=name, path=mode, load_before=round(load0, 1))
                runs[mode] = r
                print(json.dumps(r), flush=True)
            same = runs["whole"]["kept_sha256"] == runs["streamed"]["kept_sha256"]
            for r in runs.values():
                r["same_picks"] = same
                r["cpu_x_whole"] = r["cpu_s"] / runs["whole"]["cpu_s"]
                out_rows.append(r)
    def blocks(r: dict[str, Any], key: str) -> str:
        if r["path"] == "whole":
            return f"{n:,}"
        return f"{r[key]:,}" if r["view_calls"] else "(own blocks)"   # decontaminate: 8,192-row blocks

    print()
    hdr = ("| selector | path | wall s | CPU s | CPU x whole | peak RSS over start, MiB | numpy heap peak, MiB | "
           "rows converted | largest block | same picks |")
    print(hdr)
    print("|" + "|".join("---" for _ in hdr.split("|")[1:-1]) + "|")
    for r in out_rows:
        print(f"| {r['selector']} | {r['path']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['cpu_x_whole']:.2f} | "
              f"{r['rss_over_mb']:,.0f} | {r['numpy_peak_mb']:,.0f} | "
              f"{blocks(r, 'rows_converted')} | {blocks(r, 'largest_block_rows')} | {r['same_picks']} |")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_diversity_memory{'-' + args.tag if args.tag else ''}.json").write_text(json.dumps(
        {"n": n, "dim": d, "threads": args.threads, "cpus": os.cpu_count(), "runs": MEMORY_RUNS,
         "rows": out_rows}, indent=2, default=str))


# ------------------------------------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="pool size (embeddings and MinHash records)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--sub", type=int, default=20_000, help="subsample size for the naive comparisons")
    ap.add_argument("--skip", default="", help="comma list of: kmeans,repr,kcenter,minhash,static,minilm "
                                                "(with --memory: names in MEMORY_RUNS; always skipped "
                                                "unless in --only: " + ",".join(DEFAULT_SKIP) + ")")
    ap.add_argument("--only", default="", help="--memory: comma list of MEMORY_RUNS names to run")
    ap.add_argument("--tag", default="", help="--memory: write bench_diversity_memory-TAG.json")
    ap.add_argument("--memory", action="store_true", help="whole float32 copy vs streamed, per selector")
    ap.add_argument("--threads", type=int, default=1, help="--memory: BLAS/OpenMP threads per run")
    ap.add_argument("--memory-child", nargs=2, metavar=("SELECTOR", "NPY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    if args.memory:
        memory_main(args)
        return
    skip = set(filter(None, args.skip.split(",")))
    progress.set_quiet(True)
    from siftkit.registry import make, selector_class

    def sel(name: str, **p: Any) -> Any:
        return make(selector_class(name), p, name)

    rows: list[dict[str, Any]] = []

    def row(op: str, scale: str, ours: float, naive_sub: float | None, ours_sub: float | None, target: str,
            ok: bool | None, note: str = "") -> None:
        r = {"operation": op, "scale": scale, "siftkit_s": round(ours, 2),
             "naive_sub_s": None if naive_sub is None else round(naive_sub, 2),
             "siftkit_sub_s": None if ours_sub is None else round(ours_sub, 3),
             "speedup_on_sub": None if not naive_sub or not ours_sub else round(naive_sub / ours_sub, 1),
             "target": target, "meets_target": ok, "note": note, "peak_rss_gb": round(rss_gb(), 2)}
        rows.append(r)
        print(json.dumps(r), flush=True)

    n, d, sub = args.n, args.dim, args.sub
    t_gen, x = timed(lambda: synthetic_embeddings(n, d))
    print(f"# generated {n:,} x {d} float16 embeddings in {t_gen:.1f}s", flush=True)
    rng = np.random.default_rng(0)
    length = rng.integers(1, 4000, size=n).astype(np.float64)
    ctx = ctx_for(x, columns={"tokens_total": length})
    xs = x[:sub]
    ctx_sub = ctx_for(xs, columns={"tokens_total": length[:sub]})
    budget = min(50_000, n // 20)
    sub_budget = max(10, sub // 20)

    if "kmeans" not in skip:
        t, res = timed(lambda: sel("kmeans", k=1000, by="tokens_total").run(ctx, np.arange(n), budget))
        assert len(res.kept) == budget
        ts, _ = timed(lambda: sel("kmeans", k=100, by="tokens_total").run(ctx_sub, np.arange(sub), sub_budget))
        tn, _ = timed(lambda: naive_kmeans_balanced(xs, 100, sub_budget, length[:sub]))
        row("k-means 1,000 clusters + balanced selection", f"{n:,} -> {budget:,}", t, tn, ts, "< 180 s", t < 180,
            f"subsample: {sub:,} points, k=100, 20 iterations")

    if "repr" not in skip:
        t, res = timed(lambda: sel("repr-filter", by="tokens_total", threshold=0.9, fill=False).run(
            ctx, np.arange(n), budget))
        note = f"kept {len(res.kept):,}, rejected {res.details['rejected_too_similar']:,} as too similar"
        order = np.argsort(-length[:sub], kind="stable")
        xsn = xs.astype(np.float32)
        ts, r1 = timed(lambda: sel("repr-filter", by="tokens_total", threshold=0.9, fill=False).run(
            ctx_sub, np.arange(sub), sub_budget * 4))
        tn, r2 = timed(lambda: naive_repr_filter(xsn / np.linalg.norm(xsn, axis=1, keepdims=True), order, 0.9,
                                                 sub_budget * 4))
        same = r1.kept.tolist() == r2
        row("repr-filter, threshold 0.9", f"{n:,} -> {len(res.kept):,}", t, tn, ts, "< 300 s", t < 300,
            note + f"; subsample to {sub_budget * 4:,}: identical to naive = {same}")

    if "kcenter" not in skip:
        kc_budget = min(10_000, n // 100)
        t, res = timed(lambda: sel("k-center").run(ctx, np.arange(n), kc_budget))
        from siftkit.selectors.kcenter import k_center_greedy
        from siftkit.signals.vectors import rows_f32

        xk = rows_f32(xs, np.arange(sub), normalize=True)
        ts, p1 = timed(lambda: k_center_greedy(xk, sub_budget * 2, first=0))
        tn, p2 = timed(lambda: naive_k_center(xk, sub_budget * 2))
        row("k-center greedy", f"{n:,} -> {kc_budget:,}", t, tn, ts, "< 600 s", t < 600,
            f"subsample {sub:,} -> {sub_budget * 2:,}: identical to naive = {p1.tolist() == p2}")

    texts: list[str] = []
    if "minhash" not in skip or "static" not in skip or "minilm" not in skip:
        t_read, (base, origin) = timed(base_texts)
        texts = expand_texts(base, n)
        print(f"# texts: {origin}, expanded to {len(texts):,} in {t_read:.1f}s", flush=True)

    if "minhash" not in skip:
        tctx = ctx_for(np.zeros((0, 1)), texts)
        t, res = timed(lambda: sel("minhash-dedup", segment="query", threshold=0.8).run(tctx, np.arange(n), None))
        ts, r1 = timed(lambda: sel("minhash-dedup", segment="query", threshold=0.8, verify="none", bands=14,
                                   rows=9).run(ctx_for(np.zeros((0, 1)), texts[:sub]), np.arange(sub), None))
        tn, d2 = timed(lambda: naive_minhash_dedup(texts[:sub]))
        row("MinHash + LSH near-dup (128 perms, 5-gram words, J >= 0.8)", f"{n:,} records", t, tn, ts, "< 600 s",
            t < 600, f"dropped {res.dropped['near_duplicate']:,}; subsample dups: siftkit "
                     f"{r1.dropped['near_duplicate']:,} vs naive {d2:,}")
        del tctx

    if "static" not in skip:
        from siftkit.signals.embeddings import EmbeddingSignal

        m = min(len(texts), 200_000)
        sig = EmbeddingSignal(backend="static", segment="conversation")
        sig.setup()
        t, _ = timed(lambda: sig.encode(texts[:m]))
        try:
            import static_model

            ms = min(m, sub)
            tn, _ = timed(lambda: static_model.get_embeddings(texts[:ms]))
            ts, _ = timed(lambda: sig.encode(texts[:ms]))
        except ImportError:
            tn = ts = None
        row("static embeddings (tokenlearn-static-model, 64-d)", f"{m:,} records", t, tn, ts,
            ">= 10,000 rec/s", m / t >= 10_000, f"{m / t:,.0f} records/s; naive = the package's own encoder")

    if "minilm" not in skip:
        try:
            from siftkit.signals.embeddings import EmbeddingSignal

            sig = EmbeddingSignal(backend="sentence-transformers", segment="conversation", device="cpu",
                                  max_length=256)
            sig.setup()
            m = 2000
            t, _ = timed(lambda: sig.encode(texts[:m]))
            row("MiniLM-L6 embeddings (CPU, max 256 tokens)", f"{m:,} records", t, None, None, "reported", None,
                f"{m / t:,.0f} records/s")
        except ImportError as e:
            print(f"# MiniLM skipped: {e}")

    print()
    hdr = f"| {'operation':<58} | {'scale':<22} | siftkit s | naive (sub) s | siftkit (sub) s | ratio | target | ok |"
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['operation']:<58} | {r['scale']:<22} | {r['siftkit_s']:>9} | {r['naive_sub_s']!s:>13} | "
              f"{r['siftkit_sub_s']!s:>15} | {r['speedup_on_sub']!s:>5} | {r['target']} | {r['meets_target']} |")
    print(f"\npeak RSS (whole process): {rss_gb():.2f} GB (target < 8 GB)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_diversity.json").write_text(json.dumps(
        {"n": n, "dim": d, "subsample": sub, "cpus": os.cpu_count(), "rows": rows, "peak_rss_gb": rss_gb()},
        indent=2))


if __name__ == "__main__":
    main()
