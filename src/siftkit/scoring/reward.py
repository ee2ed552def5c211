"""``reward``: a reward model's score of each conversation (any HF sequence-classification model).

The conversation (all turns up to and including the last assistant turn) is rendered with the reward
model's chat template (``apply_chat_template``, no generation prompt), tokenized, and scored in forward
batches planned by token budget (``scoring.batching``, longest first), the same engine as the other model
signals (caching per record id, resume after a kill). The score is the logit of ``label`` (default 0: the
single output of Skywork-Reward style models). A conversation longer than ``max_length`` tokens keeps its
*last* ``max_length`` tokens (the answer being judged) with ``truncation: left`` (default) and is flagged
in ``reward_truncated``; with ``truncation: error`` it is NaN with reason ``too_long``.

Columns: ``reward``, ``reward_truncated``, ``reward_reason`` (``no_response``, ``empty_response``,
``too_long``, ``template_error``). Remote code is never run unless ``trust_remote_code: true``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ..registry import register_signal
from . import base as B
from .batching import plan_batches
from .model import LoadedModel, pick_device, pick_dtype, require_torch, resolve_source

TRUNCATIONS = ("left", "error")
_CACHE: dict[tuple, LoadedModel] = {}


def load_reward_model(model: str, *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
                      revision: str | None = None) -> LoadedModel:
    torch = require_torch()  # noqa: F841
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source, gguf = resolve_source(model)
    dev = pick_device(device)
    key = (source, gguf, dev, dtype, trust_remote_code, revision)
    if key in _CACHE:
        return _CACHE[key]
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
    if gguf:
        kw["gguf_file"] = gguf
    try:
        tok = AutoTokenizer.from_pretrained(source, **kw)
        lm = AutoModelForSequenceClassification.from_pretrained(source, dtype=pick_dtype(dtype, dev), **kw)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load reward model {model!r}: {e}") from None
    lm = lm.to(dev).eval()
    cfg = lm.config
    if getattr(cfg, "pad_token_id", None) is None:   # batches are right-padded: the model must know the pad id
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if pad is None:
            raise ConfigError(f"reward model {model!r}: its tokenizer has neither a pad nor an EOS token")
        cfg.pad_token_id = int(pad)
    max_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    loaded = LoadedModel(lm, tok, dev, model, int(sum(p.numel() for p in lm.parameters())),
                         int(max_pos) if max_pos else None, fast_head=False)
    _CACHE[key] = loaded
    return loaded


@register_signal("reward")
class Reward(B.ModelSignal):
    def __init__(self, model: str, *, label: int = 0, truncation: str = "left", **kw: Any):
        super().__init__(model, **kw)
        if truncation not in TRUNCATIONS:
            raise ConfigError(f"reward: truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        if int(label) < 0:
            raise ConfigError(f"reward: label must be >= 0, got {label}")
        self.label, self.truncation = int(label), truncation

    def config(self) -> dict[str, Any]:
        return {**self.model_config(), "label": self.label, "truncation": self.truncation}

    def columns(self) -> dict[str, pa.DataType]:
        return {"reward": pa.float64(), "reward_truncated": pa.bool_(), "reward_reason": pa.string()}

    def load(self, model: str | None = None) -> LoadedModel:
        return load_reward_model(model or self.model, device=self.device, dtype=self.dtype,
                                 trust_remote_code=self.trust_remote_code, revision=self.revision)

    def _encode(self, lm: LoadedModel, msgs: list[dict[str, str]]) -> np.ndarray:
        tok = lm.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
            return np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
        text = "\n\n".join(f"{m['role']}: {m['content']}" for m in msgs)   # no template: plain role lines
        return np.asarray(tok(text, add_special_tokens=True)["input_ids"], dtype=np.int64)

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        torch = require_torch()
        lm = self.lm
        convs, last = B.conversations(batch)
        n = len(convs)
        reasons = [B.OK] * n
        seqs: list[np.ndarray | None] = [None] * n
        truncated = np.zeros(n, dtype=bool)
        limit = self.context_length(lm)
        for r, msgs in enumerate(convs):
            if last[r] < 0:
                reasons[r] = B.NO_RESPONSE
                continue
            if not msgs[last[r]]["content"].strip():
                reasons[r] = B.EMPTY_RESPONSE
                continue
            try:
                ids = self._encode(lm, msgs[: last[r] + 1])
            except Exception:  # noqa: BLE001 - a template that rejects the conversation (e.g. role order)
                reasons[r] = B.TEMPLATE_ERROR
                continue
            if len(ids) > limit:
                if self.truncation == "error":
                    reasons[r] = B.TOO_LONG
                    continue
                ids, truncated[r] = ids[-limit:], True
            seqs[r] = ids
        todo = [r for r in range(n) if seqs[r] is not None]
        score = np.full(n, np.nan)
        tok = lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        n_labels = int(getattr(lm.model.config, "num_labels", 1))
        if self.label >= n_labels:
            raise ConfigError(f"reward: label {self.label} but the model has {n_labels} output(s)")
        lengths = np.asarray([len(seqs[r]) for r in todo], dtype=np.int64)   # type: ignore[arg-type]
        for b in plan_batches(lengths, self.effective_token_budget(lm), self.max_batch) if todo else []:
            rows = [todo[j] for j in b]
            width = max(len(seqs[r]) for r in rows)          # type: ignore[arg-type]
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for k, r in enumerate(rows):      # right padding; the model reads its last non-pad position
                s = torch.as_tensor(seqs[r], dtype=torch.long)
                ids[k, : len(s)] = s
                mask[k, : len(s)] = 1
            with torch.inference_mode():
                logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
            vals = logits[:, self.label].float().cpu().numpy()
            for k, r in enumerate(rows):
                score[r] = float(vals[k])
        return {"reward": score, "reward_truncated": truncated, "reward_reason": B.reasons_array(reasons)}
