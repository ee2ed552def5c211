"""``instag-coverage``: InsTag's complexity-first diverse sampling over per-query tag sets.

Tags come from a column (default ``instag_tags``, written by the ``instag`` tagger signal) holding, per
record, a JSON list of tag strings (a string column) or a list<string> column. Nulls mean "no tags" (e.g.
a tagger failure); a non-null value that is not a list of strings is an error naming the record.

Complexity = number of distinct tags. Candidates are walked by descending complexity (ties in pool order);
a record is taken when it brings at least one tag not yet covered in the current pass. When a pass ends
before the budget, the covered set is reset and a new pass walks the records not yet taken. Records
without tags can never bring a tag: they are used, in pool order, only when the tagged ones run out.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..registry import register_selector
from .base import SelectionContext, Selector, StepResult


def tag_lists(values: list[Any], ids: list[str] | None = None) -> list[list[str] | None]:
    out: list[list[str] | None] = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
            continue
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                v = None
        if not isinstance(v, (list, tuple, np.ndarray)) or not all(isinstance(t, str) for t in v):
            who = ids[i] if ids is not None else i
            raise ConfigError(f"instag-coverage: record {who!r}: tags must be a JSON list of strings, "
                              f"got {str(values[i])[:80]!r}")
        out.append(list(dict.fromkeys(v)))
    return out


def coverage_select(tags: list[list[str] | None], budget: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Positions into ``tags`` in selection order, and details (passes, tags covered, untagged used)."""
    vocab: dict[str, int] = {}
    coded = [list(dict.fromkeys(vocab.setdefault(t, len(vocab)) for t in ts)) if ts else [] for ts in tags]
    count = np.asarray([len(c) for c in coded])
    order = np.argsort(-count, kind="stable")
    order = order[count[order] > 0].tolist()
    budget = min(budget, len(tags))
    picks: list[int] = []
    passes = 0
    while order and len(picks) < budget:
        passes += 1
        covered = [False] * len(vocab)     # plain lists: tag sets are short, numpy indexing costs more
        rest: list[int] = []
        for i in order:
            c = coded[i]
            if len(picks) < budget and not all(covered[t] for t in c):
                picks.append(i)
                for t in c:
                    covered[t] = True
            else:
                rest.append(i)
        order = rest
    untagged = 0
    if len(picks) < budget:
        fill = np.flatnonzero(count == 0)[:budget - len(picks)].tolist()
        untagged = len(fill)
        picks += fill
    return np.asarray(picks, dtype=np.int64), {"passes": passes, "distinct_tags": len(vocab),
                                               "untagged_used": untagged}


@register_selector("instag-coverage")
class InsTagCoverage(Selector):
    role = "select"

    def __init__(self, tags: str = "instag_tags"):
        if not isinstance(tags, str) or not tags:
            raise ConfigError("instag-coverage: 'tags' must name a column of tag lists")
        self.tags = tags

    def needs(self) -> list[str]:
        return [self.tags]

    def config(self) -> dict[str, Any]:
        return {"tags": self.tags}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("instag-coverage is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        table = ctx.signals if self.tags in ctx.signals.column_names else ctx.pool
        if self.tags not in table.column_names:
            ctx.column(self.tags)      # raises the standard "unknown column" error
        values = table.column(self.tags).take(candidates).to_pylist()
        ids = ctx.pool.column("id").take(candidates).to_pylist() if "id" in ctx.pool.column_names else None
        pos, details = coverage_select(tag_lists(values, ids), budget)
        kept = candidates[pos]
        return StepResult(kept=kept, dropped={"over_budget": int(len(candidates) - len(kept))}, details=details)
