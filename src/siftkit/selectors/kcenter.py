"""``k-center``: greedy farthest-first traversal (DiverseEvol's k-center greedy).

Repeatedly add the candidate farthest (Euclidean; on L2-normalised embeddings by default, i.e. cosine
geometry) from everything selected so far, starting from an optional initial set (``initial``: a boolean
column marking pool rows already selected, e.g. an earlier round) or from one random candidate.

Exact, with O(N) state: the length-N "distance to the nearest selected point" vector (plus each point's
nearest centre, for triangle-inequality pruning). The naive update
touches all N points at every pick (a memory-bound matrix-vector product per pick). Here the vector is
kept *stale* between refreshes: the next pick is searched among the T points with the largest stale
distances (kept exactly up to date, T x d per pick); since distances only shrink, every other point is at
most the T-th stale value, so the best candidate is the true farthest point whenever it is not below that
bound. When it is, the centres picked since the last refresh are applied to all N points at once (one
matrix-matrix product, compute-bound, skipping every point x whose nearest centre a has
d(a, c) >= 2 * dmin(x) for all new centres c) and the candidate set is rebuilt (T doubles when refreshes
come too often). Same picks as the naive loop; the output order is the pick order (a coverage ranking).

The candidates' rows are one float32 copy when it fits ``SIFTKIT_VECTOR_MEMORY`` (4 GiB). Beyond, they
stay in the float16 memory-map (``signals.vectors.RowsF32``): every refresh re-reads and re-converts
the rows it updates, chunk by chunk, and the candidate set's T rows are converted once per refresh; the
state is then O(N) scalars (float32 distances, squared norms and row norms, int64 nearest centres) plus the
centres, with the same picks. The cost of that re-reading is measured in docs/diversity.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.vectors import RowsF32, candidate_rows, normalize_spec, rows_f32
from .base import SelectionContext, Selector, StepResult


def _dist(x: np.ndarray, sq: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Euclidean distances from the rows of ``x`` (squared norms ``sq``) to the rows of ``c`` (n x m)."""
    d2 = sq[:, None] + np.einsum("ij,ij->i", c, c)[None, :] - 2.0 * (x @ c.T)
    return np.sqrt(np.maximum(d2, 0.0, out=d2))


def _sq_norms(x: np.ndarray | RowsF32) -> np.ndarray:
    """Squared norms of the rows (float32); a RowsF32 view is read chunk by chunk (same bytes per row)."""
    if isinstance(x, np.ndarray):
        return np.einsum("ij,ij->i", x, x)
    sq = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), x.chunk):
        b = x[s:s + x.chunk]
        sq[s:s + len(b)] = np.einsum("ij,ij->i", b, b)
        del b                                    # one block at a time
    return sq


class _Distances:
    """The length-N distance-to-nearest-centre vector, each point's nearest centre, and the centres.
    ``x`` is a float32 array or a RowsF32 view (then only the rows being updated are converted)."""

    def __init__(self, x: np.ndarray | RowsF32, capacity: int):
        self.x, self.sq = x, _sq_norms(x)
        self.dmin = np.full(len(x), np.inf, dtype=np.float32)
        self.assign = np.full(len(x), -1, dtype=np.int64)
        self.centers = np.empty((capacity, x.shape[1]), dtype=np.float32)
        self.k = 0

    def add(self, vecs: np.ndarray, chunk: int = 32768) -> None:
        """Apply new centres to every point that can get closer. A point x with nearest centre a can only
        get closer to a new centre c if d(a, c) < 2 * dmin(x) (triangle inequality): others are skipped."""
        p, k0 = len(vecs), self.k
        self.centers[k0:k0 + p] = vecs
        self.k += p
        ids = np.arange(k0, k0 + p)
        if k0:
            near = _dist(self.centers[:k0], np.einsum("ij,ij->i", self.centers[:k0], self.centers[:k0]),
                         vecs).min(axis=1)
            rows = np.flatnonzero(near[self.assign] < 2.0 * self.dmin * (1 + 1e-5) + 1e-6)
        else:
            rows = np.arange(len(self.x))
        for s in range(0, len(rows), chunk):
            r = rows[s:s + chunk]
            d = _dist(self.x[r], self.sq[r], vecs)
            j = d.argmin(axis=1)
            dj = d[np.arange(len(r)), j]
            better = dj < self.dmin[r]
            self.dmin[r[better]] = dj[better]
            self.assign[r[better]] = ids[j[better]]


def k_center_greedy(x: np.ndarray | RowsF32, budget: int, first: int | None = None,
                    initial: np.ndarray | None = None, cand_size: int = 1024, grow_below: int = 4,
                    show_progress: bool = False) -> np.ndarray:
    """Pick ``budget`` rows of ``x`` (float32 array, or a ``RowsF32`` view streamed from float16)
    farthest-first. ``initial`` (k x d) are already-selected points; without it the walk starts at row
    ``first`` (default 0). Returns positions in pick order."""
    n = len(x)
    budget = min(budget, n)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    if isinstance(x, RowsF32):
        x.cache_norms()                          # refreshes re-read rows: keep their norms (O(N) float32)
    else:
        x = np.ascontiguousarray(x, dtype=np.float32)
    state = _Distances(x, budget + (len(initial) if initial is not None else 0))
    sq, dmin = state.sq, state.dmin
    picks: list[int] = []
    if initial is not None and len(initial):
        state.add(np.ascontiguousarray(initial, dtype=np.float32))
    else:
        first = 0 if first is None else int(first)
        picks.append(first)
        state.add(x[first:first + 1])
    taken = np.zeros(n, dtype=bool)
    taken[picks] = True
    size = min(cand_size, n)
    with progress.bar("k-center", total=budget, show=show_progress) as bar:
        bar.update(len(picks))
        while len(picks) < budget:
            stale = np.where(taken, -np.inf, dmin)
            if size < n:
                cand = np.argpartition(-stale, size - 1)[:size]
                outside = np.ones(n, dtype=bool)
                outside[cand] = False
                bound = float(stale[outside].max())   # every non-candidate is at most this far
            else:
                cand, bound = np.arange(n), -np.inf
            cand = np.sort(cand)
            xc, sqc = x[cand], sq[cand]
            cval = stale[cand].astype(np.float64)
            new: list[int] = []
            while len(picks) < budget:
                j = int(np.argmax(cval))
                if cval[j] < bound or cval[j] == -np.inf:
                    break                            # a point outside the candidates may be farther
                g = int(cand[j])
                picks.append(g)
                new.append(g)
                taken[g] = True
                cval[j] = -np.inf
                np.minimum(cval, _dist(xc, sqc, x[g:g + 1])[:, 0], out=cval)
                bar.update(1)
            if new:
                state.add(x[new])
            if len(new) < grow_below and size < n:
                size = min(n, size * 2)              # refreshing too often: widen the candidate set
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
        x = candidate_rows(vectors, candidates, normalize=self.normalize)
        init = None
        details: dict[str, Any] = {}
        if self.initial:
            flag = np.asarray(ctx.column(self.initial))
            if flag.dtype == object:
                raise ConfigError(f"k-center: initial column {self.initial!r} must be boolean or 0/1")
            rows = np.flatnonzero(np.nan_to_num(flag.astype(np.float64)) != 0)
            details["initial"] = len(rows)
            if len(rows):
                init = rows_f32(vectors, rows, normalize=self.normalize)
        first = None if init is not None else int(ctx.rng("k-center").integers(len(candidates))) \
            if len(candidates) else None
        picks = k_center_greedy(x, budget, first=first, initial=init, show_progress=True)
        kept = candidates[picks]
        return StepResult(kept=kept, dropped={"over_budget": int(len(candidates) - len(kept))}, details=details)
