"""MMLU: multiple choice scored by the log-likelihood of the answer letter (" A".." D"), optional k-shot.

Reads ``mmlu/{dev,test}/*.csv`` (question, four choices, answer; the answer a letter or a 0-3 index; a header
row is detected). The prompt is lm-eval's plain format (no chat template); k-shot examples come from the
subject's dev file. Accuracy = mean of argmax-loglik == answer.
"""

from __future__ import annotations

import csv
import glob
import os
from typing import Any

import numpy as np

from ...errors import ConfigError
from .common import EvalModel, pick, task_limit, task_path

LETTERS = ("A", "B", "C", "D")


def _answer(v: str, where: str) -> int:
    v = v.strip()
    if v.upper() in LETTERS:
        return LETTERS.index(v.upper())
    if v.isdigit() and int(v) < 4:
        return int(v)
    raise ConfigError(f"{where}: answer {v!r} is neither A-D nor 0-3")


def read_csv(path: str) -> list[dict[str, Any]]:
    subject = os.path.basename(path).rsplit("_", 1)[0] if "_" in os.path.basename(path) else "general"
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if n == 1 and [c.strip().lower() for c in row[:1]] == ["question"]:
                continue                      # header row
            if len(row) < 6:
                raise ConfigError(f"{path}:{n}: expected question, 4 choices and an answer, got {len(row)} fields")
            rows.append({"subject": subject, "question": row[0], "choices": row[1:5],
                         "answer": _answer(row[5], f"{path}:{n}")})
    return rows


def format_question(item: dict[str, Any], with_answer: bool) -> str:
    s = item["question"].strip() + "\n" + "".join(f"{L}. {c}\n" for L, c in zip(LETTERS, item["choices"]))
    s += "Answer:"
    return s + (f" {LETTERS[item['answer']]}\n\n" if with_answer else "")


def load(ev: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    root = task_path(ev, "mmlu", "mmlu")
    test_dir = os.path.join(root, "test") if os.path.isdir(os.path.join(root, "test")) else root
    files = sorted(glob.glob(os.path.join(test_dir, "*.csv")))
    if not files:
        raise ConfigError(f"eval: no MMLU csv files in {test_dir}")
    items = [it for f in files for it in read_csv(f)]
    items = pick(items, task_limit(ev, "mmlu"), seed)
    shots = int(ev.get("mmlu_shots", 0))
    dev: dict[str, list[dict[str, Any]]] = {}
    if shots:
        for f in sorted(glob.glob(os.path.join(root, "dev", "*.csv"))):
            for it in read_csv(f):
                dev.setdefault(it["subject"], []).append(it)
    for it in items:
        head = f"The following are multiple choice questions (with answers) about {it['subject'].replace('_', ' ')}.\n\n"
        fewshot = "".join(format_question(d, True) for d in dev.get(it["subject"], [])[:shots])
        it["prompt"] = head + fewshot + format_question(it, False)
    return items


def score(logliks: np.ndarray, answers: list[int]) -> tuple[float, np.ndarray]:
    """Accuracy and per-item correctness from an (n, 4) log-likelihood matrix."""
    pred = np.asarray(logliks).argmax(axis=1)
    ok = pred == np.asarray(answers)
    return (float(ok.mean()) if len(ok) else float("nan")), ok


def run(em: EvalModel, items: list[dict[str, Any]], ev: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    ll = em.choice_loglik([it["prompt"] for it in items], [f" {L}" for L in LETTERS])
    acc, ok = score(ll, [it["answer"] for it in items])
    recs = [{"subject": it["subject"], "question": it["question"], "answer": LETTERS[it["answer"]],
             "pred": LETTERS[int(np.argmax(ll[i]))], "loglik": [round(float(x), 4) for x in ll[i]],
             "correct": bool(ok[i])} for i, it in enumerate(items)]
    return acc, recs
