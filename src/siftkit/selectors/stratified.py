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
        uniq, inverse = _strata(ctx, self.column, candidates)
        # positions of each stratum (sorted key order), in pool order
        by_group = np.argsort(inverse, kind="stable")
        groups = np.split(by_group, np.cumsum(np.bincount(inverse, minlength=len(uniq)))[:-1]) if len(uniq) else []
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


def _strata(ctx: SelectionContext, column: str, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of ``column`` over the candidates and each candidate's index into them
    (as ``np.unique(..., return_inverse=True)``); string columns are hashed in Arrow, not as Python objects."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = ctx.signals if column in ctx.signals.column_names else ctx.pool
    col = table.column(column) if column in table.column_names and column != "messages" else None
    if col is None or not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) or col.null_count:
        keys = ctx.column(column)[candidates]
        return np.unique(keys.astype(str) if keys.dtype == object else keys, return_inverse=True)
    enc = pc.dictionary_encode(col.take(pa.array(candidates, pa.int64()))).combine_chunks()
    values = np.asarray(enc.dictionary.to_pylist(), dtype=object).astype(str)
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return values[order], rank[enc.indices.to_numpy(zero_copy_only=False)]
