"""``ifd-filter``: drop samples whose instruction does not help predict the response (IFD > 1).

Cherry LLM / Superfiltering drop IFD > 1 (s(y|x) > s(y): a misaligned pair) before taking the highest IFD.
Reads an ``lm_loss`` column: ``lm_ifd`` (loss ratio, the default) or ``lm_ifd_ppl`` (perplexity ratio);
both are > 1 exactly when s(y|x) > s(y), so the filter keeps the same samples with either. Records without
a score (NaN, see ``lm_loss_reason``) are dropped unless ``keep_missing=True``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..registry import register_selector
from .base import SelectionContext, Selector, StepResult


@register_selector("ifd-filter")
class IFDFilter(Selector):
    role = "filter"

    def __init__(self, column: str = "lm_ifd", threshold: float = 1.0, keep_missing: bool = False):
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold) \
                or threshold <= 0:
            raise ConfigError(f"ifd-filter: threshold must be a positive number, got {threshold!r}")
        self.column, self.threshold, self.keep_missing = column, float(threshold), bool(keep_missing)

    def needs(self) -> list[str]:
        return [self.column]

    def config(self) -> dict[str, Any]:
        return {"column": self.column, "threshold": self.threshold, "keep_missing": self.keep_missing}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        v = np.asarray(ctx.column(self.column)[candidates], dtype=np.float64)
        missing = np.isnan(v)
        with np.errstate(invalid="ignore"):
            over = v > self.threshold
        keep = ~over & (~missing | self.keep_missing)
        dropped = {}
        if over.any():
            dropped[f"{self.column} > {self.threshold:g}"] = int(over.sum())
        if missing.any() and not self.keep_missing:
            dropped[f"{self.column} missing"] = int(missing.sum())
        return StepResult(candidates[keep], dropped=dropped,
                          details={"threshold": self.threshold, "over": int(over.sum()),
                                   "missing": int(missing.sum())})
