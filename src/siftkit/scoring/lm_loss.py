"""``lm_loss``: response NLL/perplexity given the prompt, prompt perplexity, response NLL without the
prompt, mean token entropy and IFD (both public variants), from one engine pass per record.

Conditions (METHODS.md notation, ``x`` = turns before the last assistant turn, ``y`` = that turn):

- **A** ``render(x + y)``: tokens of ``y`` give ``loss`` = s(y|x), ``entropy``; tokens of every content in
  ``x`` give ``prompt_ppl`` (causal, so the same forward pass serves both).
- **B** assistant header + *the same token ids of y as scored in A*: gives ``loss_noprompt`` = s(y).

Multi-turn: ``turns="last"`` (default) scores the last assistant turn given everything before it (turns
after it are ignored); ``turns="all"`` scores every assistant turn given its history (token-weighted means
over all assistant tokens; B scores each assistant turn alone).

Truncation (``max_length`` tokens, capped by the model's context): ``truncation="right"`` cuts A at
``max_length`` (Cherry's behaviour); the response tokens that remain are the scored set, and B scores
exactly those tokens. ``truncation="error"`` gives NaN with reason ``too_long`` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ..registry import register_signal
from . import base as B
from .nll import score
from .templates import TemplateError, assistant_header, check_template, render, resolve, span_mask, tokenize

PROMPT, RESP, RESP_ALONE = 0, 1, 2


@register_signal("lm_loss")
class LMLoss(B.ModelSignal):
    def __init__(self, model: str, *, template: str = "auto", turns: str = "last", truncation: str = "right",
                 ifd: bool = True, prefix: str = "lm", backend: str = "transformers", **kw: Any):
        super().__init__(model, **kw)
        if backend not in ("transformers", "vllm"):
            raise ConfigError(f"lm_loss: backend must be 'transformers' or 'vllm', got {backend!r}")
        self.backend = backend
        check_template(template)
        if turns not in ("last", "all"):
            raise ConfigError(f"lm_loss: turns must be 'last' or 'all', got {turns!r}")
        if truncation not in ("right", "error"):
            raise ConfigError(f"lm_loss: truncation must be 'right' or 'error', got {truncation!r}")
        if not prefix or not prefix.replace("_", "").isalnum():
            raise ConfigError(f"lm_loss: prefix must be a plain identifier, got {prefix!r}")
        self.template, self.turns, self.truncation, self.ifd, self.prefix = template, turns, truncation, ifd, prefix

    def config(self) -> dict[str, Any]:
        return {**self.model_config(), "template": self.template, "turns": self.turns,
                "truncation": self.truncation, "ifd": self.ifd, "prefix": self.prefix,
                **({"backend": self.backend} if self.backend != "transformers" else {})}

    def setup(self) -> None:
        if self.backend == "vllm":
            from .model import load_tokenizer
            from .vllm_backend import load_vllm

            self._lm = load_tokenizer(self.model, gguf_file=self.gguf_file,
                                      trust_remote_code=self.trust_remote_code, revision=self.revision)
            self._vllm = load_vllm(self.model, gguf_file=self.gguf_file, dtype=self.dtype,
                                   max_length=self.max_length, trust_remote_code=self.trust_remote_code,
                                   revision=self.revision)
        else:
            super().setup()

    def columns(self) -> dict[str, pa.DataType]:
        p = self.prefix
        cols = {f"{p}_loss": pa.float64(), f"{p}_ppl": pa.float64(), f"{p}_prompt_ppl": pa.float64(),
                f"{p}_entropy": pa.float64()}
        if self.ifd:
            cols.update({f"{p}_loss_noprompt": pa.float64(), f"{p}_ifd": pa.float64(),
                         f"{p}_ifd_ppl": pa.float64()})
        cols.update({f"{p}_tokens": pa.int32(), f"{p}_truncated": pa.bool_(), f"{p}_loss_reason": pa.string()})
        return cols

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        lm = self.lm
        tok = lm.tokenizer
        tmpl = resolve(self.template, tok)
        max_len = self.context_length(lm)
        convs, last = B.conversations(batch)
        n = len(convs)
        reasons = [B.OK] * n
        truncated = np.zeros(n, dtype=bool)
        head_ids = tokenize(assistant_header(tmpl, tok), tok)[0] if self.ifd else None

        seqs: list[np.ndarray] = []
        classes: list[np.ndarray] = []
        owner: list[int] = []
        for r, msgs in enumerate(convs):
            built = self._build(msgs, int(last[r]), tmpl, tok, max_len, head_ids)
            if isinstance(built, str):
                reasons[r] = built
                continue
            recs, was_cut = built
            truncated[r] = was_cut
            for ids, cls in recs:
                seqs.append(ids)
                classes.append(cls)
                owner.append(r)
        if self.backend == "vllm":
            from .vllm_backend import score_vllm

            stats = score_vllm(self._vllm, seqs, classes, 3)
        else:
            stats = score(lm, seqs, classes, 3, token_budget=self.effective_token_budget(lm), max_batch=self.max_batch)
        nll, ent, cnt = np.zeros((n, 3)), np.zeros((n, 3)), np.zeros((n, 3), np.int64)
        if owner:
            own = np.asarray(owner)
            np.add.at(nll, own, stats.nll)
            np.add.at(ent, own, stats.entropy)
            np.add.at(cnt, own, stats.count)
        return self._columns(nll, ent, cnt, truncated, reasons)

    def _build(self, msgs: list[dict[str, str]], last: int, tmpl: str, tok: Any, max_len: int,
               head_ids: np.ndarray | None) -> str | tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
        """Sequences (ids, classes) of one record, or a reason code."""
        if last < 0:
            return B.NO_RESPONSE
        if not msgs[last]["content"].strip():
            return B.EMPTY_RESPONSE
        if self.turns == "last":
            msgs = msgs[: last + 1]
            resp_turns = [last]
        else:
            resp_turns = [j for j, m in enumerate(msgs) if m["role"] == "assistant" and m["content"].strip()]
        try:
            rendered = render(msgs, tmpl, tok)
        except TemplateError:
            return B.TEMPLATE_ERROR
        try:
            ids, offs = tokenize(rendered, tok)
        except (ValueError, TypeError, RuntimeError, OverflowError):
            return B.TOKENIZER_ERROR
        cls = np.full(len(ids), -1, dtype=np.int64)
        turn_masks = []
        for j, span in enumerate(rendered.spans):
            if j in resp_turns:
                continue
            if self.turns == "last" or msgs[j]["role"] != "assistant":
                cls[span_mask(offs, span)] = PROMPT
        for j in resp_turns:
            m = span_mask(offs, rendered.spans[j])
            m[0] = False                     # token 0 has no prediction
            cls[m] = RESP
            turn_masks.append(m)
        was_cut = len(ids) > max_len
        if was_cut:
            if self.truncation == "error":
                return B.TOO_LONG
            ids, cls = ids[:max_len], cls[:max_len]
            turn_masks = [m[:max_len] for m in turn_masks]
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for m in turn_masks:
            if head_ids is None or not m.any():
                continue
            pos = np.flatnonzero(m)
            room = max_len - len(head_ids)
            drop = 1 if len(head_ids) == 0 else 0      # B's first token would have no prediction
            keep = pos[drop: room] if room > drop else pos[:0]
            cls[np.setdiff1d(pos, keep)] = -1          # score the same tokens in A and B
            alone = np.concatenate([head_ids, ids[keep]])
            acls = np.concatenate([np.full(len(head_ids), -1, np.int64), np.full(len(keep), RESP_ALONE, np.int64)])
            if len(keep):
                out.append((alone, acls))
        if not (cls == RESP).any():
            return B.TOO_LONG
        return [(ids, cls)] + out, was_cut

    def _columns(self, nll: np.ndarray, ent: np.ndarray, cnt: np.ndarray, truncated: np.ndarray,
                 reasons: list[str]) -> dict[str, np.ndarray]:
        p = self.prefix
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(cnt > 0, nll / np.maximum(cnt, 1), np.nan)
            loss = mean[:, RESP]
            out: dict[str, np.ndarray] = {
                f"{p}_loss": loss, f"{p}_ppl": np.exp(loss), f"{p}_prompt_ppl": np.exp(mean[:, PROMPT]),
                f"{p}_entropy": np.where(cnt[:, RESP] > 0, ent[:, RESP] / np.maximum(cnt[:, RESP], 1), np.nan),
            }
            if self.ifd:
                alone = mean[:, RESP_ALONE]
                out[f"{p}_loss_noprompt"] = alone
                out[f"{p}_ifd"] = loss / alone                 # Cherry LLM: loss ratio
                out[f"{p}_ifd_ppl"] = np.exp(loss - alone)     # Superfiltering: perplexity ratio
        out[f"{p}_tokens"] = cnt[:, RESP].astype(np.int32)
        out[f"{p}_truncated"] = truncated
        out[f"{p}_loss_reason"] = B.reasons_array(reasons)
        return out
