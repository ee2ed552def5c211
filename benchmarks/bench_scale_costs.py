"""Per-record costs of each step of a selection, measured here, for planning runs at 100M records.

One process, one step at a time, on one thread (faiss and torch are set to one thread): each row gives the
CPU seconds per record (user + sys of this process, all its threads: ``time.process_time``), the wall
seconds, and the bytes per record that the step's result holds (what has to stay in memory, or in the
cache, for every record). ``docs/scale.md`` extrapolates these figures to 100M records.

Steps and what is called (siftkit's own code, the same a ``siftkit select`` run uses):

======================  ================================================================================
step                    call
======================  ================================================================================
read + normalise        ``siftkit.read(pool, workers=1)`` on JSON Lines in their original formats
                        (``make_pool_1m.py`` from the real shared pool); bytes = the Arrow pool table
                        with and without the ``original`` column
token length            ``tokens`` signal (default offline XLM-R Unigram tokenizer), ``compute_shard``
                        on the whole pool, tokenizer set-up timed apart
exact hash              ``exact_hash`` signal, as above
MinHash + LSH           ``minhash-dedup`` selector (128 permutations, word 5-grams, J >= 0.8) over the pool
static embeddings       ``EmbeddingSignal(backend="static")`` (tokenlearn static model, 64-d)
MiniLM embeddings       ``EmbeddingSignal(backend="sentence-transformers")`` (all-MiniLM-L6-v2, 384-d, CPU,
                        max 256 tokens) on ``--minilm`` records, when the offline model is installed
k-means (driver)        ``kmeans_labels`` (faiss, spherical, k, 20 iterations) on ``--vectors`` synthetic
                        384-d float16 unit vectors (``bench_diversity.synthetic_embeddings``): fit on all
                        points, then fit on a sample of ``--sample-per-centroid`` x k and assign all; the
                        faiss assign (nearest centroid) is timed alone too
kmeans selector         ``kmeans`` selector (k, longest per cluster) to ``--budget`` records, as run by
                        a pipeline (float32 copy of the rows, fit, assign, balanced pick)
repr filter (DEITA)     ``repr-filter`` selector (threshold 0.9, by length) to ``--budget`` records
k-center                ``k-center`` selector to ``--kcenter-budget`` centres
======================  ================================================================================

Usage::

    .venv/bin/python benchmarks/bench_scale_costs.py                      # 20K records, 100K vectors
    .venv/bin/python benchmarks/bench_scale_costs.py --records 200000 --vectors 1000000
    .venv/bin/python benchmarks/bench_scale_costs.py --parts vectors   # the driver steps only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_diversity import ctx_for, synthetic_embeddings

from siftkit import progress

ROWS: list[dict[str, Any]] = []


def peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def measure(step: str, n: int, fn: Any, bytes_per_record: float | None = None, note: str = "") -> Any:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    r = {"step": step, "records": n, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
         "cpu_us_per_record": round(cpu / n * 1e6, 2), "records_per_cpu_s": round(n / cpu) if cpu else None,
         "bytes_per_record": None if bytes_per_record is None else round(bytes_per_record, 1),
         "note": note, "peak_rss_gb": peak_rss_gb(), "load": round(os.getloadavg()[0], 2)}
    ROWS.append(r)
    print(json.dumps(r), flush=True)
    return out


def one_thread() -> None:
    """faiss (OpenMP) and torch on one thread: CPU seconds are then one core's, without spin-waiting."""
    import faiss

    faiss.omp_set_num_threads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def build_pool(records: int, work: Path) -> Path:
    out = work / f"pool_{records}"
    r = subprocess.run([sys.executable, str(HERE / "make_pool_1m.py"), "--records", str(records), "--out", str(out)],
                       capture_output=True, text=True, check=False)
    if r.returncode:
        sys.exit(f"bench_scale_costs: building the pool failed (needs ../shared/data/pool):\n{r.stderr[-2000:]}")
    return out


def table_bytes(t: pa.Table) -> int:
    return sum(c.nbytes for c in t.columns)


def result_bytes(values: dict[str, Any]) -> int:
    return sum(v.nbytes for v in values.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20_000, help="real pool records (read, signals, MinHash)")
    ap.add_argument("--pool", help="an existing pool folder (default: make_pool_1m.py in a temporary folder)")
    ap.add_argument("--vectors", type=int, default=100_000, help="synthetic 384-d vectors for the driver steps")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--sample-per-centroid", type=int, default=32)
    ap.add_argument("--budget", type=int, default=10_000, help="repr-filter budget")
    ap.add_argument("--kcenter-budget", type=int, default=1000)
    ap.add_argument("--minilm", type=int, default=500, help="records for MiniLM embeddings (0 to skip)")
    ap.add_argument("--parts", default="records,vectors",
                    help="records (read, signals, MinHash, embeddings) and/or vectors (the driver steps)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "siftkit-bench-scale"))
    ap.add_argument("--json", default=str(HERE / "results" / "bench_scale_costs.json"))
    args = ap.parse_args()
    progress.set_quiet(True)
    one_thread()

    parts = set(args.parts.split(","))
    if "records" in parts:
        records_steps(args)
    if "vectors" in parts:
        vector_steps(args)
    print("\n| step | records | CPU us/record | records per CPU-s | bytes/record | wall s | note |")
    print("|---|---|---|---|---|---|---|")
    for r in ROWS:
        print(f"| {r['step']} | {r['records']:,} | {r['cpu_us_per_record']:,} | {r['records_per_cpu_s'] or ''} | "
              f"{'' if r['bytes_per_record'] is None else r['bytes_per_record']} | {r['wall_s']} | {r['note']} |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "rows": ROWS}, indent=2))
    print(f"\nwrote {out}; peak RSS {peak_rss_gb()} GiB")


def records_steps(args: argparse.Namespace) -> None:
    import siftkit
    from siftkit.engines.local import compute_shard
    from siftkit.registry import make, selector_class
    from siftkit.selectors.base import SelectionContext
    from siftkit.signals.compute import build_signal, make_shards
    from siftkit.signals.embeddings import EmbeddingSignal
    from siftkit.signals.segments import flatten

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pool_dir = Path(args.pool) if args.pool else build_pool(args.records, work)

    pool = measure("read + normalise (JSONL, 1 worker)", args.records,
                   lambda: siftkit.read(str(pool_dir), workers=1), None)
    t = pool.table
    n = t.num_rows
    ROWS[-1]["records"] = n
    ROWS[-1]["bytes_per_record"] = round(table_bytes(t) / n, 1)
    no_orig = t.select([c for c in t.column_names if c != "original"])
    ROWS[-1]["note"] = (f"Arrow pool table; without the 'original' column "
                        f"{table_bytes(no_orig) / n:,.0f} B/record, messages column "
                        f"{t.column('messages').nbytes / n:,.0f} B/record, id + source (what selection keeps) "
                        f"{(t.column('id').nbytes + t.column('source').nbytes) / n:,.0f} B/record")
    shard = make_shards(t, np.arange(n), n)[0]

    for name in ("tokens", "exact_hash"):
        sig = build_signal(name)
        measure(f"{name} signal: set-up (once per worker)", 1, sig.setup, None, "tokenizer / hasher load")
        vals = measure(f"{name} signal", n, lambda sig=sig: compute_shard(sig, shard))
        ROWS[-1]["bytes_per_record"] = round(result_bytes(vals) / n, 1)
        ROWS[-1]["note"] = "columns " + ", ".join(f"{k} {np.asarray(v).dtype}" for k, v in vals.items())

    ctx = SelectionContext(pool=t, signals=pa.table({}), seed=0)
    mh = make(selector_class("minhash-dedup"), {"threshold": 0.8}, "minhash-dedup")
    res = measure("MinHash signatures + LSH + verify (128 perms, word 5-grams)", n,
                  lambda: mh.run(ctx, np.arange(n), None), 128 * 4)
    ROWS[-1]["note"] = (f"uint32 signature per record (128 x 4 B) held for the LSH; dropped "
                        f"{sum(res.dropped.values()):,} near duplicates")

    texts = flatten(t).texts("conversation")
    st = EmbeddingSignal(backend="static", segment="conversation")
    st.setup()
    v = measure("static embeddings (64-d)", n, lambda: st.encode(texts))
    ROWS[-1]["bytes_per_record"] = v.shape[1] * v.dtype.itemsize
    ROWS[-1]["note"] = f"{v.shape[1]} x {v.dtype}"
    if args.minilm:
        try:
            ml = EmbeddingSignal(backend="sentence-transformers", segment="conversation", device="cpu",
                                 max_length=256)
            measure("MiniLM-L6 set-up (once per worker)", 1, ml.setup)
            m = min(args.minilm, n)
            v = measure("MiniLM-L6 embeddings (384-d, CPU, max 256 tokens)", m, lambda: ml.encode(texts[:m]))
            ROWS[-1]["bytes_per_record"] = v.shape[1] * 2
            ROWS[-1]["note"] = f"{v.shape[1]}-d; bytes as float16 (the cache's vector dtype: {v.dtype} here)"
        except ImportError as e:
            print(f"# MiniLM skipped: {e}")


def vector_steps(args: argparse.Namespace) -> None:
    import faiss

    from siftkit.registry import make, selector_class
    from siftkit.selectors.kmeans import kmeans_labels

    nv, d, k = args.vectors, args.dim, args.k
    x = synthetic_embeddings(nv, d)
    measure(f"k-means fit on all points + assign (k={k}, 20 it.)", nv,
            lambda: kmeans_labels(x, k, seed=0, max_points_per_centroid=max(1, -(-nv // k))),
            x.shape[1] * x.dtype.itemsize + 8, f"{d}-d float16 vectors + int64 label per record")
    spc = args.sample_per_centroid
    _, cent = measure(f"k-means fit on a {spc * k:,} sample + assign all (k={k})", nv,
                      lambda: kmeans_labels(x, k, seed=0, max_points_per_centroid=spc),
                      x.shape[1] * x.dtype.itemsize + 8, f"sampled k-means: fit on {min(nv, spc * k):,} points")
    index = faiss.IndexFlatIP(d)
    index.add(cent)

    def assign() -> None:
        for s in range(0, nv, 65536):
            index.search(np.ascontiguousarray(x[s:s + 65536], dtype=np.float32), 1)

    measure(f"k-means assign only (nearest of {k} centroids)", nv, assign, 8.0, "faiss IndexFlatIP search")
    length = np.random.default_rng(0).integers(1, 4000, size=nv).astype(np.float64)
    vctx = ctx_for(x, columns={"tokens_total": length})

    def sel(name: str, **p: Any) -> Any:
        return make(selector_class(name), p, name)

    f32 = 4 * d   # the selectors work on a float32, L2-normalised copy of the candidates' rows (rows_f32)
    km = measure(f"kmeans selector (k={k}, longest per cluster, to {args.budget:,})", nv,
                 lambda: sel("kmeans", k=k, by="tokens_total").run(vctx, np.arange(nv), args.budget), f32 + 8,
                 "float32 copy of the rows + int64 label per record; fits on min(N, 256 x k) points")
    assert len(km.kept) == args.budget
    r = measure(f"repr filter (DEITA, cos > 0.9, to {args.budget:,})", nv,
                lambda: sel("repr-filter", by="tokens_total", threshold=0.9, fill=False).run(
                    vctx, np.arange(nv), args.budget), f32)
    walked = len(r.kept) + int(r.details["rejected_too_similar"])
    ROWS[-1]["note"] = (f"float32 copy of the rows; walks by length until the budget is kept: walked {walked:,}, "
                        f"kept {len(r.kept):,}; {ROWS[-1]['cpu_s'] / walked * 1e6:.1f} CPU us per walked record "
                        f"(a flat inner-product search over the kept set: grows with it)")
    measure(f"k-center greedy ({args.kcenter_budget:,} centres)", nv,
            lambda: sel("k-center").run(vctx, np.arange(nv), args.kcenter_budget), f32 + 4)
    ROWS[-1]["note"] = (f"float32 copy of the rows + float32 distance per record; every centre costs one pass: "
                        f"{ROWS[-1]['cpu_s'] / nv / args.kcenter_budget * 1e9:.1f} CPU ns per record per centre")


if __name__ == "__main__":
    main()
