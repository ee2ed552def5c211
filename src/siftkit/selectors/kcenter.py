"""``k-center``: greedy farthest-first traversal (DiverseEvol's k-center greedy).

Repeatedly add the candidate farthest (Euclidean; on L2-normalised embeddings by default, i.e. cosine
geometry) from everything selected so far, starting from an optional initial set (``initial``: a boolean
column marking pool rows already selected, e.g. an earlier round) or from one random candidate.

Exact, with O(N) state: one "distance to the nearest selected point" vector plus each point's nearest
centre. A new centre c can only lower the distance of a point x assigned to centre a if
d(a, c) < 2 * d(x, a) (triangle inequality), so whole groups whose radius is below d(a, c) / 2 are skipped;
late picks touch a small fraction of the pool. The output order is the pick order (a coverage ranking).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.vectors import normalize_spec, rows_f32
from .base import SelectionContext, Selector, StepResult


def _dist(x: np.ndarray, sq: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Euclidean distances from the rows of ``x`` (squared norms ``sq``) to the vector ``c``."""
    d2 = sq + np.float32(c @ c) - 2.0 * (x @ c)
    return np.sqrt(np.maximum(d2, 0.0, out=d2))


def k_center_greedy(x: np.ndarray, budget: int, first: int | None = None, initial: np.ndarray | None = None,
                    show_progress: bool = False) -> np.ndarray:
    """Pick ``budget`` rows of ``x`` (float32) farthest-first. ``initial`` (k x d) are already-selected
    points; without it the walk starts at row ``first``. Returns positions in pick order."""
    n = len(x)
    budget = min(budget, n)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    sq = np.einsum("ij,ij->i", x, x)
    cap = budget + (0 if initial is None else len(initial))
    centers = np.empty((cap, x.shape[1]), dtype=np.float32)
    radius = np.zeros(cap, dtype=np.float64)
    members: list[np.ndarray] = []
    picks: list[int] = []
    if initial is not None and len(initial):
        import faiss

        initial = np.ascontiguousarray(initial, dtype=np.float32)
        index = faiss.IndexFlatL2(initial.shape[1])
        index.add(initial)
        dmin = np.empty(n, dtype=np.float32)
        assign = np.empty(n, dtype=np.int64)
        for s in range(0, n, 65536):
            d2, ids = index.search(np.ascontiguousarray(x[s:s + 65536]), 1)
            dmin[s:s + 65536] = np.sqrt(np.maximum(d2[:, 0], 0))
            assign[s:s + 65536] = ids[:, 0]
        m = len(initial)
        centers[:m] = initial
        order = np.argsort(assign, kind="stable")
        bounds = np.searchsorted(assign[order], np.arange(m + 1))
        for g in range(m):
            mem = order[bounds[g]:bounds[g + 1]]
            members.append(mem)
            radius[g] = float(dmin[mem].max()) if len(mem) else 0.0
    else:
        if first is None:
            first = 0
        c = x[first]
        dmin = _dist(x, sq, c)
        centers[0] = c
        dmin[first] = -1.0
        members.append(np.flatnonzero(dmin >= 0))
        radius[0] = float(dmin.max())
        picks.append(int(first))
        m = 1
    with progress.bar("k-center", total=budget if show_progress else None) as bar:
        bar.update(len(picks))
        while len(picks) < budget:
            j = int(np.argmax(dmin))
            c = x[j].copy()
            dmin[j] = -1.0  # selected: never picked again, never moved
            picks.append(j)
            dc = np.sqrt(np.maximum(((centers[:m] - c) ** 2).sum(axis=1), 0.0))
            check = np.flatnonzero(dc <= 2.0 * radius[:m] * (1 + 1e-6) + 1e-7)
            moved_parts: list[np.ndarray] = []
            for g in check.tolist():
                mem = members[g]
                if not len(mem):
                    continue
                d = _dist(x[mem], sq[mem], c)
                move = d < dmin[mem]
                if move.any():
                    moved = mem[move]
                    dmin[moved] = d[move]
                    moved_parts.append(moved)
                    keep = mem[~move]
                    members[g] = keep
                    radius[g] = float(dmin[keep].max()) if len(keep) else 0.0
            moved_all = np.concatenate(moved_parts) if moved_parts else np.zeros(0, dtype=np.int64)
            centers[m] = c
            members.append(moved_all)
            radius[m] = float(dmin[moved_all].max()) if len(moved_all) else 0.0
            m += 1
            bar.update(1)
    return np.asarray(picks, dtype=np.int64)


@register_selector("k-center")
class KCenterSelect(Selector):
    role = "select"

    def __init__(self, embedding: dict[str, Any] | str | None = None, initial: str | None = None,
                 normalize: bool = True):
        self.embedding, self.initial, self.normalize = normalize_spec(embedding), initial, bool(normalize)

    def needs(self) -> list[str]:
        return [self.initial] if self.initial else []

    def config(self) -> dict[str, Any]:
        return {"embedding": self.embedding, "initial": self.initial, "normalize": self.normalize}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("k-center is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        vectors = ctx.embeddings(self.embedding)
        x = rows_f32(vectors, candidates, normalize=self.normalize)
        init = None
        details: dict[str, Any] = {}
        if self.initial:
            flag = np.asarray(ctx.column(self.initial))
            if flag.dtype == object:
                raise ConfigError(f"k-center: initial column {self.initial!r} must be boolean or 0/1")
            rows = np.flatnonzero(np.nan_to_num(flag.astype(np.float64)) != 0)
            details["initial"] = int(len(rows))
            if len(rows):
                init = rows_f32(vectors, rows, normalize=self.normalize)
        first = None if init is not None else int(ctx.rng("k-center").integers(len(candidates))) \
            if len(candidates) else None
        picks = k_center_greedy(x, budget, first=first, initial=init, show_progress=True)
        kept = candidates[picks]
        return StepResult(kept=kept, dropped={"over_budget": int(len(candidates) - len(kept))}, details=details)
