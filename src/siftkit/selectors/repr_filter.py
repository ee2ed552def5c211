"""``repr-filter``: DEITA's score-first, diversity-aware filter.

Walk the candidates by descending score; keep a candidate unless its cosine similarity to *any sample
already kept* exceeds ``threshold`` (default 0.9); stop at the budget. This is the original DEITA rule,
not the "nearest neighbour in the whole pool" misreading (which rejects far more).

Exact and batched: candidates are taken in blocks of ``block`` rows. A block is first compared with the
kept set (one faiss inner-product search, k=1, i.e. a blocked matrix product), then the survivors are
walked in order against each other using the block's own similarity matrix. Memory is O(block^2 +
kept x d); no N x N matrix is ever built. The candidates' rows are one float32 copy when it fits
``SIFTKIT_VECTOR_MEMORY`` (4 GiB); beyond, each block's rows are read from the float16 memory-map and
converted as the walk reaches them (``signals.vectors.candidate_rows``), with the same result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.vectors import candidate_rows, normalize_spec
from .base import SelectionContext, Selector, StepResult


def order_by_score(scores: np.ndarray | None, n: int, descending: bool = True) -> np.ndarray:
    """Positions 0..n-1 sorted by score (NaN last), ties kept in input order."""
    if scores is None:
        return np.arange(n)
    s = np.asarray(scores, dtype=np.float64)
    key = np.where(np.isnan(s), np.inf, -s if descending else s)
    return np.argsort(key, kind="stable")


class _KeptIndex:
    """Inner-product index over kept vectors (faiss when available, else blocked numpy)."""

    def __init__(self, dim: int, capacity: int):
        try:
            import faiss
            self.faiss: Any = faiss.IndexFlatIP(dim)
        except ImportError:
            self.faiss = None
            self.buf = np.empty((max(capacity, 1), dim), dtype=np.float32)
        self.n = 0

    def add(self, x: np.ndarray) -> None:
        if not len(x):
            return
        if self.faiss is not None:
            self.faiss.add(np.ascontiguousarray(x, dtype=np.float32))
        else:
            if self.n + len(x) > len(self.buf):
                self.buf = np.vstack([self.buf, np.empty((max(len(x), len(self.buf)), self.buf.shape[1]),
                                                         np.float32)])
            self.buf[self.n:self.n + len(x)] = x
        self.n += len(x)

    def max_sim(self, q: np.ndarray) -> np.ndarray:
        if self.n == 0:
            return np.full(len(q), -np.inf, dtype=np.float32)
        if self.faiss is not None:
            d, _ = self.faiss.search(np.ascontiguousarray(q, dtype=np.float32), 1)
            return d[:, 0]
        out = np.full(len(q), -np.inf, dtype=np.float32)
        for s in range(0, self.n, 16384):
            out = np.maximum(out, (q @ self.buf[s:min(self.n, s + 16384)].T).max(axis=1))
        return out


def greedy_threshold_filter(vectors: np.ndarray, order: np.ndarray, threshold: float,
                            budget: int | None = None, block: int = 2048,
                            show_progress: bool = False) -> tuple[np.ndarray, int]:
    """Walk ``order`` (row positions into ``vectors``, L2-normalised rows: an array or a
    ``signals.vectors.RowsF32`` view, indexed one block at a time); keep a row unless its cosine to
    an already-kept row is > ``threshold``. Returns (kept positions in walk order, number rejected)."""
    n = len(order)
    limit = n if budget is None else min(budget, n)
    index = _KeptIndex(vectors.shape[1], limit)
    kept: list[np.ndarray] = []
    n_kept = rejected = 0
    start = 0
    with progress.bar("repr-filter", total=n, show=show_progress) as bar:   # rows walked (kept: postfix)
        while start < n and n_kept < limit:
            # size blocks to what is still needed, so a nearly full selection does not scan far ahead
            size = min(block, n - start, max(64, 2 * (limit - n_kept)))
            pos = order[start:start + size]
            x = np.asarray(vectors[pos], dtype=np.float32)
            ok = index.max_sim(x) <= threshold
            cand = np.flatnonzero(ok)
            xs = x[cand]
            adj = (xs @ xs.T) > threshold
            alive = np.ones(len(cand), dtype=bool)
            take: list[int] = []
            for i in range(len(cand)):
                if not alive[i]:
                    continue
                take.append(i)
                if n_kept + len(take) == limit:
                    break
                alive[i + 1:] &= ~adj[i, i + 1:]
            last_walked = cand[take[-1]] if take and n_kept + len(take) == limit else size - 1
            # rows after the budget is met are not walked: they are neither kept nor rejected
            rejected_here = int(np.sum(~ok[:last_walked + 1])) + (
                int(np.sum(~alive[:np.searchsorted(cand, last_walked, side="right")])))
            take_arr = np.asarray(take, dtype=np.int64)
            index.add(xs[take_arr])
            kept.append(pos[cand[take_arr]])
            n_kept += len(take_arr)
            rejected += rejected_here
            start += size
            bar.update(size)
            bar.set_postfix_str(f"kept {n_kept:,}")
        bar.set(kept=n_kept, rejected=rejected)
    out = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return out.astype(np.int64), rejected


@register_selector("repr-filter")
class ReprFilter(Selector):
    role = "select"

    def __init__(self, by: str | None = None, threshold: float = 0.9, embedding: dict[str, Any] | str | None = None,
                 ascending: bool = False, fill: bool = True, block: int = 2048):
        if not -1.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"repr-filter: threshold must be a cosine similarity in [-1, 1], got {threshold}")
        if int(block) < 1:
            raise ConfigError(f"repr-filter: block must be >= 1, got {block}")
        self.by, self.threshold, self.ascending = by, float(threshold), bool(ascending)
        self.embedding, self.fill, self.block = normalize_spec(embedding), bool(fill), int(block)

    def needs(self) -> list[str]:
        return [self.by] if self.by else []

    def config(self) -> dict[str, Any]:
        return {"by": self.by, "threshold": self.threshold, "embedding": self.embedding,
                "ascending": self.ascending, "fill": self.fill}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        candidates = np.asarray(candidates, dtype=np.int64)
        scores = ctx.column(self.by)[candidates] if self.by else None
        order = order_by_score(scores, len(candidates), descending=not self.ascending)
        x = candidate_rows(ctx.embeddings(self.embedding), candidates, normalize=True)
        kept_pos, rejected = greedy_threshold_filter(x, order, self.threshold, budget, self.block,
                                                     show_progress=True)
        details: dict[str, Any] = {"threshold": self.threshold, "rejected_too_similar": rejected}
        limit = len(candidates) if budget is None else min(budget, len(candidates))
        if budget is not None and len(kept_pos) < limit and self.fill:
            short = limit - len(kept_pos)
            mask = np.ones(len(candidates), dtype=bool)
            mask[kept_pos] = False
            rest = order[mask[order]][:short]
            progress.warn(f"repr-filter: only {len(kept_pos)} candidates pass threshold {self.threshold}; "
                          f"filling the budget with the {short} best-scored rejected ones (fill=False to disable)")
            kept_pos = np.concatenate([kept_pos, rest])
            details["filled"] = int(short)
        kept = candidates[kept_pos]
        dropped = {"too_similar": int(rejected - details.get("filled", 0))}
        if len(candidates) - len(kept) - dropped["too_similar"] > 0:
            dropped["over_budget"] = int(len(candidates) - len(kept) - dropped["too_similar"])
        return StepResult(kept=kept, dropped=dropped, details=details)
