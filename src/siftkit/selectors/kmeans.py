"""``kmeans``: cluster-balanced selection (kMQ / "length + k-means").

1. k-means (faiss, spherical on L2-normalised embeddings) over the candidates; training uses at most
   ``max_points_per_centroid`` x k points, assignment covers every candidate in float32 chunks. The
   candidates' rows are one float32 copy when it fits ``SIFTKIT_VECTOR_MEMORY`` (4 GiB), else read from
   the float16 memory-map chunk by chunk (``signals.vectors.candidate_rows``): same labels either way.
2. The budget is split across clusters: ``quota="proportional"`` (to cluster size, largest remainder) or
   ``"equal"``; quota a cluster cannot use (it is smaller than its share) is redistributed to the others,
   so the output has exactly min(budget, candidates) rows.
3. Inside a cluster: ``within="top"`` takes the highest ``by`` scores (``by=None``: uniformly random);
   ``within="sample"`` samples without replacement with probability proportional to
   exp(score / temperature) (Gumbel-top-k). NaN scores rank last.

Output order: round-robin over clusters by within-cluster rank, so any prefix stays balanced.
The ``length-kmeans`` preset (``siftkit.presets``) is the study's recommended recipe: k-means, then the
longest per cluster.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.vectors import candidate_rows, normalize_spec
from .base import SelectionContext, Selector, StepResult


def kmeans_labels(x: np.ndarray, k: int, seed: int, niter: int = 20, max_points_per_centroid: int = 256,
                  spherical: bool = True, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows of ``x`` into ``k`` clusters. ``x``: a float32 array, a float16 array / memmap, or a
    ``signals.vectors.RowsF32`` view; anything but the training sample is converted ``chunk`` rows at a
    time, so memory is the training copy (min(N, k x max_points_per_centroid) rows) plus one chunk.

    Returns (labels int64 of length N, centroids k x d float32). Deterministic for a given seed.
    """
    import faiss

    n, d = x.shape
    k = int(min(k, n))
    if k < 1:
        raise ConfigError("k-means needs at least one point")
    rng = np.random.default_rng(seed)
    n_train = min(n, k * max_points_per_centroid)
    train_rows = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
    train = np.ascontiguousarray(np.asarray(x[train_rows], dtype=np.float32))
    km = faiss.Kmeans(d, k, niter=niter, seed=int(seed % (2**31 - 1)), spherical=spherical,
                      max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=1,
                      verbose=False)
    with progress.stage("kmeans: train", total=n_train) as st:   # one faiss call: start and end lines only
        st.set(k=k, iterations=niter)
        km.train(train)
        st.update(n_train)
    del train                                    # not held while every row is assigned
    labels = np.empty(n, dtype=np.int64)
    with progress.stage("kmeans: assign", total=n) as st:
        for s in range(0, n, chunk):
            block = np.ascontiguousarray(np.asarray(x[s:s + chunk], dtype=np.float32))
            _, ids = km.index.search(block, 1)
            labels[s:s + chunk] = ids[:, 0]
            st.update(len(block))
            del block, ids                       # so the next block is not made while this one is held
    return labels, np.asarray(km.centroids, dtype=np.float32)


def allocate(sizes: np.ndarray, budget: int, weights: np.ndarray) -> np.ndarray:
    """Split ``budget`` across groups of ``sizes`` in proportion to ``weights``, never beyond a group's
    size; the share of a group too small for it is redistributed to the others (water-filling), so the
    total is exactly min(budget, sum(sizes)). Whole units: largest remainder (ties: lower group index)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64).copy()
    quota = np.zeros(len(sizes), dtype=np.int64)
    remaining = int(min(budget, sizes.sum()))
    active = sizes > 0
    while remaining > 0:
        if not (active & (w > 0)).any():       # only zero-weight groups have room: share equally
            w = np.where(active, 1.0, 0.0)
        share = np.where(active, w, 0.0)
        exact = remaining * share / share.sum()
        capped = active & (exact >= sizes)
        if capped.any():                        # these take everything they have; re-split the rest
            quota[capped] = sizes[capped]
            remaining -= int(sizes[capped].sum())
            active &= ~capped
            continue
        give = np.floor(exact).astype(np.int64)
        left = remaining - int(give.sum())
        frac = np.where(active, exact - give, -1.0)
        order = np.lexsort((np.arange(len(sizes)), -frac))[:left]
        give[order] += 1
        quota += give
        remaining = 0
    return quota


def balanced_pick(labels: np.ndarray, quota: np.ndarray, scores: np.ndarray | None, within: str,
                  temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Positions chosen inside each cluster (``quota[c]`` of cluster ``c``), round-robin ordered."""
    n = len(labels)
    if within == "sample" or scores is None:
        logits = np.zeros(n) if scores is None else np.asarray(scores, dtype=np.float64) / temperature
        key = logits + rng.gumbel(size=n)
    else:
        key = np.asarray(scores, dtype=np.float64).copy()
    key = np.where(np.isnan(key), -np.inf, key)
    # sort by cluster, then key descending, then position (stable)
    order = np.lexsort((np.arange(n), -key, labels))
    lab_sorted = labels[order]
    starts = np.searchsorted(lab_sorted, np.arange(len(quota)))
    rank = np.arange(n) - starts[lab_sorted]
    chosen = rank < quota[lab_sorted]
    picked, picked_rank, picked_lab = order[chosen], rank[chosen], lab_sorted[chosen]
    return picked[np.lexsort((picked_lab, picked_rank))]


@register_selector("kmeans")
class KMeansSelect(Selector):
    role = "select"
    requires, requires_for = ("faiss",), "k-means"

    def __init__(self, k: int = 100, by: str | None = None, within: str = "top", quota: str = "proportional",
                 temperature: float = 1.0, embedding: dict[str, Any] | str | None = None, niter: int = 20,
                 max_points_per_centroid: int = 256, ascending: bool = False):
        if int(k) < 1:
            raise ConfigError(f"kmeans: k must be >= 1, got {k}")
        if within not in ("top", "sample"):
            raise ConfigError(f"kmeans: within must be 'top' or 'sample', got {within!r}")
        if quota not in ("proportional", "equal"):
            raise ConfigError(f"kmeans: quota must be 'proportional' or 'equal', got {quota!r}")
        if not float(temperature) > 0:
            raise ConfigError(f"kmeans: temperature must be > 0, got {temperature}")
        if within == "sample" and by is None:
            raise ConfigError("kmeans: within='sample' samples by exp(score / temperature) and needs by=<column>")
        self.k, self.by, self.within, self.quota = int(k), by, within, quota
        self.temperature, self.embedding, self.niter = float(temperature), normalize_spec(embedding), int(niter)
        self.max_points_per_centroid, self.ascending = int(max_points_per_centroid), bool(ascending)

    def needs(self) -> list[str]:
        return [self.by] if self.by else []

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "by": self.by, "within": self.within, "quota": self.quota,
                "temperature": self.temperature, "embedding": self.embedding, "niter": self.niter,
                "ascending": self.ascending}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("kmeans is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        n = len(candidates)
        if n == 0:
            return StepResult(kept=candidates, details={"clusters": 0})
        x = candidate_rows(ctx.embeddings(self.embedding), candidates, normalize=True)
        seed = int(ctx.rng("kmeans:train").integers(2**31 - 1))
        labels, _ = kmeans_labels(x, self.k, seed, self.niter, self.max_points_per_centroid)
        k = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=k)
        weights = sizes if self.quota == "proportional" else (sizes > 0).astype(np.float64)
        quota = allocate(sizes, budget, weights)
        scores = None
        if self.by:
            scores = np.asarray(ctx.column(self.by)[candidates], dtype=np.float64)
            if self.ascending:
                scores = -scores
        picked = balanced_pick(labels, quota, scores, self.within, self.temperature, ctx.rng("kmeans:pick"))
        details = {"clusters": k, "cluster_sizes": sizes.tolist(), "quota": quota.tolist()}
        return StepResult(kept=candidates[picked], dropped={"over_quota": int(n - len(picked))}, details=details)
