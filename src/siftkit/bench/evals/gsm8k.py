"""GSM8K: greedy generation, exact match of the final number.

Reads ``gsm8k_test.jsonl`` (``question``/``answer``, the reference after ``####``). The model gets the
question as a chat turn with an instruction to end with ``#### <number>``. The prediction is the number
after the last ``####`` when present, else the last number in the output; numbers are compared as values
(``1,000`` == ``1000`` == ``1000.0``; ``$`` and trailing periods ignored).
"""

from __future__ import annotations

import re
from typing import Any

from ...errors import ConfigError
from .common import EvalModel, pick, read_jsonl, task_limit, task_path

INSTRUCTION = "\nSolve the problem step by step, then give the final answer on the last line as '#### <number>'."
_NUM = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize_number(s: str | None) -> float | None:
    if s is None:
        return None
    s = s.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        return float(s)
    except ValueError:
        return None


def extract_answer(text: str) -> str | None:
    """The final answer in a completion: after the last '####', else the last number anywhere."""
    if "####" in text:
        tail = text.rsplit("####", 1)[1]
        m = _NUM.search(tail)
        if m:
            return m.group(0)
    nums = _NUM.findall(text)
    return nums[-1] if nums else None


def is_correct(output: str, reference: str) -> bool:
    pred, ref = normalize_number(extract_answer(output)), normalize_number(reference)
    return pred is not None and ref is not None and abs(pred - ref) < 1e-6


def load(ev: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    path = task_path(ev, "gsm8k", "gsm8k_test.jsonl")
    rows = read_jsonl(path)
    items = []
    for i, r in enumerate(rows):
        if "question" not in r or "answer" not in r:
            raise ConfigError(f"{path}:{i + 1}: a GSM8K item needs 'question' and 'answer'")
        ref = r["answer"].rsplit("####", 1)[-1].strip() if "####" in r["answer"] else str(r["answer"]).strip()
        items.append({"question": r["question"], "reference": ref})
    return pick(items, task_limit(ev, "gsm8k"), seed)


def run(em: EvalModel, items: list[dict[str, Any]], ev: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    outs = em.generate([em.chat_prompt(it["question"] + INSTRUCTION) for it in items],
                       int(ev["max_new_tokens"]["gsm8k"]))
    recs = [{"question": it["question"], "reference": it["reference"], "output": o,
             "pred": extract_answer(o), "correct": is_correct(o, it["reference"])} for it, o in zip(items, outs)]
    acc = sum(r["correct"] for r in recs) / len(recs) if recs else float("nan")
    return acc, recs
