"""``testset:PATH``: a test set made by ``siftkit testset`` as a bench task.

Each item (``question``, ``contexts``, ``ground_truth``, ``kind``) is asked as one chat turn holding its
contexts and the question (greedy generation, ``eval.max_new_tokens.testset``, default 128). The score is
the mean token F1 of the output against the ground truth (SQuAD-style: lower-cased word tokens, multiset
overlap); each item's record holds its kind and F1, and the per-kind means are logged. Judge scoring
against the ground truth is not part of this task yet.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

from ... import progress
from ...errors import ConfigError
from .common import EvalModel, pick, read_jsonl, task_limit

_TOK = re.compile(r"[^\W_]+", re.UNICODE)
PROMPT = "Answer the question using the contexts.\n\n{contexts}\n\nQuestion: {question}"


def token_f1(pred: str, ref: str) -> float:
    p, r = _TOK.findall(pred.lower()), _TOK.findall(ref.lower())
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def load_path(path: str, ev: dict[str, Any], task: str, seed: int = 0) -> list[dict[str, Any]]:
    rows = read_jsonl(path)
    for i, r in enumerate(rows):
        for k in ("question", "contexts", "ground_truth"):
            if k not in r:
                raise ConfigError(f"{path}:{i + 1}: a test-set item needs {k!r} (made by siftkit testset)")
    return pick(rows, task_limit(ev, task), seed)


def run(em: EvalModel, items: list[dict[str, Any]], ev: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    prompts = [em.chat_prompt(PROMPT.format(contexts="\n\n".join(it["contexts"]), question=it["question"]))
               for it in items]
    outs = em.generate(prompts, int(ev.get("max_new_tokens", {}).get("testset", 128)))
    recs = [{"id": it.get("id"), "kind": it.get("kind"), "question": it["question"],
             "ground_truth": it["ground_truth"], "output": o, "f1": token_f1(o, it["ground_truth"])}
            for it, o in zip(items, outs)]
    by: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        by[str(r["kind"])].append(r["f1"])
    if by:
        progress.info("  testset token F1 by kind: " + ", ".join(f"{k} {sum(v) / len(v):.3f} ({len(v)})"
                                                                 for k, v in sorted(by.items())))
    return (sum(r["f1"] for r in recs) / len(recs) if recs else float("nan")), recs
