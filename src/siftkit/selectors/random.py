"""``random``: a uniform sample without replacement, seeded (the study's hardest-to-beat baseline)."""

from __future__ import annotations

import numpy as np

from ..registry import register_selector
from .base import SelectionContext, Selector, StepResult


@register_selector("random")
class RandomSelector(Selector):
    """Uniform random sample of ``budget`` candidates. Deterministic for a seed and candidate set."""

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        k = len(candidates) if budget is None else min(budget, len(candidates))
        rng = ctx.rng("random")
        chosen = rng.choice(len(candidates), size=k, replace=False) if k < len(candidates) else rng.permutation(k)
        return StepResult(candidates[chosen])
