"""Diversity metrics of a selection, as plain numbers and arrays a report can plot.

- ``coverage``: cosine distance from each pool point (or a seeded sample) to its nearest selected point:
  mean and 95th percentile (lower = the selection covers the pool better).
- ``cluster_entropy``: entropy of the selection's distribution over pool clusters (nats), and normalised
  by log(number of clusters) (1 = spread evenly).
- ``vendi_score``: exp(entropy of the eigenvalues of K / n) with the cosine kernel K on a sample; the
  eigenvalues come from the d x d covariance (same non-zero spectrum), never an n x n matrix.
- ``projection_2d``: PCA coordinates of a pool sample plus the selected points, for a scatter plot.

All accept float16 or float32 N x d arrays (e.g. the memmap from ``signals.vectors``) and are seeded.
Memory: queries are converted in chunks; only the selected rows and samples are whole float32 copies
(``diversity_report``'s k-means over the pool streams it beyond ``SIFTKIT_VECTOR_MEMORY``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .signals.vectors import candidate_rows, rows_f32


def _sample(n: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size, replace=False))


def coverage(vectors: np.ndarray, selected: np.ndarray, sample: int | None = 100_000,
             seed: int = 0) -> dict[str, float]:
    """Cosine distance (1 - cos) from pool points to their nearest selected point."""
    selected = np.asarray(selected, dtype=np.int64)
    if not len(selected):
        raise ValueError("coverage needs at least one selected point")
    rows = _sample(len(vectors), sample, np.random.default_rng(seed))
    sel = rows_f32(vectors, selected, normalize=True)
    best = np.full(len(rows), -np.inf, dtype=np.float32)
    try:
        import faiss

        index = faiss.IndexFlatIP(sel.shape[1])
        index.add(sel)
        for s in range(0, len(rows), 65536):
            q = rows_f32(vectors, rows[s:s + 65536], normalize=True)
            best[s:s + 65536] = index.search(q, 1)[0][:, 0]
    except ImportError:
        for s in range(0, len(rows), 4096):
            q = rows_f32(vectors, rows[s:s + 4096], normalize=True)
            for t in range(0, len(sel), 16384):
                best[s:s + 4096] = np.maximum(best[s:s + 4096], (q @ sel[t:t + 16384].T).max(axis=1))
    dist = np.clip(1.0 - best.astype(np.float64), 0.0, 2.0)
    return {"mean": float(dist.mean()), "p95": float(np.percentile(dist, 95)), "points": len(rows)}


def cluster_entropy(labels: np.ndarray, selected: np.ndarray, k: int | None = None) -> dict[str, float]:
    """Entropy of the cluster distribution of the selected rows (``labels``: pool cluster per row)."""
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if k is None else int(k)
    counts = np.bincount(labels[np.asarray(selected, dtype=np.int64)], minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    h = float(-(p * np.log(p)).sum())
    return {"entropy": h, "normalized": h / np.log(k) if k > 1 else 1.0, "clusters_hit": int((counts > 0).sum()),
            "clusters": k}


def vendi_score(vectors: np.ndarray, rows: np.ndarray | None = None, sample: int | None = 10_000,
                seed: int = 0) -> float:
    """Vendi score (effective number of distinct points) with the cosine-similarity kernel."""
    rows = np.arange(len(vectors)) if rows is None else np.asarray(rows, dtype=np.int64)
    rows = rows[_sample(len(rows), sample, np.random.default_rng(seed))]
    x = rows_f32(vectors, rows, normalize=True).astype(np.float64)
    if not len(x):
        return 0.0
    lam = np.linalg.eigvalsh(x.T @ x / len(x))
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()
    return float(np.exp(-(lam * np.log(lam)).sum()))


def projection_2d(vectors: np.ndarray, selected: np.ndarray, sample: int = 5000,
                  seed: int = 0) -> dict[str, Any]:
    """PCA (fitted on a pool sample) coordinates of ``sample`` pool points and up to ``sample`` selected
    points: {"pool": {"x", "y"}, "selected": {"x", "y"}, "explained_variance": [pc1, pc2]}."""
    rng = np.random.default_rng(seed)
    pool_rows = _sample(len(vectors), sample, rng)
    selected = np.asarray(selected, dtype=np.int64)
    sel_rows = selected[_sample(len(selected), sample, rng)]
    xp = rows_f32(vectors, pool_rows, normalize=True).astype(np.float64)
    mean = xp.mean(axis=0)
    _, s, vt = np.linalg.svd(xp - mean, full_matrices=False)
    comps = vt[:2]
    var = s ** 2
    pc = (xp - mean) @ comps.T
    sc = (rows_f32(vectors, sel_rows, normalize=True).astype(np.float64) - mean) @ comps.T if len(sel_rows) \
        else np.zeros((0, 2))
    return {"pool": {"x": pc[:, 0].tolist(), "y": pc[:, 1].tolist()},
            "selected": {"x": sc[:, 0].tolist(), "y": sc[:, 1].tolist()},
            "explained_variance": (var[:2] / var.sum()).tolist() if var.sum() > 0 else [0.0, 0.0]}


def diversity_report(vectors: np.ndarray, selected: np.ndarray, k: int = 100, sample: int = 5000,
                     seed: int = 0) -> dict[str, Any]:
    """Everything above in one dict (k-means with ``k`` clusters on the pool for the entropy)."""
    from .selectors.kmeans import kmeans_labels

    n = len(vectors)
    x = candidate_rows(vectors, None, normalize=True)   # a whole copy under SIFTKIT_VECTOR_MEMORY, else streamed
    labels, _ = kmeans_labels(x, min(k, n), seed)
    return {"coverage": coverage(vectors, selected, seed=seed),
            "cluster_entropy": cluster_entropy(labels, selected, k=min(k, n)),
            "pool_cluster_entropy": cluster_entropy(labels, np.arange(n), k=min(k, n)),
            "vendi": {"selected": vendi_score(vectors, selected, sample, seed),
                      "pool": vendi_score(vectors, None, sample, seed)},
            "map": projection_2d(vectors, selected, sample, seed)}
