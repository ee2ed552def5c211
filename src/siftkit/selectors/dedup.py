"""``dedup``: exact duplicates by normalised-text hash (the ``exact_hash`` signal).

``keep="first"`` keeps the earliest record of each group in pool order; ``keep="longest"`` keeps the one
with the largest ``length`` column (default ``chars_total``), ties to the earliest. ``details`` reports the
number of groups and, with ``report_groups``, the groups themselves (lists of pool rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..registry import register_selector
from .base import SelectionContext, Selector, StepResult


@register_selector("dedup")
class ExactDedup(Selector):
    role = "dedup"

    def __init__(self, keep: str = "first", key: str = "exact_hash", length: str = "chars_total",
                 report_groups: bool = False):
        if keep not in ("first", "longest"):
            raise ConfigError(f"dedup: keep must be 'first' or 'longest', not {keep!r}")
        self.keep, self.key, self.length, self.report_groups = keep, key, length, bool(report_groups)

    def needs(self) -> list[str]:
        return [self.key] + ([self.length] if self.keep == "longest" else [])

    def config(self) -> dict[str, Any]:
        return {"keep": self.keep, "key": self.key} | ({"length": self.length} if self.keep == "longest" else {})

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        h = ctx.column(self.key)[candidates]
        if self.keep == "first":
            order = np.arange(len(candidates))
        else:
            ln = ctx.column(self.length)[candidates].astype(np.float64)
            order = np.lexsort((np.arange(len(candidates)), -np.nan_to_num(ln, nan=-np.inf)))
        # np.unique on the reordered keys returns the first occurrence in that order = the one to keep.
        _, first = np.unique(h[order], return_index=True)
        keep_pos = np.sort(order[first])
        kept = candidates[keep_pos]
        n_dup = len(candidates) - len(kept)
        details: dict[str, Any] = {"duplicate_groups": 0}
        if n_dup:
            _, inv, counts = np.unique(h, return_inverse=True, return_counts=True)
            details["duplicate_groups"] = int((counts > 1).sum())
            if self.report_groups:
                multi = np.flatnonzero(counts > 1)
                pos = {int(g): [] for g in multi}
                for i, g in enumerate(inv.tolist()):
                    if g in pos:
                        pos[g].append(int(candidates[i]))
                details["groups"] = list(pos.values())
        return StepResult(kept, dropped={"exact_duplicate": n_dup} if n_dup else {}, details=details)
