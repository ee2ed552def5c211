"""``stratified``: split the budget across the values of a column (default ``source``).

``quota="proportional"`` keeps the pool's mix; ``quota="equal"`` gives each stratum the same share. Quota a
stratum cannot use (too few records) is redistributed, so the budget is met exactly whenever the pool
holds enough records. Inside a stratum: a seeded random sample (default) or the top records by a
signal (``by="tokens_total"``: the study's "longest per source").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..registry import register_selector
from .base import SelectionContext, Selector, StepResult
from .quota import allocate
from .top import rank


@register_selector("stratified")
class StratifiedSelector(Selector):
    def __init__(self, column: str = "source", quota: str = "proportional", by: str | None = None,
                 ascending: bool = False):
        if quota not in ("proportional", "equal"):
            raise ConfigError(f"stratified: quota must be 'proportional' or 'equal', not {quota!r}")
        self.column, self.quota, self.by, self.ascending = column, quota, by, bool(ascending)

    def needs(self) -> list[str]:
        return [c for c in (self.column, self.by) if c and c not in ("source", "file")]

    def config(self) -> dict[str, Any]:
        return {"column": self.column, "quota": self.quota, "by": self.by, "ascending": self.ascending}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("stratified needs a budget")
        keys = ctx.column(self.column)[candidates]
        uniq, inverse = np.unique(keys.astype(str) if keys.dtype == object else keys, return_inverse=True)
        groups = [np.flatnonzero(inverse == g) for g in range(len(uniq))]  # positions, in pool order
        if self.by is not None:
            vals = ctx.column(self.by)[candidates].astype(np.float64)
            orders = [g[rank(vals[g], not self.ascending)] for g in groups]
            orders = [o[~np.isnan(vals[o])] for o in orders]
        else:
            rng = ctx.rng("stratified")
            orders = [g[rng.permutation(len(g))] for g in groups]
        cap = np.array([len(o) for o in orders])
        weights = np.array([len(g) for g in groups], float) if self.quota == "proportional" else np.ones(len(cap))
        q = allocate(cap, budget, weights)
        kept = np.concatenate([o[:k] for o, k in zip(orders, q)]) if len(q) else np.empty(0, np.int64)
        quotas = {str(u): int(k) for u, k in zip(uniq.tolist(), q.tolist())}
        dropped = {}
        n_nan = int(sum(len(g) for g in groups) - cap.sum())
        if n_nan:
            dropped["missing_value"] = n_nan
        return StepResult(candidates[np.sort(kept)], dropped=dropped, details={"quotas": quotas})
