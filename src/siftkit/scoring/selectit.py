"""``selectit``: SelectIT (Liu et al., 2024) self-reflection scores from rating prompts, no generation.

For each of ``k`` paraphrased rating prompts (default 5, digits 1-5) one forward pass reads the next-token
logits of the digit tokens (ids resolved from the tokenizer) and renormalises them over the 5 digits.

- token level (prompt k): ``s_k = argmax rating x mean_{i != top}(p_top - p_i)``; column ``selectit_token``
  is ``s_0`` (the first prompt) of the first model;
- sentence level: ``mean_k s_k / (1 + alpha * std_k s_k)`` (alpha = 0.2), column ``selectit_sentence``
  (first model);
- model level: sum over ``models`` of the sentence-level scores weighted by parameter count (weights sum
  to 1), column ``selectit_model`` (equals the sentence level with one model).

Segments: the instruction is the query segment (all turns before the last assistant turn, joined with a
blank line) and the response is the last assistant turn. Prompts are truncated as described in
``scoring.rating`` (fields cut, instruction text kept intact).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ..registry import register_signal
from ..signals.segments import flatten
from . import base as B
from . import rating as R

# siftkit's own paraphrases of a 1-5 rating request (the method needs k paraphrases; wording is free).
PROMPTS = (
    ("Rate how well the response answers the instruction, from 1 (very poor) to 5 (excellent).\n"
     "Instruction: {instruction}\nResponse: {response}\nRating (1-5): "),
    ("On a scale of 1 to 5, how good is this answer to the request?\n"
     "Request: {instruction}\nAnswer: {response}\nScore: "),
    ("Evaluate the quality of the reply below. Give a single number from 1 (worst) to 5 (best).\n"
     "Question: {instruction}\nReply: {response}\nQuality score: "),
    ("You are a strict grader. Read the task and the submitted response, then grade it 1-5.\n"
     "Task: {instruction}\nSubmitted response: {response}\nGrade: "),
    ("How helpful, correct and complete is the response? Answer with 1, 2, 3, 4 or 5.\n"
     "Instruction:\n{instruction}\nResponse:\n{response}\nAnswer: "),
)
DIGITS = range(1, 6)


@register_signal("selectit")
class SelectIT(B.ModelSignal):
    def __init__(self, model: str | None = None, *, models: list[str] | None = None,
                 prompts: list[str] | tuple[str, ...] = PROMPTS, alpha: float = 0.2, mode: str = "raw", **kw: Any):
        if models is None:
            models = [model] if model else []
        elif model:
            raise ConfigError("selectit: give either 'model' or 'models', not both")
        if not models or not all(isinstance(m, str) and m for m in models):
            raise ConfigError("selectit: needs 'model' (or 'models': a list of models of different sizes)")
        super().__init__(models[0], **kw)
        if mode not in R.MODES:
            raise ConfigError(f"selectit: mode must be one of {R.MODES}, got {mode!r}")
        if len(prompts) < 2:
            raise ConfigError("selectit: needs at least 2 rating prompts (the sentence level uses their spread)")
        for p in prompts:
            R.check_format(p, ("instruction", "response"), "selectit prompts")
        self.models, self.prompts, self.alpha, self.mode = list(models), list(prompts), float(alpha), mode

    def config(self) -> dict[str, Any]:
        cfg = self.model_config()
        cfg.pop("model")
        return {**cfg, "models": self.models, "prompts": self.prompts, "alpha": self.alpha, "mode": self.mode}

    def columns(self) -> dict[str, pa.DataType]:
        return {"selectit_token": pa.float64(), "selectit_sentence": pa.float64(),
                "selectit_model": pa.float64(), "selectit_reason": pa.string()}

    def setup(self) -> None:
        self._models = [self.load(m) for m in self.models]
        self._lm = self._models[0]

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        if self._lm is None or not getattr(self, "_models", None):
            self.setup()
        fb = flatten(batch)
        query, resp = fb.texts("query"), fb.texts("response")
        n = fb.n
        reasons = [B.OK] * n
        for r in range(n):
            if fb.last_assistant[r] < 0:
                reasons[r] = B.NO_RESPONSE
            elif not resp[r].strip():
                reasons[r] = B.EMPTY_RESPONSE
            elif not query[r].strip():
                reasons[r] = B.EMPTY_PROMPT
        todo = [r for r in range(n) if reasons[r] == B.OK]
        fields = [{"instruction": query[r], "response": resp[r]} for r in todo]
        token = np.full(n, np.nan)
        sentences = np.full((len(self._models), n), np.nan)
        for m, lm in enumerate(self._models):
            tok_k = self._token_level(lm, fields)                    # (len(todo), k)
            if m == 0:
                token[todo] = tok_k[:, 0]
            with np.errstate(invalid="ignore"):
                sentences[m, todo] = tok_k.mean(1) / (1.0 + self.alpha * tok_k.std(1))
        sizes = np.asarray([lm.n_params for lm in self._models], dtype=np.float64)
        model_level = (sizes / sizes.sum()) @ sentences
        for r in todo:
            if not np.isfinite(sentences[0, r]):
                reasons[r] = B.TOO_LONG
        return {"selectit_token": token, "selectit_sentence": sentences[0], "selectit_model": model_level,
                "selectit_reason": B.reasons_array(reasons)}

    def _token_level(self, lm: Any, fields: list[dict[str, str]]) -> np.ndarray:
        digits = B.digit_ids(lm.tokenizer, DIGITS)
        max_len = self.context_length(lm)
        out = np.full((len(fields), len(self.prompts)), np.nan)
        if not fields:
            return out
        for k, fmt in enumerate(self.prompts):
            prompts = [R.build(fmt, f, lm.tokenizer, self.mode, max_len) for f in fields]
            p = R.softmax(R.digit_logits(lm, prompts, digits, self.effective_token_budget(lm), self.max_batch))
            out[:, k] = token_level(p)
        return out


def token_level(p: np.ndarray) -> np.ndarray:
    """SelectIT token-level score from renormalised rating probabilities p (n, K): rating x mean gap."""
    top = np.nanargmax(np.nan_to_num(p, nan=-1.0), axis=1)
    p_top = p[np.arange(len(p)), top]
    gap = (p_top[:, None] - p).sum(1) / (p.shape[1] - 1)
    return (top + 1) * gap
