"""``top`` / ``bottom``: the k records with the highest / lowest value of a signal column.

Ties are broken by pool order (stable sort), so the result is deterministic. Records whose value is NaN
are never chosen (they are reported as ``missing_value``); use a ``filter`` first to make that explicit.
``min_value`` / ``max_value`` (optional) keep only records whose value is within them (the others are
reported as ``below_min`` / ``above_max``), e.g. AlpaGasus's "judge score >= 4.5, then the budget by score".
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

    def __init__(self, by: str, min_value: float | None = None, max_value: float | None = None):
        if not isinstance(by, str) or not by:
            raise ConfigError(f"{self.name}: 'by' must name a signal column")
        for k, v in (("min_value", min_value), ("max_value", max_value)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ConfigError(f"{self.name}: {k} must be a number, got {v!r}")
        self.by = by
        self.min_value = None if min_value is None else float(min_value)
        self.max_value = None if max_value is None else float(max_value)

    def needs(self) -> list[str]:
        return [self.by]

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"by": self.by}
        if self.min_value is not None:
            cfg["min_value"] = self.min_value
        if self.max_value is not None:
            cfg["max_value"] = self.max_value
        return cfg

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        vals = ctx.column(self.by)[candidates]
        if vals.dtype == object:
            raise ConfigError(f"{self.name}: column {self.by!r} is text; rank by a numeric signal")
        vals = vals.astype(np.float64)
        dropped: dict[str, int] = {}
        nan = np.isnan(vals)
        if nan.any():
            dropped["missing_value"] = int(nan.sum())
        out = np.zeros(len(vals), dtype=bool)
        if self.min_value is not None:
            out |= ~nan & (vals < self.min_value)
            if (n := int((~nan & (vals < self.min_value)).sum())):
                dropped["below_min"] = n
        if self.max_value is not None:
            hi = ~nan & (vals > self.max_value)
            out |= hi
            if (n := int(hi.sum())):
                dropped["above_max"] = n
        vals = np.where(out, np.nan, vals)     # out of range ranks like a missing value: never taken
        order = rank(vals, self.descending)
        valid = int((~np.isnan(vals)).sum())
        k = len(candidates) if budget is None else min(budget, len(candidates))
        take = order[: min(k, valid)]
        return StepResult(candidates[take], dropped=dropped)


@register_selector("bottom")
class BottomSelector(TopSelector):
    """Take the ``budget`` records with the lowest ``by``."""

    descending = False
