"""``testset:PATH``: a test set made by ``siftkit testset`` as a bench task.

Each item (``question``, ``contexts``, ``ground_truth``, ``kind``) is asked as one chat turn holding its
contexts and the question (greedy generation, ``eval.max_new_tokens.testset``, default 128). The score is
the mean token F1 of the output against the ground truth (SQuAD-style: lower-cased word tokens, multiset
overlap). With ``eval.judge`` (an LLM endpoint) every output is also rated against the ground truth by the
``judge`` with a ``target: reference`` rubric (default ``correctness``, 1-5, siftkit's
``llm/rubrics.yaml``), through the response cache (a rerun sends nothing it already paid for) and the
judge's usage counters; the task's second score (column ``testset:PATH#judge``) is the mean rating scaled
to 0-1, ``(rating - low) / (high - low)``, over the items the judge rated (an item whose rating does not
parse has none, with its reason, never a default). Each item's record holds its kind, F1 and rating;
:func:`by_kind` gives the per-kind means the bench report tabulates.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from typing import Any

from ... import progress
from ...errors import ConfigError
from .common import EvalModel, pick, read_jsonl, task_limit

_TOK = re.compile(r"[^\W_]+", re.UNICODE)
PROMPT = "Answer the question using the contexts.\n\n{contexts}\n\nQuestion: {question}"
JUDGE_SUFFIX = "#judge"
# eval.judge keys: the judge signal's settings that make sense here (siftkit.scoring.judge.Judge)
JUDGE_KEYS = ("endpoint", "model", "api", "api_key_env", "rubric", "rubrics_file", "structured", "temperature",
              "seed", "max_tokens", "top_logprobs", "rationale_chars", "max_chars", "repair", "timeout",
              "max_retries", "backoff", "backoff_max", "concurrency", "rpm", "tpm", "price_input", "price_output",
              "extra_body")
JUDGE_DEFAULTS = {"rubric": "correctness", "max_tokens": 128, "rationale_chars": 100}
# settings that change no answer (where and how fast to ask): left out of the bench cells' fingerprint
JUDGE_TRANSPORT = ("endpoint", "api_key_env", "timeout", "max_retries", "backoff", "backoff_max", "concurrency",
                   "rpm", "tpm", "price_input", "price_output")


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


def check_judge(settings: Any, where: str) -> dict[str, Any]:
    """``eval.judge`` checked without contacting the server: known keys, an http(s) endpoint, a rubric with
    ``target: reference``. Errors name the key."""
    from ...llm.client import Endpoint
    from ...llm.rubrics import load_rubric

    if not isinstance(settings, dict):
        raise ConfigError(f"{where} must be a mapping like {{endpoint: http://127.0.0.1:8080/v1}}")
    unknown = sorted(set(settings) - set(JUDGE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(JUDGE_KEYS)}")
    if not settings.get("endpoint"):
        raise ConfigError(f"{where}.endpoint is required (an OpenAI-compatible server, e.g. "
                          "http://127.0.0.1:8080/v1)")
    ep = {k: settings[k] for k in ("api", "api_key_env", "timeout", "max_retries", "backoff", "backoff_max",
                                   "concurrency", "rpm", "tpm", "price_input", "price_output") if k in settings}
    Endpoint(url=settings["endpoint"], **ep).check(where)
    s = {**JUDGE_DEFAULTS, **settings}
    r = load_rubric(s["rubric"] if isinstance(s["rubric"], str) else None, s.get("rubrics_file"),
                    s["rubric"] if isinstance(s["rubric"], dict) else None, f"{where}.rubric")
    if r.target != "reference":
        raise ConfigError(f"{where}.rubric: {r.name!r} has target {r.target!r}; the test-set judge needs a "
                          "'target: reference' rubric (siftkit's: correctness)")
    return dict(settings)


def judge(recs: list[dict[str, Any]], settings: dict[str, Any], cache_dir: str) -> tuple[float, dict[str, Any]]:
    """Rate each record's ``output`` against its ``ground_truth`` (adds ``judge``: the rating on the
    rubric's scale, mean over its dimensions, or None; ``judge_reason``; ``judge_rationale``). Returns (mean
    rating scaled to 0-1 over the rated items, NaN when none; the judge's usage with ``rated`` / ``failed``
    counts). Answers are cached in ``cache_dir/llm``."""
    from ...scoring.judge import Judge

    j = Judge(**{**JUDGE_DEFAULTS, **settings, "response_cache": os.path.join(cache_dir, "llm")})
    j.begin_run(cache_dir)
    rated = j.rate_references([(r["question"], r["ground_truth"], r["output"]) for r in recs])
    lo, hi = j.rubric_obj.lo, j.rubric_obj.hi
    norm = []
    for r, x in zip(recs, rated):
        v = sum(x["scores"].values()) / len(x["scores"]) if x["scores"] else None
        r["judge"], r["judge_reason"], r["judge_rationale"] = v, x["reason"], x["rationale"]
        if v is not None:
            norm.append((v - lo) / (hi - lo))
    usage = j.end_run()
    usage.update(rubric=j.rubric_obj.name, scale=[lo, hi], rated=len(norm), failed=len(recs) - len(norm),
                 failed_by_reason=dict(sorted(Counter(r["judge_reason"] for r in recs if r["judge"] is None).items())))
    if recs:
        progress.info(f"  testset judge ({j.rubric_obj.name}, {j.ep.model}): {len(norm)} of {len(recs)} rated")
    return (sum(norm) / len(norm) if norm else float("nan")), usage


def by_kind(recs: list[dict[str, Any]], scale: list[int] | None = None) -> dict[str, dict[str, Any]]:
    """Per evolution kind: ``n`` items, mean ``f1``, and (when judged) mean ``judge`` scaled to 0-1 by
    ``scale`` with ``judged`` (items rated)."""
    out: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        groups[str(r.get("kind"))].append(r)
    for k, rs in sorted(groups.items()):
        row: dict[str, Any] = {"n": len(rs), "f1": sum(r["f1"] for r in rs) / len(rs)}
        if scale is not None:
            js = [(r["judge"] - scale[0]) / (scale[1] - scale[0]) for r in rs if r.get("judge") is not None]
            row["judge"] = sum(js) / len(js) if js else None
            row["judged"] = len(js)
        out[k] = row
    return out
