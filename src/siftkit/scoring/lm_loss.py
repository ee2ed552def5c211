"""``lm_loss``: response NLL/perplexity given the prompt, prompt perplexity, response NLL without the
prompt, mean token entropy and IFD (both public variants), from one engine pass per record.

Conditions (METHODS.md notation, ``x`` = turns before the last assistant turn, ``y`` = that turn):

- **A** ``render(x + y)``, tokenised as a whole: tokens of ``y`` give ``loss`` = s(y|x), ``entropy``; the
  prompt tokens give ``prompt_ppl`` (causal, so the same forward pass serves both): ``prompt_ppl="content"``
  (default) the tokens of every content in ``x``, ``"whole"`` every token of the templated prompt before
  ``y`` (template text included, from the second token on: Cherry's definition).
- **B** gives ``loss_noprompt`` = s(y). ``ifd_tokens="same"`` (default): B is the assistant header followed by
  *the same token ids of y as scored in A*, so both conditions score identical tokens. The header text is
  adjusted at the boundary so that B reads exactly header + y: a whitespace-led first token (" The" after
  "Assistant: ") takes the header's trailing whitespace, and content characters inside a straddling template
  token (":-" after "...:") are appended to the header. When the header tokenises to nothing (an empty header,
  no BOS), y[0] cannot be predicted in B: it is kept in B as unscored context and left unscored in A too
  (both score y[1:]). ``ifd_tokens="reference"``: the published codes' rule (Cherry, Superfiltering, the study):
  each condition is tokenised as a whole and scored from ``len(encode(text before y))`` to the end of y; B is
  the header text + y (with an empty header: y alone, y[0] unscored, Superfiltering's condition B), at most as
  many tokens as A scores.

Which tokens are y's (``ifd_tokens="same"``): ``templates.content_mask`` (a token straddling template text and
content is content only when its template characters are whitespace).

Multi-turn: ``turns="last"`` (default) scores the last assistant turn given everything before it (turns
after it are ignored); ``turns="all"`` scores every assistant turn given its history (token-weighted means
over all assistant tokens; B scores each assistant turn alone).

Truncation (``max_length`` tokens, capped by the model's context): ``truncation="right"`` cuts A at
``max_length`` (Cherry's behaviour); the response tokens that remain are the scored set, and B scores
exactly those tokens (``ifd_tokens="reference"``: at most that many). ``truncation="error"`` gives NaN with
reason ``too_long`` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ..registry import register_signal
from . import base as B
from .nll import score
from .templates import (
    Rendered,
    TemplateError,
    assistant_header,
    check_template,
    content_mask,
    render,
    resolve,
    tokenize,
)

PROMPT, RESP, RESP_ALONE = 0, 1, 2


IFD_TOKENS = ("same", "reference")
PROMPT_PPL = ("content", "whole")


@register_signal("lm_loss")
class LMLoss(B.ModelSignal):
    version = "2"   # 2: boundary tokens (content_mask), B's header adjusted, y[0] kept as B's context

    def __init__(self, model: str, *, template: str = "auto", turns: str = "last", truncation: str = "right",
                 ifd: bool = True, prefix: str = "lm", backend: str = "transformers", ifd_tokens: str = "same",
                 prompt_ppl: str = "content", **kw: Any):
        super().__init__(model, **kw)
        if ifd_tokens not in IFD_TOKENS:
            raise ConfigError(f"lm_loss: ifd_tokens must be one of {', '.join(IFD_TOKENS)}, got {ifd_tokens!r}")
        if prompt_ppl not in PROMPT_PPL:
            raise ConfigError(f"lm_loss: prompt_ppl must be one of {', '.join(PROMPT_PPL)}, got {prompt_ppl!r}")
        self.ifd_tokens, self.prompt_ppl = ifd_tokens, prompt_ppl
        self._ctx: dict[tuple[str, bool], np.ndarray] = {}   # (text, special) -> token ids, per compute() call
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
                **({"backend": self.backend} if self.backend != "transformers" else {}),
                **({"ifd_tokens": self.ifd_tokens} if self.ifd_tokens != "same" else {}),
                **({"prompt_ppl": self.prompt_ppl} if self.prompt_ppl != "content" else {})}

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
        head = assistant_header(tmpl, tok) if self.ifd else None
        self._ctx = {}

        seqs: list[np.ndarray] = []
        classes: list[np.ndarray] = []
        owner: list[int] = []
        for r, msgs in enumerate(convs):
            built = self._build(msgs, int(last[r]), tmpl, tok, max_len, head)
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
               head: Rendered | None) -> str | tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
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
        text = rendered.text
        cls = np.full(len(ids), -1, dtype=np.int64)
        if self.prompt_ppl == "whole":
            # every token before the last scored turn's first token (the whole templated prompt)
            c0 = rendered.spans[resp_turns[-1]][0]
            touch = np.flatnonzero((offs[:, 1] > c0) & (offs[:, 1] > offs[:, 0]))
            cls[1: int(touch[0]) if len(touch) else len(ids)] = PROMPT
        else:
            for j, span in enumerate(rendered.spans):
                if j in resp_turns:
                    continue
                if self.turns == "last" or msgs[j]["role"] != "assistant":
                    cls[content_mask(offs, span, text)] = PROMPT
        turn_masks = []
        for j in resp_turns:
            span = rendered.spans[j]
            if self.ifd_tokens == "reference":   # the codes' rule: from len(encode(text before y)) to y's end
                m = np.zeros(len(ids), dtype=bool)
                m[len(self._context(text[: span[0]], rendered.special, tok)):] = True
                m &= (offs[:, 0] < span[1]) & (offs[:, 1] > offs[:, 0])
            else:
                m = content_mask(offs, span, text)
            m[0] = False                     # token 0 has no prediction
            cls[m] = RESP
            turn_masks.append((j, m))
        was_cut = len(ids) > max_len
        if was_cut:
            if self.truncation == "error":
                return B.TOO_LONG
            ids, cls = ids[:max_len], cls[:max_len]
            turn_masks = [(j, m[:max_len]) for j, m in turn_masks]
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for j, m in turn_masks:
            if head is None or not m.any():
                continue
            pos = np.flatnonzero(m)
            if self.ifd_tokens == "reference":
                b = self._condition_b_reference(head, msgs[j]["content"], len(pos), tok, max_len)
            else:
                b = self._condition_b_same(head, text, rendered.spans[j][0], ids, offs, pos, cls, tok, max_len)
            if b is not None:
                out.append(b)
        if not (cls == RESP).any():
            return B.TOO_LONG
        return [(ids, cls)] + out, was_cut

    def _context(self, text: str, special: bool, tok: Any) -> np.ndarray:
        got = self._ctx.get((text, special))
        if got is None:
            got = self._ctx[(text, special)] = tokenize(Rendered(text, [], special), tok)[0]
        return got

    def _condition_b_same(self, head: Rendered, text: str, c0: int, ids: np.ndarray, offs: np.ndarray,
                          pos: np.ndarray, cls: np.ndarray, tok: Any, max_len: int
                          ) -> tuple[np.ndarray, np.ndarray] | None:
        """B = header (adjusted at the boundary) + A's scored ids; unscorable or cut tokens leave A's set too."""
        ctx = head.text
        t0 = int(offs[pos[0], 0])
        if t0 < c0 and ctx.endswith(text[t0:c0]):     # " The" after "Assistant: ": the space is the token's
            ctx = ctx[: len(ctx) - (c0 - t0)]
        elif t0 > c0:                                 # content characters inside a template token (":-")
            ctx = ctx + text[c0:t0]
        ctx_ids = self._context(ctx, head.special, tok)
        if not len(ctx_ids):                          # nothing predicts y[0] in B: it becomes B's context
            ctx_ids = ids[pos[:1]]
            cls[pos[0]] = -1
            pos = pos[1:]
        room = max_len - len(ctx_ids)
        keep = pos[: max(room, 0)]
        cls[pos[len(keep):]] = -1                     # score the same tokens in A and B
        if not len(keep):
            return None
        alone = np.concatenate([ctx_ids, ids[keep]])
        acls = np.concatenate([np.full(len(ctx_ids), -1, np.int64), np.full(len(keep), RESP_ALONE, np.int64)])
        return alone, acls

    def _condition_b_reference(self, head: Rendered, content: str, n_a: int, tok: Any, max_len: int
                               ) -> tuple[np.ndarray, np.ndarray] | None:
        """B = header text + y tokenised as a whole, scored from len(encode(header)) on (never token 0), at most
        ``n_a`` tokens: the published codes' condition B."""
        try:
            bids = tokenize(Rendered(head.text + content, [], head.special), tok)[0]
        except (ValueError, TypeError, RuntimeError, OverflowError):
            return None
        start = max(len(self._context(head.text, head.special, tok)), 1)
        end = min(len(bids), start + n_a, max_len)
        if end <= start:
            return None
        acls = np.full(end, -1, np.int64)
        acls[start:] = RESP_ALONE
        return bids[:end], acls

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
