"""``filter``: keep the candidates for which an expression is true (see ``selectors.expr``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register_selector
from .base import SelectionContext, Selector, StepResult
from .expr import Expression


@register_selector("filter")
class FilterSelector(Selector):
    """``filter(expr="tokens_response >= 20 and zlib_ratio > 0.2")``; dropped records are counted by
    the expression text."""

    role = "filter"

    def __init__(self, expr: str):
        self.expr = Expression(expr)

    def needs(self) -> list[str]:
        return [n for n in self.expr.names if n not in ("source", "file", "row", "id", "line")]

    def check_columns(self, kinds: dict[str, str]) -> None:
        self.expr.check_columns(kinds)

    def config(self) -> dict[str, Any]:
        return {"expr": self.expr.text}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        mask = self.expr.evaluate(lambda name: ctx.column(name)[candidates], len(candidates))
        kept = candidates[mask]
        n_drop = len(candidates) - len(kept)
        return StepResult(kept, dropped={f"filter: {self.expr.text}": n_drop} if n_drop else {})
