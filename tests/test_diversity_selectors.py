"""Diversity selectors against brute-force references on small random data."""

from __future__ import annotations

import numpy as np
import pytest

from diversity_helpers import blobs, context, unit
from siftkit.errors import ConfigError
from siftkit.registry import make, selector_class

pytest.importorskip("faiss")


# ------------------------------------------------------------------------------------------------ references

def ref_repr_filter(x: np.ndarray, scores: np.ndarray, threshold: float, budget: int) -> list[int]:
    """DEITA, literally: walk by descending score, keep unless cos to an already-kept sample > threshold."""
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = sorted(range(len(x)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if len(kept) == budget:
            break
        if all(float(x[i] @ x[j]) <= threshold for j in kept):
            kept.append(i)
    return kept


def ref_nearest_neighbour_misreading(x: np.ndarray, threshold: float) -> list[int]:
    """The misreading: drop a row whose nearest neighbour in the whole pool is above the threshold."""
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    return [i for i in range(len(x)) if s[i].max() <= threshold]


def ref_k_center(x: np.ndarray, budget: int, first: int | None, initial: np.ndarray | None = None) -> list[int]:
    """Naive farthest-first: one length-N distance vector updated with every point at every pick."""
    x = x.astype(np.float64)
    if initial is not None:
        dmin = np.min(np.linalg.norm(x[:, None, :] - initial[None].astype(np.float64), axis=2), axis=1)
        picks: list[int] = []
    else:
        dmin = np.linalg.norm(x - x[first], axis=1)
        dmin[first] = -1
        picks = [first]
    while len(picks) < budget:
        j = int(np.argmax(dmin))
        picks.append(j)
        dmin = np.minimum(dmin, np.linalg.norm(x - x[j], axis=1))
        dmin[picks] = -1
    return picks


def ref_facility_location(nbr: np.ndarray, sim: np.ndarray, budget: int) -> list[int]:
    """Plain greedy on F(S) = sum_i max_{j in S} sim(i, j) over a dense kernel built from the kNN graph."""
    n = len(nbr)
    kernel = np.zeros((n, n))
    for i in range(n):
        for j, s in zip(nbr[i], sim[i]):
            if j >= 0:
                kernel[i, j] = max(float(s), 0.0)
    cover = np.zeros(n)
    picks: list[int] = []
    for _ in range(budget):
        gains = np.maximum(kernel - cover[:, None], 0).sum(axis=0)
        gains[picks] = -1
        j = int(np.argmax(gains))
        picks.append(j)
        cover = np.maximum(cover, kernel[:, j])
    return picks


def sel(name: str, **params):
    return make(selector_class(name), params, name)


# ------------------------------------------------------------------------------------------------ repr-filter

@pytest.mark.parametrize("threshold,budget,block", [(0.5, 40, 7), (0.3, 500, 64), (0.0, 30, 2048), (0.7, 10, 3)])
def test_repr_filter_matches_deita_reference(threshold: float, budget: int, block: int) -> None:
    rng = np.random.default_rng(1)
    x = unit(rng, 300, 6)
    scores = rng.normal(size=300)
    ctx = context(x, {"score": scores})
    res = sel("repr-filter", by="score", threshold=threshold, block=block, fill=False).run(
        ctx, np.arange(300), budget)
    assert res.kept.tolist() == ref_repr_filter(x, scores, threshold, budget)


def test_repr_filter_is_not_the_nearest_neighbour_misreading() -> None:
    # A, B, C on a circle 18 degrees apart: cos(A,B) = cos(B,C) = 0.951, cos(A,C) = 0.809
    ang = np.deg2rad([0.0, 18.0, 36.0])
    x = np.stack([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)
    ctx = context(x, {"score": [3.0, 2.0, 1.0]})
    res = sel("repr-filter", by="score", threshold=0.9, fill=False).run(ctx, np.arange(3), 3)
    # DEITA keeps A, rejects B (too close to kept A), keeps C (B was never kept, A is far enough)
    assert res.kept.tolist() == [0, 2]
    assert ref_nearest_neighbour_misreading(x, 0.9) == []  # the misreading would drop all three
    assert res.dropped["too_similar"] == 1


def test_repr_filter_fill_meets_budget_exactly() -> None:
    x = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (20, 1))  # all identical: only one passes
    ctx = context(x, {"score": np.arange(20.0)})
    strict = sel("repr-filter", by="score", fill=False).run(ctx, np.arange(20), 5)
    assert strict.kept.tolist() == [19]
    filled = sel("repr-filter", by="score").run(ctx, np.arange(20), 5)
    assert filled.kept.tolist() == [19, 18, 17, 16, 15]
    assert filled.details["filled"] == 4


def test_repr_filter_respects_candidates_and_no_budget() -> None:
    rng = np.random.default_rng(2)
    x = unit(rng, 100, 4)
    scores = rng.normal(size=100)
    cand = np.arange(0, 100, 3)
    res = sel("repr-filter", by="score", threshold=0.8).run(context(x, {"score": scores}), cand, None)
    ref = ref_repr_filter(x[cand], scores[cand], 0.8, len(cand))
    assert res.kept.tolist() == cand[ref].tolist()


# ------------------------------------------------------------------------------------------------ k-center

@pytest.mark.parametrize("n,d,budget,cand", [(400, 3, 50, 4096), (300, 16, 120, 4096), (50, 2, 50, 4096),
                                             (600, 3, 200, 8), (500, 32, 150, 40), (400, 8, 399, 1)])
def test_k_center_matches_naive_farthest_first(n: int, d: int, budget: int, cand: int) -> None:
    """Small candidate sets force many stale-bound refreshes; the picks must not change."""
    from siftkit.selectors.kcenter import k_center_greedy

    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    assert k_center_greedy(x, budget, first=5, cand_size=cand).tolist() == ref_k_center(x, budget, 5)


def test_k_center_with_initial_set() -> None:
    from siftkit.selectors.kcenter import k_center_greedy

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    init = rng.normal(size=(10, 5)).astype(np.float32)
    assert k_center_greedy(x, 40, initial=init).tolist() == ref_k_center(x, 40, None, init)
    assert k_center_greedy(x, 40, initial=init, cand_size=4).tolist() == ref_k_center(x, 40, None, init)


def test_k_center_selector_seeded_and_initial_column() -> None:
    rng = np.random.default_rng(4)
    x = unit(rng, 200, 8)
    flag = np.zeros(200, dtype=bool)
    flag[:5] = True
    ctx = context(x, {"init": flag}, seed=7)
    cand = np.arange(5, 200)
    a = sel("k-center").run(ctx, cand, 30).kept
    b = sel("k-center").run(context(x, {"init": flag}, seed=7), cand, 30).kept
    assert a.tolist() == b.tolist() and len(a) == 30 and len(set(a.tolist())) == 30
    res = sel("k-center", initial="init").run(ctx, cand, 30)
    assert res.details["initial"] == 5
    ref = ref_k_center(x[cand], 30, None, x[:5])
    assert res.kept.tolist() == cand[ref].tolist()


# ------------------------------------------------------------------------------------------------ facility location

def test_lazy_facility_location_matches_plain_greedy() -> None:
    from siftkit.selectors.facility_location import facility_location_greedy, knn_graph

    rng = np.random.default_rng(5)
    x = unit(rng, 250, 8)
    nbr, sim = knn_graph(x, 8)
    picks, gains = facility_location_greedy(nbr, sim, 40)
    assert picks.tolist() == ref_facility_location(nbr, sim, 40)
    assert np.all(np.diff(gains) <= 1e-9)  # submodular: greedy gains never increase


def test_dense_euclidean_facility_location_matches_the_reference_rule() -> None:
    """The reference kernel exp(-||x - y|| / d) over all pairs, and the plain greedy on it (transcribed:
    every step, the gain of every unpicked j is sum_i max(K[i, j] - best_i, 0); the largest wins, lower j
    on ties)."""
    from siftkit.selectors.facility_location import euclidean_dense_kernel

    rng = np.random.default_rng(31)
    x = unit(rng, 70, 5)
    d = x.shape[1]
    ref_k = np.array([[np.exp(-np.linalg.norm(x[i].astype(np.float64) - x[j]) / d) for j in range(70)]
                      for i in range(70)])
    k = euclidean_dense_kernel(x)
    np.testing.assert_allclose(k, ref_k, atol=2e-6)
    best, want = np.zeros(70), []
    for _ in range(15):
        g = np.maximum(ref_k - best[:, None], 0).sum(axis=0)
        g[want] = -1.0
        j = int(np.argmax(g))
        want.append(j)
        best = np.maximum(best, ref_k[:, j])
    res = sel("facility-location", kernel="euclidean-dense").run(context(x), np.arange(70), 15)
    assert res.kept.tolist() == want
    assert abs(res.details["objective"] - best.sum()) < 1e-3
    with pytest.raises(ConfigError, match="dense_limit"):
        sel("facility-location", kernel="euclidean-dense", dense_limit=50).run(context(x), np.arange(70), 5)


def ref_plain_greedy(k: np.ndarray, budget: int) -> list[int]:
    """Plain greedy facility location on a (possibly sparse, zero-filled) similarity matrix k[i, j]:
    gain(j) = sum_i max(k[i, j] - best_i, 0); the largest wins, lower j on ties."""
    best, want = np.zeros(len(k)), []
    for _ in range(budget):
        g = np.maximum(k - best[:, None], 0).sum(axis=0)
        g[want] = -1.0
        j = int(np.argmax(g))
        want.append(j)
        best = np.maximum(best, k[:, j])
    return want


def test_dense_kernel_in_place_equals_the_plain_formula() -> None:
    from siftkit.selectors.facility_location import euclidean_dense_kernel

    x = unit(np.random.default_rng(3), 300, 24)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    assert np.array_equal(euclidean_dense_kernel(x, block=7), np.exp(-np.sqrt(d2) / 24).astype(np.float32))


def test_euclidean_knn_graph_matches_the_reference_rule() -> None:
    """The reference kernel kept on each point's k nearest neighbours (itself included), minus its floor
    exp(-2 / d), zero elsewhere; the plain greedy on that sparse matrix (transcribed, float64)."""
    rng = np.random.default_rng(32)
    x = unit(rng, 80, 6)
    d, k = 6, 7
    dist = np.linalg.norm(x[:, None, :].astype(np.float64) - x[None, :, :], axis=2)
    sparse = np.zeros((80, 80))
    for i in range(80):
        for j in np.argsort(dist[i], kind="stable")[:k + 1]:      # row i lists its neighbours j
            sparse[i, j] = np.exp(-dist[i, j] / d) - np.exp(-2 / d)
    want = ref_plain_greedy(sparse, 12)
    res = sel("facility-location", kernel="euclidean-knn", knn=k).run(context(x), np.arange(80), 12)
    assert res.kept.tolist() == want
    assert res.details["graph"] and res.details["knn"] == k
    best = sparse[:, want].max(axis=1).sum()
    assert abs(res.details["objective"] - best) < 1e-4


def test_auto_knn_takes_the_first_k_within_tolerance() -> None:
    """choose_knn on the whole set (sample = N): dense picks vs graph picks for k = 5, 10, 20, ...; the
    first k whose graph picks reach the dense objective within the tolerance (gap relative to the objective
    above its floor N exp(-2 / d)), recomputed here literally."""
    from siftkit.selectors.facility_location import KNN_STEPS, choose_knn

    rng = np.random.default_rng(33)
    x, _ = blobs(rng, [40] * 6, d=12, spread=0.3)
    x = x.astype(np.float32)
    n, d, budget, tol = len(x), 12, 24, 3e-4
    dist = np.linalg.norm(x[:, None, :].astype(np.float64) - x[None, :, :], axis=2)
    dense = np.exp(-dist / d)
    ref = dense[:, ref_plain_greedy(dense, budget)].max(axis=1).sum()
    gaps = {}
    for k in KNN_STEPS[:5]:
        sparse = np.zeros((n, n))
        for i in range(n):
            nb = np.argsort(dist[i], kind="stable")[:k + 1]
            sparse[i, nb] = dense[i, nb] - np.exp(-2 / d)
        gaps[k] = (ref - dense[:, ref_plain_greedy(sparse, budget)].max(axis=1).sum()) / (ref - n * np.exp(-2 / d))
    first = next(k for k in KNN_STEPS if gaps[k] <= tol)
    got = choose_knn(x, budget, np.random.default_rng(0), n, tol, 320, 100_000, 16, 0)
    assert got["knn"] == first and got["knn_within_tolerance"] and got["knn_sample"] == n
    assert list(got["knn_trials"]) == [str(k) for k in KNN_STEPS[:KNN_STEPS.index(first) + 1]]
    for k, g in got["knn_trials"].items():
        assert abs(g - gaps[int(k)]) < 1e-5
    assert gaps[5] > tol, gaps                      # the search had to grow k on this data


def test_euclidean_kernel_dense_below_the_limit_graph_above() -> None:
    rng = np.random.default_rng(34)
    x, _ = blobs(rng, [50] * 4, d=10, spread=0.3)
    x = x.astype(np.float32)
    dense = sel("facility-location", kernel="euclidean-dense").run(context(x), np.arange(200), 20)
    auto = sel("facility-location", kernel="euclidean").run(context(x), np.arange(200), 20)
    assert auto.kept.tolist() == dense.kept.tolist() and auto.details["graph"] is False
    step = sel("facility-location", kernel="euclidean", dense_limit=100, sample=100)
    big = step.run(context(x, seed=4), np.arange(200), 20)
    assert big.details["graph"] and big.details["knn_sample"] == 100 and big.details["knn_sample_budget"] == 10
    assert big.details["knn"] == int(list(big.details["knn_trials"])[-1])
    assert big.details["knn_gap"] == big.details["knn_trials"][str(big.details["knn"])]
    again = step.run(context(x, seed=4), np.arange(200), 20)
    assert again.kept.tolist() == big.kept.tolist() and again.details == big.details   # seeded
    assert step.config()["knn"] == "auto" and step.config()["tolerance"] == 0.001
    assert "tolerance" not in sel("facility-location").config()     # cosine-knn config unchanged
    assert sel("facility-location").config()["knn"] == 10
    with pytest.raises(ConfigError, match="auto"):
        sel("facility-location", knn="auto")
    with pytest.raises(ConfigError, match="knn"):
        sel("facility-location", kernel="euclidean", knn=0)


def test_superfiltering_d_preset_uses_the_reference_kernel_and_segment() -> None:
    from siftkit.presets import PRESETS
    from siftkit.signals.segments import SEGMENTS

    step = PRESETS["superfiltering-d"]["steps"][-1]
    assert step["select"] == "facility-location" and step["kernel"] == "euclidean"
    assert step["embedding"]["segment"] == "conversation" and "conversation" in SEGMENTS
    assert step["embedding"]["backend"] == "sentence-transformers"      # MiniLM by default


def test_facility_location_selector_budget_and_stochastic() -> None:
    rng = np.random.default_rng(6)
    x, _ = blobs(rng, [60, 60, 60], d=8)
    ctx = context(x, seed=1)
    lazy = sel("facility-location", knn=10).run(ctx, np.arange(180), 3)
    # one pick per well-separated blob
    assert sorted(k // 60 for k in lazy.kept.tolist()) == [0, 1, 2]
    st1 = sel("facility-location", method="stochastic", epsilon=0.1).run(ctx, np.arange(180), 20)
    st2 = sel("facility-location", method="stochastic", epsilon=0.1).run(context(x, seed=1), np.arange(180), 20)
    assert st1.kept.tolist() == st2.kept.tolist() and len(set(st1.kept.tolist())) == 20
    full = sel("facility-location", knn=10).run(ctx, np.arange(180), 20)
    assert st1.details["objective"] >= 0.9 * full.details["objective"]


def test_facility_location_approximate_knn_path() -> None:
    from siftkit.selectors.facility_location import knn_graph

    rng = np.random.default_rng(7)
    x, _ = blobs(rng, [300] * 4, d=8)
    exact_nbr, _ = knn_graph(x, 5)
    ivf_nbr, _ = knn_graph(x, 5, exact_limit=100, nprobe=64)  # nprobe >= nlist: IVF is exhaustive
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact_nbr.tolist(), ivf_nbr.tolist())])
    assert recall > 0.99


# ------------------------------------------------------------------------------------------------ kmeans

def test_allocate_exact_capped_and_redistributed() -> None:
    from siftkit.selectors.kmeans import allocate

    sizes = np.array([100, 3, 50, 1, 46])
    for budget in (1, 7, 60, 150, 199, 200, 500):
        for weights in (sizes, np.ones(5)):
            q = allocate(sizes, budget, weights)
            assert q.sum() == min(budget, sizes.sum()) and np.all(q <= sizes) and np.all(q >= 0)
    q = allocate(sizes, 100, sizes)  # proportional: within one unit of the exact share
    assert np.all(np.abs(q - 100 * sizes / sizes.sum()) < 1)
    q = allocate(sizes, 100, np.ones(5))  # equal with redistribution: max-min fair
    assert q.tolist()[1] == 3 and q.tolist()[3] == 1 and max(q) - min(q[sizes > q]) <= 1


def ref_balanced(labels: np.ndarray, quota: np.ndarray, scores: np.ndarray) -> list[int]:
    chosen = []
    for c in range(len(quota)):
        members = [i for i in range(len(labels)) if labels[i] == c]
        members.sort(key=lambda i: (-scores[i], i))
        chosen += [(r, c, i) for r, i in enumerate(members[:quota[c]])]
    return [i for _, _, i in sorted(chosen)]


def test_balanced_pick_matches_reference() -> None:
    from siftkit.selectors.kmeans import allocate, balanced_pick

    rng = np.random.default_rng(8)
    labels = rng.integers(0, 7, size=300)
    scores = np.round(rng.normal(size=300), 1)  # ties on purpose
    quota = allocate(np.bincount(labels, minlength=7), 90, np.bincount(labels, minlength=7))
    got = balanced_pick(labels, quota, scores, "top", 1.0, rng)
    assert got.tolist() == ref_balanced(labels, quota, scores)


def test_kmeans_selector_balances_clusters_and_takes_top() -> None:
    rng = np.random.default_rng(9)
    x, truth = blobs(rng, [400, 200, 100, 50], d=12)
    length = rng.integers(1, 1000, size=len(x)).astype(float)
    ctx = context(x, {"tokens_total": length}, seed=3)
    res = sel("kmeans", k=4, by="tokens_total").run(ctx, np.arange(len(x)), 75)
    assert len(res.kept) == 75 and len(set(res.kept.tolist())) == 75
    per_blob = np.bincount(truth[res.kept], minlength=4)
    assert per_blob.tolist() == [40, 20, 10, 5]          # proportional to cluster size
    for b in range(4):                                   # the longest of each cluster
        members = np.flatnonzero(truth == b)
        top = members[np.argsort(-length[members], kind="stable")][:per_blob[b]]
        assert set(res.kept[truth[res.kept] == b].tolist()) == set(top.tolist())
    again = sel("kmeans", k=4, by="tokens_total").run(context(x, {"tokens_total": length}, seed=3),
                                                      np.arange(len(x)), 75)
    assert again.kept.tolist() == res.kept.tolist()
    eq = sel("kmeans", k=4, by="tokens_total", quota="equal").run(ctx, np.arange(len(x)), 200)
    assert sorted(np.bincount(truth[eq.kept], minlength=4).tolist()) == [50, 50, 50, 50]
    eq2 = sel("kmeans", k=4, quota="equal").run(ctx, np.arange(len(x)), 400)  # 50 cap: redistributed
    assert np.bincount(truth[eq2.kept], minlength=4)[3] == 50 and len(eq2.kept) == 400


def test_kmeans_sampling_prefers_high_scores() -> None:
    rng = np.random.default_rng(10)
    x, _ = blobs(rng, [500, 500], d=8)
    score = rng.normal(size=1000)
    ctx = context(x, {"q": score}, seed=0)
    cold = sel("kmeans", k=2, by="q", within="sample", temperature=1e-4).run(ctx, np.arange(1000), 100)
    top = sel("kmeans", k=2, by="q").run(ctx, np.arange(1000), 100)
    assert set(cold.kept.tolist()) == set(top.kept.tolist())   # T -> 0 is top-k
    warm = sel("kmeans", k=2, by="q", within="sample", temperature=1.0).run(ctx, np.arange(1000), 100)
    assert 0.3 < score[warm.kept].mean() < score[top.kept].mean()   # exp(q) favours, but does not only take, the top


def test_length_kmeans_preset_shape() -> None:
    from siftkit.presets import PRESETS

    steps = PRESETS["length-kmeans"]["steps"]
    km = next(s for s in steps if s.get("select") == "kmeans")
    assert km["by"] == "tokens_total"
    params = {k: v for k, v in km.items() if k != "select"}
    assert sel("kmeans", **params).needs() == ["tokens_total"]


# ------------------------------------------------------------------------------------------------ semdedup

def test_semdedup_kept_single_cluster_matches_greedy_reference() -> None:
    rng = np.random.default_rng(11)
    base = unit(rng, 60, 8)
    noisy = base[rng.integers(0, 60, size=140)] + 0.05 * rng.normal(size=(140, 8)).astype(np.float32)
    x = np.vstack([base, noisy]).astype(np.float32)
    ctx = context(x)
    res = sel("semdedup-kept", eps=0.05, k=1).run(ctx, np.arange(200), None)
    ref = sorted(ref_repr_filter(x, np.zeros(200), 0.95, 200))
    assert res.kept.tolist() == ref
    assert res.dropped["semantic_duplicate"] == 200 - len(ref) > 50


def test_semdedup_kept_per_cluster_reference_and_scores() -> None:
    from siftkit.selectors.semdedup import semdedup_keep

    rng = np.random.default_rng(12)
    x = unit(rng, 300, 3)
    labels = rng.integers(0, 5, size=300)
    scores = rng.normal(size=300)
    got = semdedup_keep(x, labels, 0.1, scores, block=16)
    ref = []
    for c in range(5):
        m = np.flatnonzero(labels == c)
        ref += m[ref_repr_filter(x[m], scores[m], 0.9, len(m))].tolist()
    assert got.tolist() == sorted(ref)


def test_semdedup_uses_kmeans_and_keeps_one_per_duplicate_group(tmp_path) -> None:
    rng = np.random.default_rng(13)
    base = unit(rng, 40, 16)
    x = np.repeat(base, 3, axis=0) + 0.001 * rng.normal(size=(120, 16)).astype(np.float32)
    out = tmp_path / "sem.jsonl"
    res = sel("semdedup", eps=0.01, k=8, clusters_path=str(out)).run(context(x, seed=2), np.arange(120), None)
    assert len(res.kept) == 40 and sorted(set((res.kept // 3).tolist())) == list(range(40))
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40 and all(r["size"] == 3 for r in rows)
    for r in rows:   # each group is one original and its two noisy copies
        assert len({int(i[1:]) // 3 for i in [r["kept"], *r["duplicates"]]}) == 1


def ref_semdedup(x, labels, eps, centroids=None, order="far"):
    """The reference rule, transcribed from its description (METHODS.md): per cluster, sort the members
    by cosine distance to the centroid (farthest first), take the upper triangle of their similarity
    matrix, and drop member j when the column maximum (its similarity to any earlier member) > 1 - eps."""
    keep = []
    for c in sorted(set(labels.tolist())):
        m = [i for i in range(len(x)) if labels[i] == c]
        cen = x[m].mean(axis=0) if centroids is None else centroids[c]
        cen = cen / np.linalg.norm(cen)
        d = {i: 1.0 - float(x[i] @ cen) for i in m}
        if order == "far":
            m = sorted(m, key=lambda i: (-d[i], m.index(i)))
        sim = np.array([[float(x[a] @ x[b]) for b in m] for a in m])
        for j in range(len(m)):
            if j == 0 or max(sim[i, j] for i in range(j)) <= 1 - eps:
                keep.append(m[j])
    return sorted(keep)


def test_semdedup_three_points_reference_keeps_only_the_first() -> None:
    ang = np.deg2rad([0.0, 16.0, 32.0])
    x = np.stack([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)
    ctx = context(x)
    # walked 0, 16, 32: 16 is within 1 - 0.05 of 0, 32 of 16 (which was dropped): only 0 stays
    ref = sel("semdedup", eps=0.05, k=1, order="pool").run(ctx, np.arange(3), None)
    assert ref.kept.tolist() == [0] == ref_semdedup(x, np.zeros(3, int), 0.05, order="pool")
    assert ref.dropped == {"semantic_duplicate": 2}
    kept_only = sel("semdedup-kept", eps=0.05, k=1).run(ctx, np.arange(3), None)
    assert kept_only.kept.tolist() == [0, 2]       # 32 vs the kept 0 only: cos 32 deg = 0.85 < 0.95


def test_semdedup_matches_the_transcribed_reference_rule() -> None:
    from siftkit.selectors.semdedup import semdedup_reference_keep

    rng = np.random.default_rng(21)
    base = unit(rng, 40, 6)
    x = base[rng.integers(0, 40, size=240)] + 0.08 * rng.normal(size=(240, 6)).astype(np.float32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, 4, size=240)
    cents = np.stack([x[labels == c].mean(axis=0) * 3.0 for c in range(4)])   # scale must not matter
    for eps in (0.02, 0.1):
        got = semdedup_reference_keep(x, labels, eps, cents, block=7).tolist()
        assert got == ref_semdedup(x, labels, eps, cents)
        assert got == semdedup_reference_keep(x, labels, eps, None, block=64).tolist()   # mean centroid
    res = sel("semdedup", eps=0.1, k=1).run(context(x), np.arange(240), None)
    assert res.kept.tolist() == ref_semdedup(x, np.zeros(240, int), 0.1)
    assert len(res.kept) < len(sel("semdedup-kept", eps=0.1, k=1).run(context(x), np.arange(240), None).kept)


# ------------------------------------------------------------------------------------------------ config

@pytest.mark.parametrize("name,params", [
    ("kmeans", {"k": 0}), ("kmeans", {"quota": "fair"}), ("kmeans", {"within": "sample"}),
    ("repr-filter", {"threshold": 1.5}), ("facility-location", {"method": "exact"}),
    ("facility-location", {"knn": 0}), ("facility-location", {"kernel": "rbf"}),
    ("facility-location", {"kernel": "euclidean-dense", "method": "stochastic"}), ("semdedup", {"eps": -1}), ("semdedup", {"order": "random"}),
    ("semdedup-kept", {"order": "near"}), ("kmeans", {"clusters": 5}),
])
def test_bad_params_are_config_errors(name: str, params: dict) -> None:
    with pytest.raises(ConfigError):
        sel(name, **params)


def test_budgeted_selectors_require_budget_and_return_exact_counts() -> None:
    rng = np.random.default_rng(14)
    x = unit(rng, 120, 6)
    ctx = context(x, {"s": rng.normal(size=120)})
    for name, params in [("kmeans", {"k": 5}), ("k-center", {}), ("facility-location", {}),
                         ("repr-filter", {"by": "s", "threshold": 0.2})]:
        s = sel(name, **params)
        for budget in (1, 17, 120, 500):
            kept = s.run(ctx, np.arange(120), budget).kept
            assert len(kept) == min(budget, 120) and len(set(kept.tolist())) == len(kept), (name, budget)
        if name != "repr-filter":
            with pytest.raises(ConfigError):
                s.run(ctx, np.arange(120), None)


def test_default_embedding_spec_reaches_loader() -> None:
    seen = []
    x = unit(np.random.default_rng(0), 10, 4)
    ctx = context(x)
    ctx.vector_loader = lambda spec: seen.append(spec) or x
    sel("k-center").run(ctx, np.arange(10), 3)
    sel("k-center", embedding="sentence-transformers").run(ctx, np.arange(10), 3)
    assert seen == [{"name": "embedding", "backend": "static", "segment": "query"},
                    {"name": "embedding", "backend": "sentence-transformers", "segment": "query"}]


# ------------------------------------------------------------------------------------------------ end to end

def test_pipeline_length_kmeans_preset_and_dedup_steps(small_pool, tmp_path) -> None:
    pytest.importorskip("static_model")
    from siftkit import api

    cache = str(tmp_path / "cache")
    sel_a = api.select(str(small_pool), 3, preset="length-kmeans", cache_dir=cache, seed=1)
    assert len(sel_a.selected) == 3
    km = next(r for r in sel_a.steps if r.name == "kmeans")
    assert sum(km.details["quota"]) == 3
    sel_b = api.select(str(small_pool), 3, preset="length-kmeans", cache_dir=cache, seed=1)
    assert sel_b.selected.tolist() == sel_a.selected.tolist()
    steps = [{"dedup": "minhash", "threshold": 0.5, "ngram": 2}, {"dedup": "semantic", "eps": 0.01},
             {"select": "k-center"}]
    sel_c = api.select(str(small_pool), 4, steps=steps, cache_dir=cache)
    assert len(sel_c.selected) == 4
    names = [r.name for r in sel_c.steps]
    assert names == ["minhash-dedup", "semdedup", "k-center"]
    assert sel_c.steps[0].dropped["near_duplicate"] >= 1   # "what is   2+2?" duplicates "What is 2+2?"
