"""``top`` / ``bottom``: the k records with the highest / lowest value of a signal column.

Ties are broken by pool order (stable sort), so the result is deterministic. Records whose value is NaN
are never chosen (they are reported as ``missing_value``); use a ``filter`` first to make that explicit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..registry import register_selector
from .base import SelectionContext, Selector, StepResult


def rank(values: np.ndarray, descending: bool) -> np.ndarray:
    """Stable ranking of positions by value; NaNs last."""
    v = np.asarray(values, dtype=np.float64)
    key = np.where(np.isnan(v), np.inf, -v if descending else v)
    return np.argsort(key, kind="stable")


@register_selector("top")
class TopSelector(Selector):
    """Take the ``budget`` records with the highest ``by`` (e.g. ``by="tokens_response"`` = longest)."""

    descending = True

    def __init__(self, by: str):
        if not isinstance(by, str) or not by:
            raise ConfigError(f"{self.name}: 'by' must name a signal column")
        self.by = by

    def needs(self) -> list[str]:
        return [self.by]

    def config(self) -> dict[str, Any]:
        return {"by": self.by}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        vals = ctx.column(self.by)[candidates]
        if vals.dtype == object:
            raise ConfigError(f"{self.name}: column {self.by!r} is text; rank by a numeric signal")
        order = rank(vals, self.descending)
        valid = int((~np.isnan(vals.astype(np.float64))).sum())
        k = len(candidates) if budget is None else min(budget, len(candidates))
        take = order[: min(k, valid)]
        dropped = {"missing_value": len(candidates) - valid} if valid < len(candidates) else {}
        return StepResult(candidates[take], dropped=dropped)


@register_selector("bottom")
class BottomSelector(TopSelector):
    """Take the ``budget`` records with the lowest ``by``."""

    descending = False
