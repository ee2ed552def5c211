"""``facility-location``: maximise F(S) = sum_i max_{j in S} sim(i, j) (Superfiltering-D).

sim is cosine similarity clipped at 0, restricted to a kNN graph (each candidate's ``knn`` nearest
neighbours, itself included): never a dense N x N kernel. The kNN graph is exact (faiss flat index) up to
``exact_limit`` candidates and approximate above it (faiss IVF, ``nprobe`` lists searched): documented.

Kernels (``kernel``):

- ``cosine-knn`` (default): as above.
- ``euclidean-dense``: the Superfiltering-D reference's kernel (submodlib's dense euclidean kernel,
  ``create_kernel(..., metric="euclidean")``: ``exp(-D * gamma)`` with ``gamma = 1 / X.shape[1]``, D the
  euclidean distance matrix; the C++ kernel uses the same 1 / dimension), sim(i, j) = exp(-||x_i - x_j|| / d)
  for d-dimensional (normalised) rows, over all pairs: an N x N float32 matrix, refused above
  ``dense_limit`` candidates (default 10,000: N^2 x 4 bytes <= 400 MB; peak ~440 MB while it is built).
  Lazy greedy only.
- ``euclidean-knn``: the same kernel on the kNN graph, shifted by its floor: sim(i, j) = exp(-||x_i - x_j|| / d)
  - exp(-2 / d) for the ``knn`` nearest neighbours (normalised rows are at most 2 apart, so the shifted
  values are >= 0 and F_graph(S) + N exp(-2 / d) is a lower bound of the dense objective, exact when every
  point's best pick is among its neighbours). ``knn: auto`` chooses k on a sample (below).
- ``euclidean`` (the ``superfiltering-d`` preset): ``euclidean-dense`` up to ``dense_limit`` candidates,
  ``euclidean-knn`` above. Auto k: on a seeded random sample of ``min(sample, dense_limit, N)`` candidates
  with the same budget fraction, run the dense greedy and the graph greedy for k = 5, 10, 20, ...,
  ``max_knn``, and take the first k whose picks reach the dense picks' dense objective within
  ``tolerance`` (0.1%) of its part above the floor m exp(-2 / d) (the part the greedy's gains add up to;
  every selection's raw objective is within 1 - exp(-2 / d) of the best, 0.5% at d = 384, so a raw 0.1%
  would hold at k = 5 with a third of the dense picks); the step details record the chosen k, the
  measured gaps (above the floor and raw) and every k tried. The
  nearest selected point of a candidate is about its (N / budget)-th neighbour in the pool and in a
  sample at the same budget fraction alike, which is why k measured on the sample is used for the pool:
  an estimate, measured, not a bound.

- ``method="lazy"`` (default): lazy greedy with a max-heap of stale upper bounds. Identical output to the
  plain greedy on the same graph (ties: lower candidate position first).
- ``method="stochastic"``: stochastic greedy (Mirzasoleiman et al. 2015): each step evaluates a random
  sample of (N / budget) * ln(1 / epsilon) candidates. Approximate; seeded.

Memory: the kNN graph needs a faiss index over all the candidates, and a faiss flat or IVF-flat index stores
every vector in float32: that one N x d float32 copy is inherent. The candidates' rows are otherwise one
float32 copy when it fits ``SIFTKIT_VECTOR_MEMORY`` (4 GiB), handed to faiss as is; beyond, they stay in the
float16 memory-map (``signals.vectors.candidate_rows``): the index is filled from float32 blocks of
``ADD_BLOCK`` rows converted one at a time, its storage reserved up front so it is never regrown (a flat
index's for all rows; an IVF index's per inverted list, from a first pass that assigns the rows), the
queries are converted ``chunk`` rows at a time, and the IVF training sample (64 x nlist rows, freed before
the index is filled) and the auto-k sample are the only other copies. Peak: the index, plus one block, plus
the N x k graph; same graph, same picks. The dense kernels (``euclidean-dense``, the sample of
``knn: auto``) are N x N by definition and bounded by ``dense_limit``.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.vectors import RowsF32, candidate_rows, normalize_spec
from .base import SelectionContext, Selector, StepResult

ADD_BLOCK = 16384     # rows of a RowsF32 view converted per faiss add


def add_rows(index: Any, x: np.ndarray | RowsF32, block: int | None = None) -> None:
    """Add the rows of ``x`` to an empty faiss flat or IVF index: an array in one call; a ``RowsF32`` view in
    float32 blocks of ``block`` (:data:`ADD_BLOCK`) rows, converted one at a time from the float16
    memory-map. Grown block by block, the index's storage would be reallocated as it grows (old and new
    buffers held at once, and up to twice the room kept), so it is reserved first: a flat index's for every
    row; an IVF index's per inverted list, from the rows' coarse assignments (a first pass over the blocks;
    the second adds each block with its assignments, as ``index.add`` would). Same stored vectors, in the
    same order, either way."""
    import faiss

    if not isinstance(x, RowsF32):
        index.add(np.ascontiguousarray(x, dtype=np.float32))
        return
    block = ADD_BLOCK if block is None else int(block)
    n = len(x)
    if isinstance(index, faiss.IndexIVF):
        assign = np.empty(n, dtype=np.int64)
        for s in range(0, n, block):
            assign[s:s + block] = index.quantizer.assign(np.ascontiguousarray(x[s:s + block]), 1)[:, 0]
        lists = faiss.downcast_InvertedLists(index.invlists)
        for lst, size in enumerate(np.bincount(assign[assign >= 0], minlength=index.nlist).tolist()):
            if size:                                   # reserve, then empty: the capacity stays
                lists.resize(lst, size)
                lists.resize(lst, 0)
        for s in range(0, n, block):
            b = np.ascontiguousarray(x[s:s + block])
            idx = np.ascontiguousarray(assign[s:s + block])
            index.add_core(len(b), faiss.swig_ptr(b), None, faiss.swig_ptr(idx))
        return
    codes = getattr(index, "codes", None)
    if codes is not None and index.ntotal == 0:        # IndexFlat*: reserve, then empty (capacity stays)
        codes.resize(n * index.code_size)
        codes.resize(0)
    for s in range(0, n, block):
        index.add(np.ascontiguousarray(x[s:s + block]))


def knn_graph(x: np.ndarray | RowsF32, k: int, exact_limit: int = 100_000, nprobe: int = 16, seed: int = 0,
              chunk: int = 16384, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours N x k int64, similarities N x k float32) by inner product on normalised rows (an array or
    a ``RowsF32`` view, read in blocks). Missing neighbours (IVF may return fewer) are -1 with similarity 0."""
    import faiss

    n, d = x.shape
    k = min(k, n)
    if n <= exact_limit:
        index: Any = faiss.IndexFlatIP(d)
    else:
        nlist = int(min(65536, max(16, 4 * math.sqrt(n))))
        quant = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = x[np.sort(rng.choice(n, min(n, nlist * 64), replace=False))]
        index.cp.seed = int(seed % (2**31 - 1))
        index.train(np.ascontiguousarray(train))
        del train                                       # not held while the index is filled
        index.nprobe = nprobe
    add_rows(index, x)
    nbr = np.empty((n, k), dtype=np.int64)
    sim = np.empty((n, k), dtype=np.float32)
    with progress.stage("facility-location: knn graph", total=n, show=show_progress) as st:
        for s in range(0, n, chunk):
            dd, ii = index.search(np.ascontiguousarray(x[s:s + chunk]), k)
            nbr[s:s + chunk], sim[s:s + chunk] = ii, dd
            st.update(len(dd))
    sim[nbr < 0] = 0.0
    return nbr, sim


def _reverse_csr(nbr: np.ndarray, sim: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each candidate j: the points i that have j among their neighbours, and sim(i, j) (clipped >= 0).
    Returns (indptr, points, sims) sorted by j then i."""
    i = np.repeat(np.arange(n), nbr.shape[1])
    j = nbr.ravel()
    s = np.maximum(sim.ravel().astype(np.float64), 0.0)
    ok = (j >= 0) & (s > 0)
    i, j, s = i[ok], j[ok], s[ok]
    order = np.lexsort((i, j))
    i, j, s = i[order], j[order], s[order]
    indptr = np.searchsorted(j, np.arange(n + 1))
    return indptr, i, s


def facility_location_greedy(nbr: np.ndarray, sim: np.ndarray, budget: int, method: str = "lazy",
                             epsilon: float = 0.01, rng: np.random.Generator | None = None,
                             show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Greedy maximisation of facility location on a kNN graph. Returns (picks, gains)."""
    n = len(nbr)
    budget = min(budget, n)
    indptr, pts, sims = _reverse_csr(nbr, sim, n)
    cover = np.zeros(n, dtype=np.float64)
    chosen = np.zeros(n, dtype=bool)
    picks: list[int] = []
    gains: list[float] = []

    def gain(j: int) -> float:
        a, b = indptr[j], indptr[j + 1]
        return float(np.maximum(sims[a:b] - cover[pts[a:b]], 0.0).sum())

    def take(j: int, g: float) -> None:
        a, b = indptr[j], indptr[j + 1]
        np.maximum.at(cover, pts[a:b], sims[a:b])
        chosen[j] = True
        picks.append(j)
        gains.append(g)

    with progress.bar("facility-location", total=budget, show=show_progress) as bar:
        if method == "lazy":
            init = np.add.reduceat(sims, indptr[:-1]) if len(sims) else np.zeros(n)
            init = np.where(np.diff(indptr) > 0, init, 0.0)
            heap = [(-float(g), j) for j, g in enumerate(init.tolist())]
            heapq.heapify(heap)
            while len(picks) < budget and heap:
                _, j = heapq.heappop(heap)
                g = gain(j)
                if not heap or (-g, j) <= heap[0]:
                    take(j, g)
                    bar.update(1)
                else:
                    heapq.heappush(heap, (-g, j))
        elif method == "stochastic":
            if rng is None:
                raise ValueError("stochastic greedy needs an rng")
            sample = max(1, math.ceil(n / budget * math.log(1.0 / epsilon)))
            while len(picks) < budget:
                free = np.flatnonzero(~chosen)
                cand = np.sort(rng.choice(free, min(sample, len(free)), replace=False))
                g = np.array([gain(int(j)) for j in cand])
                best = int(np.argmax(g))
                take(int(cand[best]), float(g[best]))
                bar.update(1)
        else:
            raise ConfigError(f"facility-location: method must be 'lazy' or 'stochastic', got {method!r}")
    return np.asarray(picks, dtype=np.int64), np.asarray(gains)


KERNELS = ("cosine-knn", "euclidean-dense", "euclidean-knn", "euclidean")
KNN_STEPS = (5, 10, 20, 40, 80, 160, 320, 640)


def euclidean_dense_kernel(x: np.ndarray, block: int = 1024) -> np.ndarray:
    """exp(-||x_i - x_j|| / d) for all pairs (N x N float32; d = the number of columns), built in place
    (one N x N matrix plus a block of rows)."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    k = x @ x.T
    for s in range(0, n, block):
        rows = k[s:s + block]
        np.subtract(sq[s:s + block, None] + sq[None, :], 2.0 * rows, out=rows)
    np.maximum(k, 0.0, out=k)
    np.fill_diagonal(k, 0.0)
    np.sqrt(k, out=k)
    np.divide(k, -x.shape[1], out=k)
    return np.exp(k, out=k)


def euclidean_graph(x: np.ndarray | RowsF32, nbr: np.ndarray, ip: np.ndarray) -> np.ndarray:
    """The reference kernel on a kNN graph of normalised rows (inner products ``ip``), minus its floor
    exp(-2 / d); missing neighbours (-1) get 0."""
    d = x.shape[1]
    dist = np.sqrt(np.maximum(2.0 - 2.0 * ip.astype(np.float64), 0.0))
    sim = np.exp(-dist / d) - math.exp(-2.0 / d)
    sim[nbr < 0] = 0.0
    return np.maximum(sim, 0.0).astype(np.float32)


def dense_objective(kernel: np.ndarray, picks: np.ndarray) -> float:
    """F(S) = sum_i max_{j in S} K[i, j] on a dense symmetric kernel."""
    return float(kernel[picks].max(axis=0).sum(dtype=np.float64)) if len(picks) else 0.0


def choose_knn(x: np.ndarray | RowsF32, budget: int, rng: np.random.Generator, sample: int, tolerance: float,
               max_knn: int, exact_limit: int, nprobe: int, seed: int) -> dict[str, Any]:
    """k for ``euclidean-knn``: on a random sample of ``sample`` rows (same budget fraction), the smallest
    k in KNN_STEPS (up to ``max_knn``) whose graph picks reach the dense picks' dense objective within
    ``tolerance``, the gap measured relative to the objective above its floor m exp(-2 / d) (the raw
    objective of any selection is within 1 - exp(-2 / d) of the best, which would make a small tolerance
    trivial). Returns knn, knn_gap (above the floor), knn_gap_raw (relative to the raw objective),
    knn_sample, knn_sample_budget, knn_trials (gap above the floor per k) and knn_within_tolerance."""
    n = len(x)
    m = min(sample, n)
    rows = np.sort(rng.choice(n, m, replace=False))
    xs = x[rows]
    b = max(1, min(m, round(budget * m / n)))
    kern = euclidean_dense_kernel(xs)
    dense_picks, _ = facility_location_dense(kern, b)
    ref = dense_objective(kern, dense_picks)
    excess = ref - m * math.exp(-2.0 / x.shape[1])   # the objective above its floor
    top = max(1, min(max_knn, m - 1))
    steps = [k for k in KNN_STEPS if k < top] + [top]
    nbr, ip = knn_graph(xs, steps[-1] + 1, exact_limit, nprobe, seed)
    trials: dict[str, float] = {}
    chosen, gap, raw = steps[-1], math.inf, math.inf
    for k in steps:
        picks, _ = facility_location_greedy(nbr[:, :k + 1], euclidean_graph(xs, nbr[:, :k + 1], ip[:, :k + 1]), b)
        lost = ref - dense_objective(kern, picks)
        gap, raw = (lost / excess if excess > 0 else 0.0), (lost / ref if ref > 0 else 0.0)
        trials[str(k)] = gap
        if gap <= tolerance:
            chosen = k
            break
    return {"knn": chosen, "knn_gap": gap, "knn_gap_raw": raw, "knn_sample": m, "knn_sample_budget": b,
            "knn_trials": trials, "knn_within_tolerance": gap <= tolerance}


def facility_location_dense(kernel: np.ndarray, budget: int,
                            show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Lazy greedy on a dense symmetric kernel (N x N): gain(j) = sum_i max(K[i, j] - cover_i, 0).
    Same picks as the plain greedy (ties: lower position first). Returns (picks, gains)."""
    n = len(kernel)
    budget = min(budget, n)
    cover = np.zeros(n, dtype=np.float64)
    picks: list[int] = []
    gains: list[float] = []
    heap = [(-float(g), j) for j, g in enumerate(kernel.sum(axis=1, dtype=np.float64).tolist())]
    heapq.heapify(heap)
    with progress.bar("facility-location", total=budget, show=show_progress) as bar:
        while len(picks) < budget and heap:
            _, j = heapq.heappop(heap)
            g = float(np.maximum(kernel[j] - cover, 0.0).sum())
            if not heap or (-g, j) <= heap[0]:
                np.maximum(cover, kernel[j], out=cover)
                picks.append(j)
                gains.append(g)
                bar.update(1)
            else:
                heapq.heappush(heap, (-g, j))
    return np.asarray(picks, dtype=np.int64), np.asarray(gains)


@register_selector("facility-location")
class FacilityLocationSelect(Selector):
    role = "select"
    requires, requires_for = ("faiss",), "the kNN graph"

    def __init__(self, embedding: dict[str, Any] | str | None = None, knn: int | str | None = None,
                 method: str = "lazy", epsilon: float = 0.01, exact_limit: int = 100_000, nprobe: int = 16,
                 kernel: str = "cosine-knn", dense_limit: int = 10_000, tolerance: float = 0.001,
                 sample: int = 5_000, max_knn: int = 320):
        if kernel not in KERNELS:
            raise ConfigError(f"facility-location: kernel must be one of {KERNELS}, got {kernel!r}")
        if kernel == "euclidean-dense" and method != "lazy":
            raise ConfigError("facility-location: the dense kernel runs the lazy greedy (method 'lazy')")
        self.kernel, self.dense_limit = kernel, int(dense_limit)
        if knn is None:
            knn = "auto" if kernel in ("euclidean-knn", "euclidean") else 10
        if knn == "auto":
            if kernel not in ("euclidean-knn", "euclidean"):
                raise ConfigError("facility-location: knn 'auto' needs kernel 'euclidean-knn' or 'euclidean' "
                                  "(it is measured against the dense euclidean kernel)")
        elif isinstance(knn, bool) or not isinstance(knn, int) or knn < 1:
            raise ConfigError(f"facility-location: knn must be an integer >= 1 or 'auto', got {knn!r}")
        if method not in ("lazy", "stochastic"):
            raise ConfigError(f"facility-location: method must be 'lazy' or 'stochastic', got {method!r}")
        if not 0 < float(epsilon) < 1:
            raise ConfigError(f"facility-location: epsilon must be in (0, 1), got {epsilon}")
        if not 0 <= float(tolerance) < 1:
            raise ConfigError(f"facility-location: tolerance must be in [0, 1), got {tolerance}")
        if int(sample) < 2 or int(max_knn) < 1:
            raise ConfigError(f"facility-location: sample must be >= 2 and max_knn >= 1, got {sample}, {max_knn}")
        self.embedding, self.knn, self.method = normalize_spec(embedding), knn, method
        self.epsilon, self.exact_limit, self.nprobe = float(epsilon), int(exact_limit), int(nprobe)
        self.tolerance, self.sample, self.max_knn = float(tolerance), int(sample), int(max_knn)

    def config(self) -> dict[str, Any]:
        cfg = {"embedding": self.embedding, "knn": self.knn, "method": self.method, "epsilon": self.epsilon,
               "exact_limit": self.exact_limit, "nprobe": self.nprobe}
        if self.kernel != "cosine-knn":     # the default stays out: existing fingerprints unchanged
            cfg.update(kernel=self.kernel, dense_limit=self.dense_limit)
        if self.knn == "auto":
            cfg.update(tolerance=self.tolerance, sample=self.sample, max_knn=self.max_knn)
        return cfg

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("facility-location is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        if not len(candidates):
            return StepResult(kept=candidates)
        x = candidate_rows(ctx.embeddings(self.embedding), candidates, normalize=True)
        n = len(candidates)
        dense = self.kernel == "euclidean-dense" or (self.kernel == "euclidean" and n <= self.dense_limit)
        if dense:
            if n > self.dense_limit:
                raise ConfigError(f"facility-location: the dense kernel needs an N x N matrix; {n:,} "
                                  f"candidates exceed dense_limit {self.dense_limit:,} (raise it, or use "
                                  f"kernel 'euclidean' or 'cosine-knn')")
            picks, gains = facility_location_dense(euclidean_dense_kernel(x), budget, show_progress=True)
            return StepResult(kept=candidates[picks],
                              dropped={"over_budget": int(len(candidates) - len(picks))},
                              details={"objective": float(gains.sum()), "kernel": self.kernel, "graph": False})
        seed = int(ctx.rng("facility-location:knn").integers(2**31 - 1))
        details: dict[str, Any] = {}
        knn = self.knn
        if knn == "auto":
            details.update(choose_knn(x, budget, ctx.rng("facility-location:knn-sample"),
                                      min(self.sample, self.dense_limit), self.tolerance, self.max_knn,
                                      self.exact_limit, self.nprobe, seed))
            knn = details["knn"]
            if not details["knn_within_tolerance"]:
                progress.warn(f"facility-location: no k up to max_knn {self.max_knn} reached the dense objective "
                              f"within {self.tolerance:.2%} on the sample (gap {details['knn_gap']:.3%} at k "
                              f"{knn}); using k {knn}")
        nbr, sim = knn_graph(x, int(knn) + 1, self.exact_limit, self.nprobe, seed, show_progress=True)
        if self.kernel != "cosine-knn":
            sim = euclidean_graph(x, nbr, sim)
        picks, gains = facility_location_greedy(nbr, sim, budget, self.method, self.epsilon,
                                                ctx.rng("facility-location"), show_progress=True)
        kept = candidates[picks]
        details.update({"objective": float(gains.sum()), "knn_exact": len(candidates) <= self.exact_limit})
        if self.kernel != "cosine-knn":
            details.update(kernel=self.kernel, graph=True, knn=int(knn))
        return StepResult(kept=kept, dropped={"over_budget": int(len(candidates) - len(kept))}, details=details)
