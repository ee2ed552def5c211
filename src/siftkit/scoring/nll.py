"""Vectorised per-token NLL, entropy and rating-digit logits for many sequences at once.

Each sequence comes with a ``classes`` array (one int per token): token ``t`` with class ``k >= 0`` is a
scored target, predicted from position ``t - 1`` (the shifted causal-LM loss: logit ``t - 1`` scores token
``t``, never logit ``t``). Token 0 has no prediction and is never scored. For every sequence and class the
engine returns the sum of NLLs, the sum of predictive entropies, the token count and how many targets were
the arg-max prediction. A ``readout`` position per sequence returns the logits of the next token at that
position for a fixed set of candidate ids (rating prompts). No Python loop runs over tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batching import plan_batches
from .model import LoadedModel

HEAD_ROWS = 2048  # positions per lm_head chunk: bounds the (rows, vocab) float32 logits buffer


@dataclass
class SpanStats:
    nll: np.ndarray       # (n, K) float64 sums
    entropy: np.ndarray   # (n, K) float64 sums
    count: np.ndarray     # (n, K) int64
    top1: np.ndarray      # (n, K) int64 targets equal to the arg-max prediction
    readout: np.ndarray | None  # (n, C) float32 candidate logits, NaN where no readout was asked

    def mean_nll(self, k: int) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count[:, k] > 0, self.nll[:, k] / np.maximum(self.count[:, k], 1), np.nan)

    def mean_entropy(self, k: int) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count[:, k] > 0, self.entropy[:, k] / np.maximum(self.count[:, k], 1), np.nan)


def score(lm: LoadedModel, ids: Sequence[np.ndarray], classes: Sequence[np.ndarray] | None, n_classes: int,
          *, readout: np.ndarray | None = None, candidates: np.ndarray | None = None,
          token_budget: int = 8192, max_batch: int = 256) -> SpanStats:
    import torch

    n = len(ids)
    stats = SpanStats(np.zeros((n, n_classes)), np.zeros((n, n_classes)),
                      np.zeros((n, n_classes), np.int64), np.zeros((n, n_classes), np.int64), None)
    if readout is not None:
        if candidates is None:
            raise ValueError("readout positions need candidate token ids")
        stats.readout = np.full((n, len(candidates)), np.nan, dtype=np.float32)
        cand_t = torch.as_tensor(np.asarray(candidates, dtype=np.int64), device=lm.device)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
    for batch in plan_batches(lengths, token_budget, max_batch):
        if lengths[batch].max() == 0:
            continue
        _score_batch(lm, torch, ids, classes, n_classes, batch, lengths, stats, readout,
                     cand_t if readout is not None else None)
    return stats


def _score_batch(lm: LoadedModel, torch: Any, ids: Sequence[np.ndarray], classes: Sequence[np.ndarray] | None,
                 n_classes: int, batch: np.ndarray, lengths: np.ndarray, stats: SpanStats,
                 readout: np.ndarray | None, cand_t: Any) -> None:
    B, L = len(batch), int(lengths[batch].max())
    ids_np = np.zeros((B, L), dtype=np.int64)
    att_np = np.zeros((B, L), dtype=np.int64)
    cls_np = np.full((B, L), -1, dtype=np.int64)
    for j, i in enumerate(batch.tolist()):
        m = int(lengths[i])
        ids_np[j, :m] = ids[i]
        att_np[j, :m] = 1
        if classes is not None:
            cls_np[j, :m] = classes[i]
    dev = lm.device
    input_ids = torch.from_numpy(ids_np).to(dev)
    attention = torch.from_numpy(att_np).to(dev)
    cls_t = torch.from_numpy(cls_np[:, 1:]).to(dev)          # class of the target predicted at t
    with torch.inference_mode():
        if lm.fast_head:
            hidden = lm.model.base_model(input_ids=input_ids, attention_mask=attention).last_hidden_state
            head = lm.model.get_output_embeddings()

            def logits_at(b_idx: Any, t_idx: Any) -> Any:
                return head(hidden[b_idx, t_idx]).float()
        else:
            full = lm.model(input_ids=input_ids, attention_mask=attention).logits

            def logits_at(b_idx: Any, t_idx: Any) -> Any:
                return full[b_idx, t_idx].float()

        b_idx, t_idx = torch.nonzero(cls_t >= 0, as_tuple=True)
        if len(b_idx):
            targets = input_ids[b_idx, t_idx + 1]
            seg = b_idx * n_classes + cls_t[b_idx, t_idx]
            nll_sum = torch.zeros(B * n_classes, dtype=torch.float64, device=dev)
            ent_sum = torch.zeros_like(nll_sum)
            cnt = torch.zeros(B * n_classes, dtype=torch.int64, device=dev)
            top = torch.zeros_like(cnt)
            for s in range(0, len(b_idx), HEAD_ROWS):
                sl = slice(s, s + HEAD_ROWS)
                logp = torch.log_softmax(logits_at(b_idx[sl], t_idx[sl]), dim=-1)
                tgt = targets[sl]
                nll = -logp.gather(1, tgt[:, None])[:, 0]
                ent = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)   # 0 * -inf (masked vocab) -> 0
                hit = (logp.argmax(-1) == tgt).long()
                nll_sum.index_add_(0, seg[sl], nll.double())
                ent_sum.index_add_(0, seg[sl], ent.double())
                cnt.index_add_(0, seg[sl], torch.ones_like(hit))
                top.index_add_(0, seg[sl], hit)
            stats.nll[batch] += nll_sum.view(B, n_classes).cpu().numpy()
            stats.entropy[batch] += ent_sum.view(B, n_classes).cpu().numpy()
            stats.count[batch] += cnt.view(B, n_classes).cpu().numpy()
            stats.top1[batch] += top.view(B, n_classes).cpu().numpy()
        if readout is not None:
            pos = torch.as_tensor(readout[batch], device=dev)
            ok = pos >= 0
            if bool(ok.any()):
                rows = torch.nonzero(ok, as_tuple=True)[0]
                lg = logits_at(rows, pos[rows])[:, cand_t]
                stats.readout[batch[rows.cpu().numpy()]] = lg.cpu().numpy()
