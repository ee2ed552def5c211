"""``deita``: DEITA complexity and quality scores (Liu et al., ICLR 2024) and the evol score.

For each (user, assistant) pair of a conversation (the assistant turn and the user turn closest before
it; pairs are scored without further history, as in DEITA), the complexity scorer rates the instruction
and the quality scorer rates instruction + response. Score = expected rating sum(s * p(s)) with p the
softmax over the logits of the digit tokens 1-6 (ids resolved from each scorer's tokenizer). Columns:
``deita_complexity`` / ``deita_quality``: mean over the pairs; ``deita_evol``: sum over pairs of
complexity x quality; ``deita_turns``: pairs scored. A record with no scorable pair is NaN with a reason;
there is no fallback score.

Scorers: any causal LM; by default DEITA's released ``hkust-nlp/deita-complexity-scorer`` and
``hkust-nlp/deita-quality-scorer`` (``model=`` uses one model for both).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ..registry import register_signal
from . import base as B
from . import rating as R

COMPLEXITY_SCORER = "hkust-nlp/deita-complexity-scorer"
QUALITY_SCORER = "hkust-nlp/deita-quality-scorer"
# The prompt formats DEITA's released scorers were trained on (needed for those models to work).
COMPLEXITY_PROMPT = ("You are a helpful assistant. Please identify the complexity score of the following user "
                     "query. \n##Query: {instruction}  \n##Complexity: ")
QUALITY_PROMPT = ("You are a helpful assistant. Please identify the quality score of the Response corresponding "
                  "to the Question. \n #Question#:\n{instruction}\n#Response#:\n{response} \n##Quality: ")
DIGITS = range(1, 7)


@register_signal("deita")
class Deita(B.ModelSignal):
    def __init__(self, model: str | None = None, *, complexity_model: str = COMPLEXITY_SCORER,
                 quality_model: str = QUALITY_SCORER, mode: str = "raw",
                 complexity_prompt: str = COMPLEXITY_PROMPT, quality_prompt: str = QUALITY_PROMPT, **kw: Any):
        self.complexity_model = model or complexity_model
        self.quality_model = model or quality_model
        super().__init__(self.quality_model, **kw)
        if mode not in R.MODES:
            raise ConfigError(f"deita: mode must be one of {R.MODES}, got {mode!r}")
        R.check_format(complexity_prompt, ("instruction",), "deita complexity_prompt")
        R.check_format(quality_prompt, ("instruction", "response"), "deita quality_prompt")
        self.mode, self.complexity_prompt, self.quality_prompt = mode, complexity_prompt, quality_prompt

    def config(self) -> dict[str, Any]:
        cfg = self.model_config()
        cfg.pop("model")
        return {**cfg, "complexity_model": self.complexity_model, "quality_model": self.quality_model,
                "mode": self.mode, "complexity_prompt": self.complexity_prompt,
                "quality_prompt": self.quality_prompt}

    def columns(self) -> dict[str, pa.DataType]:
        return {"deita_complexity": pa.float64(), "deita_quality": pa.float64(), "deita_evol": pa.float64(),
                "deita_turns": pa.int32(), "deita_truncated": pa.bool_(), "deita_reason": pa.string()}

    def setup(self) -> None:
        self._scorers = {"complexity": self.load(self.complexity_model), "quality": self.load(self.quality_model)}
        self._lm = self._scorers["quality"]

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        if self._lm is None or not getattr(self, "_scorers", None):
            self.setup()
        convs, _ = B.conversations(batch)
        n = len(convs)
        pairs, owner = [], []
        reasons = [B.OK] * n
        for r, msgs in enumerate(convs):
            got = _pairs(msgs)
            if not got:
                reasons[r] = B.NO_RESPONSE if not any(m["role"] == "assistant" for m in msgs) else B.EMPTY_RESPONSE
            pairs += got
            owner += [r] * len(got)
        own = np.asarray(owner, dtype=np.int64)
        comp, c_cut = self._score("complexity", self.complexity_prompt,
                                  [{"instruction": u} for u, _ in pairs])
        qual, q_cut = self._score("quality", self.quality_prompt,
                                  [{"instruction": u, "response": a} for u, a in pairs])
        ok = np.isfinite(comp) & np.isfinite(qual)
        cnt = np.bincount(own[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_c = np.where(cnt > 0, np.bincount(own[ok], comp[ok], minlength=n) / np.maximum(cnt, 1), np.nan)
            mean_q = np.where(cnt > 0, np.bincount(own[ok], qual[ok], minlength=n) / np.maximum(cnt, 1), np.nan)
            evol = np.where(cnt > 0, np.bincount(own[ok], comp[ok] * qual[ok], minlength=n), np.nan)
        truncated = np.bincount(own, (c_cut | q_cut).astype(np.float64), minlength=n) > 0 if len(own) \
            else np.zeros(n, dtype=bool)
        for r in range(n):
            if reasons[r] == B.OK and cnt[r] == 0:
                reasons[r] = B.TOO_LONG
        return {"deita_complexity": mean_c, "deita_quality": mean_q, "deita_evol": evol,
                "deita_turns": cnt.astype(np.int32), "deita_truncated": truncated,
                "deita_reason": B.reasons_array(reasons)}

    def _score(self, which: str, fmt: str, fields: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        lm = self._scorers[which]
        digits = B.digit_ids(lm.tokenizer, DIGITS)
        max_len = self.context_length(lm)
        prompts = [R.build(fmt, f, lm.tokenizer, self.mode, max_len) for f in fields]
        logits = R.digit_logits(lm, prompts, digits, self.effective_token_budget(lm), self.max_batch)
        expected = R.softmax(logits) @ np.arange(1, 7, dtype=np.float64)
        return expected, np.asarray([p.truncated for p in prompts], dtype=bool)


def _pairs(msgs: list[dict[str, str]]) -> list[tuple[str, str]]:
    """(user, assistant) pairs: each non-empty assistant turn with the closest non-empty user turn before it."""
    out, user = [], None
    for m in msgs:
        if m["role"] == "user" and m["content"].strip():
            user = m["content"]
        elif m["role"] == "assistant" and m["content"].strip() and user is not None:
            out.append((user, m["content"]))
            user = None
    return out
