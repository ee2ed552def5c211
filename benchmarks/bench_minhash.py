"""MinHash near-duplicate removal side by side: siftkit (numpy and rensa backends) vs rensa vs datasketch.

    .venv/bin/python benchmarks/bench_minhash.py                  # 50,000 shared-pool records
    .venv/bin/python benchmarks/bench_minhash.py --n 190000 --skip datasketch

Same records (a seeded sample of ../shared/data/pool, conversation text lower-cased with whitespace
collapsed), same shingles (word 5-grams), 128 permutations, Jaccard >= 0.8, keep the first of each group:

- ``siftkit``: the ``minhash-dedup`` step (text extraction included), default ``backend: numpy``, LSH bands x
  rows from ``lsh_params`` (recall-weighted, verify by the MinHash estimate), union-find clusters.
- ``siftkit rensa``: the same step with ``backend: rensa``.
- ``rensa``: ``RMinHashDeduplicator`` (LSH, inline: a record is dropped when it matches an earlier kept
  one), RMinHash built from the shingle strings.
- ``datasketch``: ``MinHash.update_batch`` + ``MinHashLSH`` (its own optimal bands x rows), inline likewise.

CPU seconds are ``time.process_time()`` (all threads). Quality against exact Jaccard: the records that
have an earlier record at exact Jaccard >= 0.8 (found through a near-exhaustive LSH net: 32 bands x 4 rows,
every pair in a bucket, verified exactly; a pair at J = 0.8 escapes it with probability 4e-8). Recall =
share of those records that a method drops; precision = share of the dropped records that are in that set.

Writes benchmarks/results/bench_minhash.json.
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
from siftkit.registry import make, selector_class
from siftkit.selectors.base import SelectionContext
from siftkit.selectors.near_dedup import exact_jaccard, minhash, normalize_text, shingle_hashes
from siftkit.signals.segments import flatten

THRESHOLD, NUM_PERM, NGRAM = 0.8, 128, 5


def load(n: int, seed: int) -> tuple[Any, str]:
    from siftkit.io.pool import read_pool

    folder = ROOT.parent / "shared" / "data" / "pool"
    if not folder.is_dir():
        sys.exit(f"needs {folder}")
    table = read_pool([str(folder)], on_error="skip").table
    rows = np.sort(np.random.default_rng(seed).choice(len(table), min(n, len(table)), replace=False))
    return table.take(rows), str(folder)


def word_shingles(text: str) -> list[str]:
    w = text.split(" ") if text else []
    return [" ".join(w[i:i + NGRAM]) for i in range(len(w) - NGRAM + 1)] or ([" ".join(w)] if w else [])


def truth(texts: list[str]) -> tuple[np.ndarray, int]:
    """Records with an earlier record at exact Jaccard >= THRESHOLD: identical texts directly, distinct
    texts through a near-exhaustive LSH net (every pair in a bucket, verified exactly). Returns the flags
    and the number of pairs verified."""
    first: dict[str, int] = {}
    rep = np.array([first.setdefault(t, i) for i, t in enumerate(texts)])
    uniq = np.flatnonzero(rep == np.arange(len(texts)))
    utexts = [texts[i] for i in uniq]
    h, off = shingle_hashes(utexts, "word", NGRAM)
    sig = minhash(h, off, NUM_PERM, seed=12345)
    valid = np.flatnonzero(np.diff(off) > 0)
    m = len(utexts)
    us, vs = [], []
    for band in range(32):
        key = np.ascontiguousarray(sig[valid, band * 4:band * 4 + 4]).view(np.dtype((np.void, 16))).ravel()
        srt = np.argsort(key, kind="stable")
        order, ks = valid[srt], key[srt]
        starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]]))
        for a, b in zip(starts.tolist(), np.concatenate([starts[1:], [len(order)]]).tolist()):
            if b - a > 1:
                ii, jj = np.triu_indices(b - a, 1)
                us.append(order[a:b][ii])
                vs.append(order[a:b][jj])
    dup = (rep != np.arange(len(texts))) & np.array([bool(t) for t in texts])
    if not us:
        return dup, 0
    u, v = np.concatenate(us), np.concatenate(vs)
    pairs = np.unique(np.minimum(u, v) * m + np.maximum(u, v))
    lo, hi = pairs // m, pairs % m
    jac = exact_jaccard(h, off, lo, hi)
    dup[uniq[hi[jac >= THRESHOLD]]] = True          # uniq is increasing: hi's first record is the later
    return dup, len(pairs)
def score(dropped: np.ndarray, dup: np.ndarray) -> dict[str, Any]:
    hit = int((dropped & dup).sum())
    return {"dropped": int(dropped.sum()), "recall": round(hit / max(int(dup.sum()), 1), 5),
            "precision": round(hit / max(int(dropped.sum()), 1), 5)}


def run_siftkit(table: Any, backend: str) -> np.ndarray:
    step = make(selector_class("minhash-dedup"), {"backend": backend, "threshold": THRESHOLD,
                                                   "num_perm": NUM_PERM, "ngram": NGRAM}, "minhash-dedup")
    ctx = SelectionContext(pool=table, signals=None, seed=0, vector_loader=None)  # type: ignore[arg-type]
    kept = step.run(ctx, np.arange(len(table)), None).kept
    dropped = np.ones(len(table), bool)
    dropped[kept] = False
    return dropped


def run_rensa(texts: list[str]) -> np.ndarray:
    import rensa

    dd = rensa.RMinHashDeduplicator(threshold=THRESHOLD, num_perm=NUM_PERM, use_lsh=True)
    dropped = np.zeros(len(texts), bool)
    for i, t in enumerate(texts):
        sh = word_shingles(t)
        if not sh:
            continue
        m = rensa.RMinHash(num_perm=NUM_PERM, seed=42)
        m.update(sh)
        dropped[i] = not dd.add(str(i), m)
    return dropped


def run_datasketch(texts: list[str]) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    kept: dict[str, Any] = {}
    dropped = np.zeros(len(texts), bool)
    for i, t in enumerate(texts):
        sh = word_shingles(t)
        if not sh:
            continue
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch([s.encode("utf-8") for s in sh])
        if any(m.jaccard(kept[k]) >= THRESHOLD for k in lsh.query(m)):
            dropped[i] = True
        else:
            kept[str(i)] = m
            lsh.insert(str(i), m)
    return dropped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of: rensa, datasketch, siftkit-rensa")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    progress.set_quiet(True)
    table, src = load(args.n, args.seed)
    t0 = time.process_time()
    texts = [normalize_text(t) for t in flatten(table.select(["messages"])).texts("conversation")]
    t_text = time.process_time() - t0
    dup, n_pairs = truth(texts)
    rows: list[dict[str, Any]] = []

    def record(name: str, fn: Any, note: str = "") -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        dropped = fn()
        rows.append({"method": name, "n": len(texts), "cpu_s": round(time.process_time() - c0, 2),
                     "wall_s": round(time.perf_counter() - w0, 2), **score(dropped, dup), "note": note})
        print(json.dumps(rows[-1]), flush=True)

    record("siftkit (numpy)", lambda: run_siftkit(table, "numpy"), "includes text extraction")
    if "siftkit-rensa" not in skip:
        record("siftkit (backend rensa)", lambda: run_siftkit(table, "rensa"), "includes text extraction")
    if "rensa" not in skip:
        record("rensa RMinHashDeduplicator", lambda: run_rensa(texts), f"+ {t_text:.2f} s text extraction")
    if "datasketch" not in skip:
        record("datasketch MinHashLSH", lambda: run_datasketch(texts), f"+ {t_text:.2f} s text extraction")
    base = rows[0]["cpu_s"]
    for r in rows:
        r["cpu_vs_siftkit"] = round(r["cpu_s"] / base, 2) if base else None
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_minhash.json").write_text(json.dumps(
        {"args": vars(args), "data": src, "true_duplicates": int(dup.sum()), "net_pairs_verified": n_pairs,
         "text_extraction_cpu_s":
         round(t_text, 2), "rows": rows}, indent=1))
    print(json.dumps({"true_duplicates": int(dup.sum()), "net_pairs_verified": n_pairs,
                      "text_extraction_cpu_s": round(t_text, 2)}))


if __name__ == "__main__":
    main()
