"""DiverseEvol and Cherry's brief experience: cost per stage, with a naive reference where one applies.

    .venv/bin/python benchmarks/bench_finetune_methods.py            # defaults below, SmolLM2-135M on CPU

1. DiverseEvol, fixed embeddings (the no-retraining mode) at ``--n`` synthetic normalised ``--dim``-d vectors
   (initial 1,000, rounds of 3,000, ``--budget``), and on a ``--sub`` subsample side by side with a naive
   k-center (every pick recomputes the distance of every point to every selected point): time, same picks.
2. DiverseEvol ``retrain`` mode with a real model (``--model``, default SmolLM2-135M GGUF) on ``--pool``
   real conversations: per round a fine-tune on the selection so far and a re-embedding of the candidates.
3. ``cherry-ifd`` with ``brief_experience`` on the same real conversations: base prompt perplexity, prompt
   embeddings, k-means, band picks, a short fine-tune, then IFD with the experienced model.

Writes benchmarks/results/bench_finetune_methods.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from siftkit import progress


def naive_kcenter(x: np.ndarray, initial: list[int], budget: int) -> list[int]:
    """Textbook farthest-first: every pick recomputes all N x |S| squared distances (float64)."""
    x = x.astype(np.float64)
    sq = (x * x).sum(1)
    sel = list(initial)
    while len(sel) < budget:
        d = (sq[:, None] + sq[None, sel] - 2 * x @ x[sel].T).min(axis=1)
        d[sel] = -1
        sel.append(int(np.argmax(d)))
    return sel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--budget", type=int, default=10_000)
    ap.add_argument("--sub", type=int, default=5_000)
    ap.add_argument("--sub-budget", type=int, default=300)
    ap.add_argument("--model", default=None)
    ap.add_argument("--pool", type=int, default=160, help="real conversations for the model-based stages")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_finetune_methods.json"))
    args = ap.parse_args()
    progress.set_quiet(True)
    from siftkit.selectors.diverseevol import diverse_evol

    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    init = rng.choice(args.n, 1000, replace=False)
    t = time.perf_counter()
    _, rounds = diverse_evol(x, args.budget, init, 3000)
    rows.append({"stage": f"diverseevol fixed, {args.n:,} x {args.dim}-d, budget {args.budget:,} "
                          f"({rounds} rounds)", "seconds": time.perf_counter() - t})
    sub = x[: args.sub]
    sinit = list(range(0, 100 * 7, 7))[:30]
    t = time.perf_counter()
    got, _ = diverse_evol(sub, args.sub_budget, np.asarray(sinit), 90)
    t_sub = time.perf_counter() - t
    t = time.perf_counter()
    ref = naive_kcenter(sub, sinit, args.sub_budget)
    t_ref = time.perf_counter() - t
    same = got.tolist() == ref
    overlap = len(set(got.tolist()) & set(ref)) / len(ref)
    rows.append({"stage": f"diverseevol fixed, {args.sub:,} subsample, budget {args.sub_budget}",
                 "seconds": t_sub})
    rows.append({"stage": f"naive k-center (N x |S| per pick), same subsample; same picks in the same "
                          f"order: {same}, overlap {overlap:.3f}",
                 "seconds": t_ref})

    # ------------------------------------------------------------------ model-based: real conversations
    from bench_scoring import samples, smollm

    from siftkit import api

    model = args.model or smollm()
    convs = samples(args.pool, 0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_ft_"))
    pool = tmp / "pool.jsonl"
    pool.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    train = {"epochs": 1, "batch_size": 8, "micro_batch_size": 4, "max_length": 512}
    emb = {"max_length": 512, "batch_size": 16}
    recipe = {"inputs": [str(pool)], "budget": 24, "seed": 0, "cache_dir": str(tmp / "cache"),
              "steps": [{"select": "diverseevol", "initial_size": 8, "round_size": 8,
                         "retrain": {"model": model, "train": train, "embedding": emb}}]}
    t = time.perf_counter()
    sel, _ = api.run(recipe, write=False)
    t_de = time.perf_counter() - t
    d = sel.steps[-1].details
    rows.append({"stage": f"diverseevol retrain, {len(convs)} records, budget 24 (initial 8, rounds of 8): "
                          f"{len(d['train_loss'])} fine-tunes + re-embeddings", "seconds": t_de,
                 "per_round_s": t_de / max(1, len(d["train_loss"]))})

    recipe = {"inputs": [str(pool)], "budget": 16, "seed": 0, "cache_dir": str(tmp / "cache"),
              "preset": {"name": "cherry-ifd", "model": model, "lm_loss": {"max_length": 512},
                         "brief_experience": {"clusters": 8, "per_cluster": 3, "train": train}}}
    t = time.perf_counter()
    api.run(recipe, write=False)
    t_ch = time.perf_counter() - t
    rows.append({"stage": f"cherry-ifd + brief experience, {len(convs)} records (8 clusters x 3, 1 epoch), "
                          "budget 16", "seconds": t_ch})
    t = time.perf_counter()
    api.run(recipe, write=False)
    rows.append({"stage": "  the same, rerun (experienced model and signals from the cache)",
                 "seconds": time.perf_counter() - t})

    print(f"\n| {'stage':<100} | {'seconds':>8} |")
    print(f"|{'-' * 102}|{'-' * 10}|")
    for r in rows:
        print(f"| {r['stage']:<100} | {r['seconds']:>8.1f} |")
    res = {"model": model, "rows": rows, "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "loadavg_end": os.getloadavg(), "args": vars(args)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"\nwrote {args.out}; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
