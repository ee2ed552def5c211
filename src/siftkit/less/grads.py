"""Per-sample LoRA gradients, batched: one forward and one backward per batch, never batch size 1.

Every trainable parameter of a LoRA model is the weight of an ``nn.Linear`` (peft's ``lora_A`` and
``lora_B``). For such a layer with input ``X_b`` (T x in) and output gradient ``G_b`` (T x out) for sample
``b``, the gradient of sample ``b``'s loss with respect to the weight is ``G_b^T X_b``. Samples of a batch do
not interact (causal attention with right padding; padded positions carry no loss), so one backward of the
*sum* of the per-sample losses gives every ``G_b``: forward hooks record each LoRA layer's input and
output, ``torch.autograd.grad`` returns the output gradients, and an einsum over tokens gives the (B, out,
in) per-sample weight gradients. This is exact (tested against batch-size-1 autograd).

The loss of a sample is the mean NLL over its trained tokens (the bench fine-tuning mask: assistant content
plus each assistant turn's end token), as in LESS. Per parameter block the gradient is optionally turned into
the Adam update direction ``m' / sqrt(v' + eps)`` with ``m' = b1 m + (1 - b1) g`` and ``v' = b2 v + (1 - b2)
g^2`` from a checkpoint's optimiser moments (LESS's formula, no bias correction), projected with
:class:`RademacherProjector` and summed over blocks; the result is L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .projection import RademacherProjector


@dataclass
class AdamState:
    exp_avg: dict[str, Any]      # parameter name -> tensor (the parameter's shape)
    exp_avg_sq: dict[str, Any]
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


def lora_linears(model: Any) -> list[tuple[str, Any]]:
    """(parameter name, module) of every trainable weight, which must belong to an ``nn.Linear``."""
    import torch

    owner: dict[int, tuple[Any, str]] = {}
    for _, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            owner[id(p)] = (mod, pname)
    out = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mod, pname = owner[id(p)]
        if not isinstance(mod, torch.nn.Linear) or pname != "weight" or mod.bias is not None and \
                mod.bias.requires_grad:
            raise ValueError(f"per-sample gradients support trainable nn.Linear weights only (LoRA); "
                             f"{name} is not one")
        out.append((name, mod))
    if not out:
        raise ValueError("the model has no trainable parameters (expected LoRA weights)")
    return out


def _pad(rows: list[dict[str, list[int]]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    L = max(len(r["input_ids"]) for r in rows)
    ids = np.full((len(rows), L), pad_id, dtype=np.int64)
    att = np.zeros((len(rows), L), dtype=np.int64)
    tgt = np.zeros((len(rows), L), dtype=bool)
    for j, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[j, :n] = r["input_ids"]
        att[j, :n] = 1
        tgt[j, :n] = np.asarray(r["assistant_masks"], dtype=bool)
    tgt[:, 0] = False                      # token 0 has no prediction
    return ids, att, tgt


def per_sample_grads(model: Any, rows: list[dict[str, list[int]]], pad_id: int, device: Any,
                     fast_head: bool = False) -> tuple[list[tuple[str, Any]], Any]:
    """Per-sample gradients of each trainable weight: [(name, (B, out, in) float32 tensor)], plus the
    per-sample losses (B,)."""
    import torch

    layers = lora_linears(model)
    saved: dict[int, tuple[Any, Any]] = {}
    hooks = []
    for k, (_, mod) in enumerate(layers):
        def hook(m: Any, inp: Any, out: Any, k: int = k) -> None:
            saved[k] = (inp[0], out)
        hooks.append(mod.register_forward_hook(hook))
    ids_np, att_np, tgt_np = _pad(rows, pad_id)
    ids = torch.from_numpy(ids_np).to(device)
    att = torch.from_numpy(att_np).to(device)
    tgt = torch.from_numpy(tgt_np).to(device)
    b_idx, t_idx = torch.nonzero(tgt, as_tuple=True)     # targets; predicted from position t - 1
    try:
        with torch.enable_grad():
            if fast_head:
                causal = model.get_base_model() if hasattr(model, "get_base_model") else model
                hidden = causal.base_model(input_ids=ids, attention_mask=att).last_hidden_state
                logits = causal.get_output_embeddings()(hidden[b_idx, t_idx - 1]).float()
            else:
                logits = model(input_ids=ids, attention_mask=att).logits[b_idx, t_idx - 1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[b_idx, t_idx], reduction="none")
            count = torch.zeros(len(rows), dtype=torch.float32, device=device).index_add_(
                0, b_idx, torch.ones_like(nll))
            loss = torch.zeros(len(rows), dtype=torch.float32, device=device).index_add_(0, b_idx, nll)
            loss = loss / count.clamp(min=1)
            outs = [saved[k][1] for k in range(len(layers))]
            grads = torch.autograd.grad(loss.sum(), outs)
    finally:
        for h in hooks:
            h.remove()
    result = []
    for k, (name, _) in enumerate(layers):
        x = saved[k][0].detach().float()
        g = grads[k].detach().float()
        result.append((name, torch.einsum("bto,bti->boi", g, x)))
    saved.clear()
    return result, loss.detach()


def adam_direction(g: Any, m: Any, v: Any, betas: tuple[float, float], eps: float) -> Any:
    """LESS's Adam update direction for per-sample gradients ``g`` (B, ...) and moments ``m``, ``v`` (...)."""
    b1, b2 = betas
    m2 = b1 * m.float() + (1 - b1) * g
    v2 = b2 * v.float() + (1 - b2) * g * g
    return m2 / (v2 + eps).sqrt()


def flat_directions(model: Any, rows: list[dict[str, list[int]]], pad_id: int, device: Any,
                    adam: AdamState | None = None, fast_head: bool = False) -> Any:
    """(B, P) float32: per-sample gradients (Adam directions when ``adam`` is given), parameters concatenated
    in ``named_parameters`` order, each flattened row-major."""
    import torch

    grads, _ = per_sample_grads(model, rows, pad_id, device, fast_head)
    parts = []
    for name, g in grads:
        if adam is not None:
            if name not in adam.exp_avg:
                raise ValueError(f"the checkpoint's optimiser state has no moments for {name}")
            g = adam_direction(g, adam.exp_avg[name].to(g.device), adam.exp_avg_sq[name].to(g.device),
                               adam.betas, adam.eps)
        parts.append(g.reshape(len(rows), -1))
    return torch.cat(parts, dim=1)


def project_normalise(flat: Any, projector: RademacherProjector) -> np.ndarray:
    """(B, P) -> (B, dim) float32 numpy, L2-normalised rows."""
    import torch

    out = projector.project(flat, 0)
    norms = out.norm(dim=1, keepdim=True)
    return (out / torch.where(norms > 0, norms, torch.ones_like(norms))).cpu().numpy()


def gradient_features(model: Any, rows: list[dict[str, list[int]]], pad_id: int, device: Any,
                      projector: RademacherProjector, adam: AdamState | None = None,
                      fast_head: bool = False) -> np.ndarray:
    """(B, dim) float32 L2-normalised projected gradient features (Adam directions when ``adam`` is given)."""
    return project_normalise(flat_directions(model, rows, pad_id, device, adam, fast_head), projector)
