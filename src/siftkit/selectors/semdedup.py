"""``semdedup``: semantic deduplication (SemDeDup, Abbas et al. 2023).

k-means (faiss) on L2-normalised embeddings; inside each cluster, walk the members in order (``by``
descending when given, else pool order) and drop a member whose cosine similarity to an *earlier kept*
member exceeds 1 - ``eps``. The within-cluster walk is the exact batched greedy of ``repr-filter`` (no
m x m matrix for a cluster of m, only blocks), so the largest clusters do not dominate memory or time.
Pairs that fall in different clusters are not compared: that is the method's (documented) approximation;
``k=1`` makes it exact and quadratic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.vectors import normalize_spec, rows_f32
from .base import SelectionContext, Selector, StepResult
from .kmeans import kmeans_labels
from .repr_filter import greedy_threshold_filter, order_by_score


def semdedup_keep(x: np.ndarray, labels: np.ndarray, eps: float, scores: np.ndarray | None = None,
                  block: int = 2048, on_cluster: Any = None) -> np.ndarray:
    """Positions kept (sorted) given normalised rows ``x`` and cluster ``labels``."""
    n = len(x)
    rank = order_by_score(scores, n)          # global walk order; each cluster walks its members in it
    pos_in_walk = np.empty(n, dtype=np.int64)
    pos_in_walk[rank] = np.arange(n)
    by_cluster = np.lexsort((pos_in_walk, labels))
    lab_sorted = labels[by_cluster]
    bounds = np.flatnonzero(np.concatenate([[True], lab_sorted[1:] != lab_sorted[:-1], [True]]))
    kept: list[np.ndarray] = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        members = by_cluster[a:b]
        if on_cluster is not None:
            on_cluster(len(members))        # progress: records of each cluster as it is walked
        if len(members) == 1:
            kept.append(members)
            continue
        local, _ = greedy_threshold_filter(x[members], np.arange(len(members)), 1.0 - eps, None, block)
        kept.append(members[local])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


@register_selector("semdedup")
class SemDeDup(Selector):
    role = "dedup"
    requires, requires_for = ("faiss",), "k-means"

    def requirements(self) -> dict[str, str]:
        return {} if self.k == 1 else super().requirements()   # one cluster: no k-means

    def __init__(self, eps: float = 0.05, k: int | None = None, by: str | None = None,
                 embedding: dict[str, Any] | str | None = None, niter: int = 20, clusters_path: str | None = None):
        if not 0 <= float(eps) < 2:
            raise ConfigError(f"semdedup: eps must be in [0, 2) (cosine threshold 1 - eps), got {eps}")
        if k is not None and int(k) < 1:
            raise ConfigError(f"semdedup: k must be >= 1, got {k}")
        self.eps, self.k, self.by = float(eps), (int(k) if k is not None else None), by
        self.embedding, self.niter, self.clusters_path = normalize_spec(embedding), int(niter), clusters_path

    def needs(self) -> list[str]:
        return [self.by] if self.by else []

    def config(self) -> dict[str, Any]:
        return {"eps": self.eps, "k": self.k, "by": self.by, "embedding": self.embedding, "niter": self.niter}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        candidates = np.asarray(candidates, dtype=np.int64)
        n = len(candidates)
        if n == 0:
            return StepResult(kept=candidates)
        x = rows_f32(ctx.embeddings(self.embedding), candidates, normalize=True)
        # default: clusters of ~1,000 points, as the paper's 50K clusters for 100M+ documents suggest
        k = self.k if self.k is not None else max(1, n // 1000)
        if k > 1:
            labels, _ = kmeans_labels(x, k, int(ctx.rng("semdedup").integers(2**31 - 1)), self.niter)
        else:
            labels = np.zeros(n, dtype=np.int64)
        scores = np.asarray(ctx.column(self.by)[candidates], dtype=np.float64) if self.by else None
        with progress.bar("semdedup", total=n) as bar:
            keep = semdedup_keep(x, labels, self.eps, scores, on_cluster=bar.update)
            bar.set(kept=len(keep), clusters=int(labels.max()) + 1)
        details: dict[str, Any] = {"clusters": int(labels.max()) + 1, "threshold": 1.0 - self.eps}
        if self.clusters_path:
            details["clusters_path"] = self.write_clusters(ctx, candidates, x, labels, keep)
        return StepResult(kept=candidates[keep], dropped={"semantic_duplicate": int(n - len(keep))},
                          details=details)

    def write_clusters(self, ctx: SelectionContext, candidates: np.ndarray, x: np.ndarray, labels: np.ndarray,
                       keep: np.ndarray) -> str:
        """JSONL, one line per kept record with duplicates: {"kept", "duplicates", "size"}; each dropped
        record is listed under its most similar kept record of the same k-means cluster."""
        import os

        import orjson

        kept_mask = np.zeros(len(x), dtype=bool)
        kept_mask[keep] = True
        owner = np.full(len(x), -1, dtype=np.int64)
        for c in np.unique(labels[~kept_mask]).tolist():
            members = np.flatnonzero(labels == c)
            k_rows, d_rows = members[kept_mask[members]], members[~kept_mask[members]]
            owner[d_rows] = k_rows[np.argmax(x[d_rows] @ x[k_rows].T, axis=1)]
        ids = ctx.pool.column("id").to_numpy(zero_copy_only=False)[candidates]
        path = str(self.clusters_path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        dropped = np.flatnonzero(owner >= 0)
        order = dropped[np.argsort(owner[dropped], kind="stable")]
        with open(path, "wb") as fh:
            for k_row in np.unique(owner[dropped]).tolist():
                dup = order[owner[order] == k_row]
                fh.write(orjson.dumps({"kept": ids[k_row], "duplicates": ids[dup].tolist(),
                                       "size": int(len(dup) + 1)}) + b"\n")
        return path
