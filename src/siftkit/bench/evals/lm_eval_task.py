"""``lm_eval:TASK``: run an lm-evaluation-harness task on the cell's model, when ``lm-eval`` is installed.

The harness loads its own data (usually from the Hugging Face hub, so it needs network or a warm
``HF_DATASETS_CACHE``); the first metric it reports for the task is the cell's score, and its per-sample logs
are stored as the raw outputs. Not exercised by siftkit's tests (lm-eval is not a dependency).
"""

from __future__ import annotations

from typing import Any

from ...errors import MissingDependencyError

PREFERRED = ("acc_norm,none", "acc,none", "exact_match,strict-match", "exact_match,none",
             "prompt_level_strict_acc,none")


def run(model: Any, tokenizer: Any, task: str, limit: int | None, batch_size: int) -> tuple[float, bool, list]:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise MissingDependencyError("lm-eval", None, f"evaluation task lm_eval:{task}") from None
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    res = lm_eval.simple_evaluate(model=lm, tasks=[task], limit=limit, log_samples=True)
    metrics = res["results"][task]
    key = next((k for k in PREFERRED if k in metrics),
               next(k for k, v in metrics.items() if isinstance(v, (int, float)) and "stderr" not in k))
    higher = res.get("higher_is_better", {}).get(task, {}).get(key.split(",")[0], True)
    samples = [{k: str(v)[:2000] for k, v in s.items()} for s in res.get("samples", {}).get(task, [])]
    return float(metrics[key]), bool(higher), samples
