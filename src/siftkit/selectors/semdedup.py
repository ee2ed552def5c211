"""Semantic deduplication (SemDeDup, Abbas et al. 2023): two rules.

``semdedup`` (the reference rule): k-means (faiss) on L2-normalised embeddings; inside each cluster, order
the members by cosine distance to the cluster's centroid (``order="far"``, farthest first, the reference
code's default; ``"near"``, nearest first; ``"pool"``; or ``by=<column>`` descending) and drop member j when
its cosine similarity to *any* earlier member in that order exceeds 1 - ``eps``, whether or not that earlier
member was itself dropped (the reference's max over the upper triangle of the cluster's similarity matrix).
Each cluster is computed in row blocks (block x m similarities for a cluster of m, never m x m).

``semdedup-kept`` (siftkit's earlier rule, gentler): the same clusters, but member j is compared only with
earlier *kept* members, walking in pool order (or ``by`` descending): a chain a~b~c with a and c apart keeps
a and c, where the reference keeps only a. It is the exact batched greedy of ``repr-filter``.

Pairs that fall in different clusters are not compared in either rule: that is the method's (documented)
approximation; ``k=1`` makes it exact and quadratic.

Memory: the candidates' rows are one float32 copy when it fits ``SIFTKIT_VECTOR_MEMORY`` (4 GiB); beyond,
the k-means reads them from the float16 memory-map chunk by chunk (``signals.vectors.candidate_rows``) and
each cluster's rows are converted when its turn comes, so the peak is the largest cluster's rows in float32
(plus its block x m similarities): the walk inside a cluster compares every member with every earlier one,
so a cluster is held whole (``k=1``: all the candidates). Same clusters, same picks either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.vectors import RowsF32, candidate_rows, normalize_spec
from .base import SelectionContext, Selector, StepResult
from .kmeans import kmeans_labels
from .repr_filter import greedy_threshold_filter, order_by_score

WALK_ORDERS = ("far", "near", "pool")


def any_earlier_similar(xm: np.ndarray, threshold: float, block: int = 2048) -> np.ndarray:
    """For rows ``xm`` (normalised, in walk order): True where the row's cosine to any earlier row is
    > ``threshold``. Row blocks of at most ~32M similarities."""
    m = len(xm)
    out = np.zeros(m, dtype=bool)
    block = max(1, min(int(block), (1 << 25) // max(m, 1)))
    for s in range(0, m, block):
        e = min(m, s + block)
        sims = xm[s:e] @ xm[:e].T
        sims[np.arange(e)[None, :] >= np.arange(s, e)[:, None]] = -np.inf   # only earlier rows count
        out[s:e] = sims.max(axis=1) > threshold
    return out


def semdedup_reference_keep(x: np.ndarray | RowsF32, labels: np.ndarray, eps: float,
                            centroids: np.ndarray | None = None, order: str = "far", scores: np.ndarray | None = None, block: int = 2048,
                            on_cluster: Any = None) -> np.ndarray:
    """Positions kept (sorted) under the reference rule. ``centroids[c]`` is cluster c's centroid (the mean
    of its members when None); the walk inside a cluster is by cosine distance to it (``far`` first or
    ``near`` first, ties by position), or ``pool`` order, or ``scores`` descending (NaN last) when given."""
    if order not in WALK_ORDERS:
        raise ConfigError(f"semdedup: order must be one of {WALK_ORDERS}, got {order!r}")
    kept: list[np.ndarray] = []
    for c in np.unique(labels).tolist():
        members = np.flatnonzero(labels == c)
        if on_cluster is not None:
            on_cluster(len(members))
        if len(members) == 1:
            kept.append(members)
            continue
        xm = np.asarray(x[members], dtype=np.float32)
        if scores is not None:
            walk = order_by_score(scores[members], len(members))
        elif order == "pool":
            walk = np.arange(len(members))
        else:
            cen = xm.mean(axis=0) if centroids is None else np.asarray(centroids[c], dtype=np.float32)
            dist = 1.0 - (xm @ cen) / max(float(np.linalg.norm(cen)), 1e-12)
            walk = np.argsort(-dist if order == "far" else dist, kind="stable")
        gone = any_earlier_similar(xm[walk], 1.0 - eps, block)
        kept.append(members[walk[~gone]])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def semdedup_keep(x: np.ndarray | RowsF32, labels: np.ndarray, eps: float, scores: np.ndarray | None = None,
                  block: int = 2048, on_cluster: Any = None) -> np.ndarray:
    """Positions kept (sorted) under the kept-only rule (``semdedup-kept``) given normalised rows ``x`` (an
    array or a ``RowsF32`` view: one cluster's rows are read at a time) and cluster ``labels``."""
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

    rule = "any"      # the reference: compare with every earlier member of the cluster

    def __init__(self, eps: float = 0.05, k: int | None = None, by: str | None = None,
                 embedding: dict[str, Any] | str | None = None, niter: int = 20, clusters_path: str | None = None,
                 order: str = "far"):
        if order not in WALK_ORDERS:
            raise ConfigError(f"{self.name}: order must be one of {WALK_ORDERS}, got {order!r}")
        if self.rule == "kept" and order != "far":
            raise ConfigError(f"{self.name}: walks in pool order (or by=<column>); 'order' is semdedup's")
        self.order = order
        if not 0 <= float(eps) < 2:
            raise ConfigError(f"semdedup: eps must be in [0, 2) (cosine threshold 1 - eps), got {eps}")
        if k is not None and int(k) < 1:
            raise ConfigError(f"semdedup: k must be >= 1, got {k}")
        self.eps, self.k, self.by = float(eps), (int(k) if k is not None else None), by
        self.embedding, self.niter, self.clusters_path = normalize_spec(embedding), int(niter), clusters_path

    def needs(self) -> list[str]:
        return [self.by] if self.by else []

    def config(self) -> dict[str, Any]:
        cfg = {"eps": self.eps, "k": self.k, "by": self.by, "embedding": self.embedding, "niter": self.niter}
        if self.rule == "any":
            cfg["order"] = self.order
        return cfg

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        candidates = np.asarray(candidates, dtype=np.int64)
        n = len(candidates)
        if n == 0:
            return StepResult(kept=candidates)
        x = candidate_rows(ctx.embeddings(self.embedding), candidates, normalize=True)
        # default: clusters of ~1,000 points, as the paper's 50K clusters for 100M+ documents suggest
        k = self.k if self.k is not None else max(1, n // 1000)
        centroids = None
        if k > 1:
            labels, centroids = kmeans_labels(x, k, int(ctx.rng("semdedup").integers(2**31 - 1)), self.niter)
        else:
            labels = np.zeros(n, dtype=np.int64)
        scores = np.asarray(ctx.column(self.by)[candidates], dtype=np.float64) if self.by else None
        with progress.bar(self.name, total=n) as bar:
            if self.rule == "any":
                keep = semdedup_reference_keep(x, labels, self.eps, centroids, self.order, scores,
                                               on_cluster=bar.update)
            else:
                keep = semdedup_keep(x, labels, self.eps, scores, on_cluster=bar.update)
            bar.set(kept=len(keep), clusters=int(labels.max()) + 1)
        details: dict[str, Any] = {"clusters": int(labels.max()) + 1, "threshold": 1.0 - self.eps}
        if self.clusters_path:
            details["clusters_path"] = self.write_clusters(ctx, candidates, x, labels, keep)
        return StepResult(kept=candidates[keep], dropped={"semantic_duplicate": int(n - len(keep))},
                          details=details)

    def write_clusters(self, ctx: SelectionContext, candidates: np.ndarray, x: np.ndarray | RowsF32, labels: np.ndarray,
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


@register_selector("semdedup-kept")
class SemDeDupKept(SemDeDup):
    """The kept-only rule: a member is dropped when it is too similar to an earlier *kept* member (pool
    order or ``by`` descending). Gentler than the reference ``semdedup``; siftkit's ``semdedup`` until issue 18."""

    rule = "kept"
