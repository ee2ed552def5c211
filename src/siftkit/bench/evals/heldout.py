"""Held-out loss: mean per-token NLL on the assistant tokens of a validation split of the pool.

The split is drawn once (seeded) before any selection and removed from the pool every method selects
from. The tokens scored are exactly those fine-tuning trains on (``siftkit.training.train.build_examples``:
assistant content + end-of-turn token, same template and ``max_length``). Lower is better. Score = total NLL / total
scored tokens over the split (token-weighted), per-item sums and counts are stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import EvalModel


def score(nll_sums: list[float], counts: list[int]) -> float:
    n = int(np.sum(counts))
    return float(np.sum(nll_sums) / n) if n else float("nan")


def run(em: EvalModel, items: list[dict[str, Any]], ev: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """``items``: {"id", "messages"}; ``ev["max_length"]`` is the training max length."""
    import torch

    from ...training.train import build_examples

    ex = build_examples([it["messages"] for it in items], em.tokenizer, em.template, int(ev["max_length"]))
    rows = ex.rows
    sums, counts = np.zeros(len(rows)), np.zeros(len(rows), dtype=np.int64)
    order = np.argsort([-len(r["input_ids"]) for r in rows], kind="stable")
    pad = em.tokenizer.pad_token_id
    for start in range(0, len(order), em.batch_size):
        idx = order[start: start + em.batch_size]
        width = max(len(rows[i]["input_ids"]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        msk = torch.zeros((len(idx), width), dtype=torch.bool)
        for r, i in enumerate(idx):
            n = len(rows[i]["input_ids"])
            ids[r, :n] = torch.tensor(rows[i]["input_ids"])
            att[r, :n] = 1
            msk[r, :n] = torch.tensor(rows[i]["assistant_masks"], dtype=torch.bool)
        with torch.inference_mode():
            logits = em.model(input_ids=ids.to(em.device), attention_mask=att.to(em.device)).logits.float().cpu()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok_nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1).double()
        m = msk[:, 1:]
        for r, i in enumerate(idx):
            sums[i] = float(tok_nll[r][m[r]].sum())
            counts[i] = int(m[r].sum())
    recs = [{"id": items[ex.kept[i]]["id"], "nll_sum": round(float(sums[i]), 5), "tokens": int(counts[i])}
            for i in range(len(rows))]
    return score(sums.tolist(), counts.tolist()), recs
