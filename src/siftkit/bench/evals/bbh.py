"""BIG-Bench Hard: greedy generation, exact match after light normalisation.

Reads ``bbh/*.json`` (``{"examples": [{"input", "target"}]}``, one file per task). ``limit`` items are
drawn round-robin over the tasks (seeded), so every task is represented. With ``bbh_shots: k`` the first
k other examples of the same task are shown as solved examples. The answer is the text after the last
"the answer is" when present, else the first non-empty line; both sides are compared lower-cased with
surrounding whitespace, quotes and a final period removed; a target like ``(B)`` also matches ``B``.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

import numpy as np

from ...errors import ConfigError
from .common import EvalModel, task_limit, task_path

INSTRUCTION = "\nGive only the final answer."
_CHOICE = re.compile(r"^\(([a-r])\)$")


def normalize(s: str) -> str:
    s = s.strip().strip("\"'`*").strip()
    if s.endswith("."):
        s = s[:-1].rstrip()
    return s.lower()


def extract_answer(text: str) -> str:
    low = text.lower()
    k = low.rfind("the answer is")
    if k >= 0:
        return text[k + len("the answer is"):].strip().strip(":").strip().split("\n")[0]
    for line in text.split("\n"):
        if line.strip():
            return line.strip()
    return ""


def is_correct(output: str, target: str) -> bool:
    pred, tgt = normalize(extract_answer(output)), normalize(target)
    if pred == tgt:
        return True
    m = _CHOICE.match(tgt)
    return bool(m) and pred in (m.group(1), f"{m.group(1)})")


def load(ev: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    root = task_path(ev, "bbh", "bbh")
    files = sorted(glob.glob(os.path.join(root, "*.json"))) if os.path.isdir(root) else [root]
    if not files:
        raise ConfigError(f"eval: no BBH task files (*.json) in {root}")
    per_task: list[list[dict[str, Any]]] = []
    shots = int(ev.get("bbh_shots", 0))
    for f in files:
        with open(f, encoding="utf-8") as fh:
            try:
                ex = json.load(fh)["examples"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConfigError(f"{f}: expected {{\"examples\": [{{input, target}}]}} ({e})") from None
        task = os.path.splitext(os.path.basename(f))[0]
        items = []
        for i, e in enumerate(ex):
            demo = [d for j, d in enumerate(ex) if j != i][:shots]
            prefix = "".join(f"{d['input']}\nAnswer: {d['target']}\n\n" for d in demo)
            items.append({"task": task, "input": e["input"], "target": str(e["target"]), "prompt": prefix + e["input"]})
        rng = np.random.default_rng([seed, len(per_task)])
        per_task.append([items[i] for i in rng.permutation(len(items))])
    limit = task_limit(ev, "bbh")
    out: list[dict[str, Any]] = []
    depth = 0
    while (limit is None or len(out) < limit) and any(depth < len(t) for t in per_task):
        for t in per_task:
            if depth < len(t) and (limit is None or len(out) < limit):
                out.append(t[depth])
        depth += 1
    return out


def run(em: EvalModel, items: list[dict[str, Any]], ev: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    outs = em.generate([em.chat_prompt(it["prompt"] + INSTRUCTION) for it in items], int(ev["max_new_tokens"]["bbh"]))
    recs = [{"task": it["task"], "input": it["input"], "target": it["target"], "output": o,
             "pred": extract_answer(o), "correct": is_correct(o, it["target"])} for it, o in zip(items, outs)]
    acc = sum(r["correct"] for r in recs) / len(recs) if recs else float("nan")
    return acc, recs
