"""Selectors stream float16 vectors beyond SIFTKIT_VECTOR_MEMORY: same bytes, same selections, less memory.

Every comparison runs the selector twice on the same float16 memory-map: once with the whole float32 copy
(the default limit) and once streamed (limit 0) with a tiny conversion chunk, so every block a selector
asks for is assembled from many chunks. Inputs carry exact ties (duplicated rows, equal scores).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from diversity_helpers import context
from siftkit.errors import ConfigError
from siftkit.registry import make, selector_class
from siftkit.signals import vectors as vec
from siftkit.signals.vectors import RowsF32, candidate_rows, rows_f32, vector_memory_limit


def sel(name: str, **params):
    return make(selector_class(name), params, name)


def memmap16(tmp_path: Path, x: np.ndarray, name: str = "v.npy") -> np.ndarray:
    """``x`` written as a float16 .npy and opened read-only, as the signal cache serves vectors."""
    out = np.lib.format.open_memmap(tmp_path / name, mode="w+", dtype=np.float16, shape=x.shape)
    out[:] = x
    out.flush()
    del out
    return np.load(tmp_path / name, mmap_mode="r")


def tied_vectors(seed: int, n: int, d: int, clusters: int = 6) -> np.ndarray:
    """Clustered, unnormalised rows (norms 0.5-3) with exact duplicates, a zero row and repeated blocks."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))
    x *= rng.uniform(0.5, 3.0, size=(n, 1))
    dup = rng.integers(0, n, size=n // 5)
    x[rng.integers(0, n, size=n // 5)] = x[dup]          # exact duplicates: ties in every distance
    x[3] = 0.0
    x[n // 2:n // 2 + 10] = x[:10]
    return x


def streamed(monkeypatch: pytest.MonkeyPatch, chunk: int = 7) -> None:
    monkeypatch.setenv(vec.VECTOR_MEMORY_ENV, "0")
    monkeypatch.setattr(vec, "STREAM_CHUNK", chunk)


def whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vec.VECTOR_MEMORY_ENV, raising=False)


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


# ------------------------------------------------------------------------------------------------ RowsF32

@pytest.mark.parametrize("d", [1, 3, 17, 64, 385])
@pytest.mark.parametrize("normalize", [True, False])
def test_view_gives_rows_f32_bytes(tmp_path: Path, d: int, normalize: bool) -> None:
    rng = np.random.default_rng(d)
    v = memmap16(tmp_path, tied_vectors(d, 500, d))
    rows = rng.permutation(500)[:321]
    ref = rows_f32(v, rows, normalize=normalize)
    for chunk in (1, 5, 64, 1000):
        view = RowsF32(v, rows, normalize=normalize, chunk=chunk)
        assert view.shape == (321, d) and len(view) == 321
        assert same_bytes(view[0:321], ref)
        assert same_bytes(view[10:300:7], ref[10:300:7])
        pos = rng.permutation(321)[:100]
        assert same_bytes(view[pos], ref[pos])
        mask = rng.random(321) < 0.3
        assert same_bytes(view[mask], ref[mask])
        assert same_bytes(view[5], ref[5]) and same_bytes(view[-1], ref[-1])
        assert same_bytes(np.asarray(view), ref)
        view.cache_norms()                                    # k-center's re-reads: cached norms, same bytes
        assert same_bytes(view[0:321], ref) and same_bytes(view[pos], ref[pos])
    full = rows_f32(v, np.arange(500), normalize=normalize)
    allrows = RowsF32(v, None, normalize=normalize, chunk=3)
    assert same_bytes(allrows[0:500], full) and same_bytes(allrows[100:137], full[100:137])
    assert same_bytes(allrows[rows], ref)
    allrows.cache_norms()
    assert same_bytes(allrows[0:500], full) and same_bytes(allrows[rows], ref)
    assert allrows[490:600].shape == (10, d) and allrows[7:7].shape == (0, d)


def test_take_is_a_view_with_the_composed_rows_bytes(tmp_path: Path) -> None:
    v = memmap16(tmp_path, tied_vectors(2, 400, 13))
    rng = np.random.default_rng(2)
    rows = rng.permutation(400)[:300]
    pos = rng.permutation(300)[:120]
    for normalize in (True, False):
        for base in (RowsF32(v, rows, normalize=normalize, chunk=6), RowsF32(v, None, normalize=normalize, chunk=6)):
            picked = pos if base.rows is None else rows[pos]
            ref = rows_f32(v, picked, normalize=normalize)
            sub = base.take(pos)
            assert isinstance(sub, RowsF32) and sub.shape == (120, 13)
            assert same_bytes(sub[0:120], ref) and same_bytes(sub[pos[:50] % 120], ref[pos[:50] % 120])
            base.cache_norms()                              # norms carry over to a view taken afterwards
            sub = base.take(pos)
            assert (sub._norms is not None) == normalize
            assert same_bytes(sub[0:120], ref) and same_bytes(sub.take(np.arange(0, 120, 7))[0:18], ref[::7])


def test_view_never_writes_through_to_float32_input() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    before = x.copy()
    out = RowsF32(x, None, normalize=True, chunk=2)[0:4]
    assert np.array_equal(x, before)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)


def test_candidate_rows_whole_under_the_limit_streamed_above(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    v = memmap16(tmp_path, tied_vectors(1, 100, 8))
    rows = np.arange(0, 100, 2)
    need = 50 * 8 * 4
    a = candidate_rows(v, rows, normalize=True, limit=need)
    b = candidate_rows(v, rows, normalize=True, limit=need - 1)
    assert isinstance(a, np.ndarray) and isinstance(b, RowsF32)
    assert same_bytes(b[0:50], a)
    monkeypatch.setenv(vec.VECTOR_MEMORY_ENV, "1k")
    assert isinstance(candidate_rows(v, rows), RowsF32)        # 1,600 bytes > 1 KiB
    monkeypatch.setenv(vec.VECTOR_MEMORY_ENV, "2K")
    assert isinstance(candidate_rows(v, rows), np.ndarray)
    assert isinstance(candidate_rows(v, None), RowsF32)        # all 100 rows: 3,200 bytes


@pytest.mark.parametrize("raw,expect", [("0", 0), ("123", 123), ("512M", 512 * 2**20), ("8g", 8 * 2**30),
                                        ("1.5T", int(1.5 * 2**40)), ("64 MiB", 64 * 2**20), ("2GB", 2 * 2**30)])
def test_vector_memory_env(monkeypatch: pytest.MonkeyPatch, raw: str, expect: int) -> None:
    monkeypatch.setenv(vec.VECTOR_MEMORY_ENV, raw)
    assert vector_memory_limit() == expect


def test_vector_memory_env_default_and_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vec.VECTOR_MEMORY_ENV, raising=False)
    assert vector_memory_limit() == vec.VECTOR_MEMORY == 4 * 2**30
    monkeypatch.setenv(vec.VECTOR_MEMORY_ENV, "lots")
    with pytest.raises(ConfigError, match="SIFTKIT_VECTOR_MEMORY='lots' is not a size"):
        vector_memory_limit()


# ------------------------------------------------------------------------------------------------ selectors

def run_both(monkeypatch: pytest.MonkeyPatch, v: np.ndarray, columns: dict, name: str, params: dict,
             cand: np.ndarray, budget: int | None, seed: int = 3):
    whole(monkeypatch)
    a = sel(name, **params).run(context(v, columns, seed=seed), cand, budget)
    streamed(monkeypatch)
    b = sel(name, **params).run(context(v, columns, seed=seed), cand, budget)
    return a, b


def candidate_sets(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.arange(n), np.sort(rng.choice(n, n * 2 // 3, replace=False)), rng.permutation(n)[: n // 2]]


@pytest.mark.parametrize("within,quota", [("top", "proportional"), ("sample", "equal"), ("top", "equal")])
def test_kmeans_streamed_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, within: str,
                                           quota: str) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(11)
    n = 900
    v = memmap16(tmp_path, tied_vectors(11, n, 24))
    score = rng.integers(0, 5, n).astype(np.float64)          # few distinct values: ties everywhere
    for cand in candidate_sets(n, rng):
        a, b = run_both(monkeypatch, v, {"s": score}, "kmeans",
                        {"k": 12, "by": "s", "within": within, "quota": quota, "max_points_per_centroid": 20},
                        cand, 150)
        assert a.kept.tolist() == b.kept.tolist() and len(a.kept) == 150
        assert a.details == b.details and a.dropped == b.dropped


def test_kmeans_labels_streamed_with_small_assign_chunks(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from siftkit.selectors.kmeans import kmeans_labels

    v = memmap16(tmp_path, tied_vectors(5, 700, 16))
    x = rows_f32(v, np.arange(700), normalize=True)
    la, ca = kmeans_labels(x, 9, seed=4, max_points_per_centroid=30, chunk=50)
    lb, cb = kmeans_labels(RowsF32(v, None, normalize=True, chunk=3), 9, seed=4, max_points_per_centroid=30,
                           chunk=50)
    assert same_bytes(la, lb) and same_bytes(ca, cb)


@pytest.mark.parametrize("threshold,block", [(0.9, 2048), (0.95, 16), (1.0, 5), (0.5, 64)])
def test_repr_filter_streamed_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                threshold: float, block: int) -> None:
    rng = np.random.default_rng(12)
    n = 800
    v = memmap16(tmp_path, tied_vectors(12, n, 20))
    score = rng.integers(0, 4, n).astype(np.float64)
    score[rng.random(n) < 0.1] = np.nan
    for cand in candidate_sets(n, rng):
        for budget in (None, 60, len(cand)):
            a, b = run_both(monkeypatch, v, {"s": score}, "repr-filter",
                            {"by": "s", "threshold": threshold, "block": block}, cand, budget)
            assert a.kept.tolist() == b.kept.tolist()
            assert a.details == b.details and a.dropped == b.dropped


@pytest.mark.parametrize("normalize", [True, False])
def test_k_center_streamed_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             normalize: bool) -> None:
    rng = np.random.default_rng(13)
    n = 700
    v = memmap16(tmp_path, tied_vectors(13, n, 12))
    flag = np.zeros(n, dtype=bool)
    flag[rng.choice(n, 6, replace=False)] = True
    for cand in candidate_sets(n, rng):
        for initial in (None, "init"):
            a, b = run_both(monkeypatch, v, {"init": flag}, "k-center",
                            {"normalize": normalize, "initial": initial}, cand, 120)
            assert a.kept.tolist() == b.kept.tolist() and len(a.kept) == 120
            assert a.details == b.details


@pytest.mark.parametrize("cand_size,grow_below", [(1024, 4), (4, 4), (1, 1), (16, 50)])
def test_k_center_greedy_streamed_through_many_refreshes(tmp_path: Path, cand_size: int, grow_below: int) -> None:
    """Tiny candidate sets force a refresh (a re-read of the rows) every few picks; duplicated rows make
    exact distance ties, which must break the same way."""
    from siftkit.selectors.kcenter import k_center_greedy

    v = memmap16(tmp_path, tied_vectors(14, 600, 9))
    rows = np.random.default_rng(14).permutation(600)[:500]
    x = rows_f32(v, rows, normalize=True)
    view = RowsF32(v, rows, normalize=True, chunk=4)
    a = k_center_greedy(x, 200, first=7, cand_size=cand_size, grow_below=grow_below)
    b = k_center_greedy(view, 200, first=7, cand_size=cand_size, grow_below=grow_below)
    assert a.tolist() == b.tolist()
    init = rows_f32(v, np.arange(590, 600), normalize=True)
    a = k_center_greedy(x, 100, initial=init, cand_size=cand_size, grow_below=grow_below)
    b = k_center_greedy(view, 100, initial=init, cand_size=cand_size, grow_below=grow_below)
    assert a.tolist() == b.tolist()


def test_diversity_report_streamed_is_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    from siftkit.diversity import diversity_report

    v = memmap16(tmp_path, tied_vectors(15, 600, 16))
    selected = np.arange(0, 600, 9)
    whole(monkeypatch)
    a = diversity_report(v, selected, k=10, sample=200, seed=2)
    streamed(monkeypatch, chunk=11)
    b = diversity_report(v, selected, k=10, sample=200, seed=2)
    assert a == b


@pytest.mark.parametrize("name", ["semdedup", "semdedup-kept"])
def test_semdedup_streamed_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(17)
    n = 900
    v = memmap16(tmp_path, tied_vectors(17, n, 16))
    score = rng.integers(0, 4, n).astype(np.float64)
    score[rng.random(n) < 0.1] = np.nan
    orders = ["far", "near", "pool"] if name == "semdedup" else ["far"]
    for cand in candidate_sets(n, rng):
        for k, order, by in [(None, orders[0], None), (7, orders[-1], None), (7, orders[0], "s"),
                             (1, orders[min(1, len(orders) - 1)], None)]:
            files = [tmp_path / f"{name}-{i}.jsonl" for i in range(2)]
            whole(monkeypatch)
            a = sel(name, eps=0.1, k=k, by=by, order=order, clusters_path=str(files[0])).run(
                context(v, {"s": score}, seed=4), cand, None)
            streamed(monkeypatch)
            b = sel(name, eps=0.1, k=k, by=by, order=order, clusters_path=str(files[1])).run(
                context(v, {"s": score}, seed=4), cand, None)
            assert a.kept.tolist() == b.kept.tolist() and 0 < len(a.kept) < len(cand)
            assert a.dropped == b.dropped
            assert {**a.details, "clusters_path": ""} == {**b.details, "clusters_path": ""}
            assert files[0].read_bytes() == files[1].read_bytes() and files[0].stat().st_size > 0


@pytest.mark.parametrize("normalize", [True, False])
def test_diverseevol_streamed_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                normalize: bool) -> None:
    rng = np.random.default_rng(18)
    n = 700
    v = memmap16(tmp_path, tied_vectors(18, n, 12))
    for cand in candidate_sets(n, rng):
        for initial_size, round_size, budget in [(20, 30, 130), (0, 45, 100), (5, 1000, 60)]:
            a, b = run_both(monkeypatch, v, {}, "diverseevol", {"initial_size": initial_size, "round_size": round_size,
                                                                "normalize": normalize}, cand, budget)
            assert a.kept.tolist() == b.kept.tolist() and len(a.kept) == budget
            assert a.details == b.details


def test_diverseevol_reembed_rows_streamed_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-embedding is the encoder's float32 output; above the limit each round reads its rows through a
    view of it instead of copying them."""
    n = 500
    v = memmap16(tmp_path, tied_vectors(19, n, 10))
    seen: list[int] = []

    def reembed(rows: np.ndarray) -> np.ndarray:             # depends on the selection: rounds differ
        seen.append(len(rows))
        return np.asarray(v, dtype=np.float32) + np.float32(0.01 * len(rows))

    cand = np.random.default_rng(19).permutation(n)[:400]
    a, b = run_both(monkeypatch, v, {}, "diverseevol", {"initial_size": 10, "round_size": 25, "reembed": reembed},
                    cand, 90)
    assert a.kept.tolist() == b.kept.tolist() and len(a.kept) == 90
    assert a.details == b.details and a.details["rounds"] == 4 and seen == [10, 35, 60, 85] * 2


@pytest.mark.parametrize("rule", ["balanced", "reference"])
def test_rds_streamed_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: str) -> None:
    """Targets are near copies of pool rows (ties between duplicated candidates); a small chunk makes the
    top-k merge run across many chunks and a small first k makes it retry with a larger one."""
    from siftkit.selectors import rds

    rng = np.random.default_rng(20)
    n = 800
    raw = tied_vectors(20, n, 14)
    v = memmap16(tmp_path, raw)
    t = raw[rng.choice(n, 9, replace=False)] + 0.05 * rng.normal(size=(9, 14))
    t = rows_f32(t, np.arange(9), normalize=True)
    for tasks in (np.asarray(["a"] * 9, dtype=object), np.asarray(list("aaabbbbcc"), dtype=object)):
        for cand in candidate_sets(n, rng):
            runs = []
            for mode in (whole, streamed):
                mode(monkeypatch)
                s = sel("rds", targets="unused.jsonl", embedding="static", chunk=37, rule=rule)
                monkeypatch.setattr(s, "target_vectors", lambda tasks=tasks: (t, tasks))   # encoder: tested elsewhere
                runs.append(s.run(context(v, seed=5), cand, 150))
            a, b = runs
            assert a.kept.tolist() == b.kept.tolist() and len(a.kept) == 150
            assert a.details == b.details
    streamed(monkeypatch)
    x = candidate_rows(v, np.arange(n), normalize=True)
    assert isinstance(x, RowsF32)
    tasks = np.asarray(["a"] * 9, dtype=object)
    assert rds.rds_select(x, t, tasks, 600, chunk=50).tolist() == \
        rds.rds_select(rows_f32(v, np.arange(n), normalize=True), t, tasks, 600, chunk=50).tolist()


@pytest.mark.parametrize("params", [
    {},                                                                    # exact kNN, flat index
    {"exact_limit": 100, "nprobe": 4},                                     # IVF, approximate
    {"method": "stochastic", "knn": 6},
    {"kernel": "euclidean", "dense_limit": 300, "sample": 150},            # kNN above 300, k measured on a sample
    {"kernel": "euclidean", "dense_limit": 1000},                          # dense N x N
])
def test_facility_location_streamed_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      params: dict) -> None:
    pytest.importorskip("faiss")
    from siftkit.selectors import facility_location

    monkeypatch.setattr(facility_location, "ADD_BLOCK", 53)   # streamed: the index is filled in many blocks
    rng = np.random.default_rng(21)
    n = 700
    v = memmap16(tmp_path, tied_vectors(21, n, 16))
    for cand in candidate_sets(n, rng):
        a, b = run_both(monkeypatch, v, {}, "facility-location", params, cand, 60)
        assert a.kept.tolist() == b.kept.tolist() and len(a.kept) == 60
        assert a.details == b.details


def test_faiss_index_filled_block_by_block_holds_the_same_vectors(tmp_path: Path) -> None:
    faiss = pytest.importorskip("faiss")
    from siftkit.selectors.facility_location import add_rows

    v = memmap16(tmp_path, tied_vectors(22, 600, 8))
    ref = rows_f32(v, np.arange(600), normalize=True)
    whole_index, block_index = faiss.IndexFlatIP(8), faiss.IndexFlatIP(8)
    add_rows(whole_index, ref)
    add_rows(block_index, RowsF32(v, None, normalize=True, chunk=5), block=77)
    assert block_index.ntotal == 600
    assert same_bytes(faiss.rev_swig_ptr(block_index.get_xb(), 600 * 8).copy(),
                      faiss.rev_swig_ptr(whole_index.get_xb(), 600 * 8).copy())
    # IVF: lists reserved from the rows' assignments, then filled block by block: the same lists, same order
    ivf = []
    for x in (ref, RowsF32(v, None, normalize=True, chunk=5)):
        quant = faiss.IndexFlatIP(8)
        index = faiss.IndexIVFFlat(quant, 8, 12, faiss.METRIC_INNER_PRODUCT)
        index.train(ref)
        add_rows(index, x, block=41)
        lists = faiss.downcast_InvertedLists(index.invlists)
        ivf.append([(faiss.rev_swig_ptr(lists.get_ids(j), lists.list_size(j)).copy().tolist(),
                     faiss.rev_swig_ptr(lists.get_codes(j), lists.list_size(j) * 32).copy().tobytes())
                    for j in range(12)])
        assert index.ntotal == 600 and sum(len(ids) for ids, _ in ivf[-1]) == 600
    assert ivf[0] == ivf[1]


def test_cherry_prompt_clusters_streamed_is_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    from siftkit.derive.cherry import prompt_clusters

    v = memmap16(tmp_path, tied_vectors(23, 800, 16))
    rows = np.sort(np.random.default_rng(23).choice(800, 650, replace=False))   # rows with a prompt ppl
    whole(monkeypatch)
    a = prompt_clusters(v, rows, 9, 3)
    streamed(monkeypatch)
    b = prompt_clusters(v, rows, 9, 3)
    assert same_bytes(a, b) and len(set(a[rows].tolist())) == 9
    other = np.setdiff1d(np.arange(800), rows)
    assert (a[other] == -1).all() and (a[rows] >= 0).all()


def test_decontaminate_nearest_items_blocks_match_one_copy(tmp_path: Path) -> None:
    from siftkit.selectors.decontaminate import nearest_items

    rng = np.random.default_rng(24)
    v = memmap16(tmp_path, tied_vectors(24, 900, 12))
    cand = rng.permutation(900)[:700]
    ev = np.asarray(v[cand[rng.choice(700, 30, replace=False)]], dtype=np.float32)   # copies of candidates
    ev /= np.maximum(np.linalg.norm(ev, axis=1, keepdims=True), 1e-12)
    pool = np.asarray(v[cand], dtype=np.float32)                           # the one-copy computation
    pool = pool / np.maximum(np.linalg.norm(pool, axis=1, keepdims=True), 1e-12)
    sims = pool @ ev.T
    for block in (8192, 64, 1):
        best, arg = nearest_items(v, cand, ev, block=block)
        assert arg.tolist() == sims.argmax(axis=1).tolist()
        assert np.allclose(best, sims.max(axis=1), atol=1e-6) and (best > 0.999).sum() >= 30
    best, arg = nearest_items(v, cand, ev)                                 # the default block: same bytes
    assert same_bytes(best, sims[np.arange(700), sims.argmax(axis=1)].astype(np.float64))


# ------------------------------------------------------------------------------------------------ memory

def numpy_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name,params,budget", [("kmeans", {"k": 8}, 1000), ("repr-filter", {}, 1000),
                                                ("k-center", {}, 8), ("semdedup", {"k": 250, "niter": 5}, None),
                                                ("diverseevol", {"initial_size": 8, "round_size": 4}, 16)])
def test_streamed_selector_never_holds_the_float32_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        name: str, params: dict, budget: int) -> None:
    """160K x 64: the whole float32 copy is 41 MB; streamed, the numpy heap stays well under it (k-means:
    its 65,536-row assignment block plus O(N) labels and sort keys; k-center: a 32,768-row refresh block plus
    O(N) distances; repr-filter: one walk block; semdedup: its k-means plus one ~640-row cluster at a time;
    diverseevol: k-center over a view of the rows not yet selected)."""
    if name in ("kmeans", "semdedup"):
        pytest.importorskip("faiss")
    n, d = 160_000, 64
    rng = np.random.default_rng(16)
    out = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float16, shape=(n, d))
    for s in range(0, n, 40_000):
        out[s:s + 40_000] = rng.normal(size=(40_000, d))
    out.flush()
    del out
    v = np.load(tmp_path / "big.npy", mmap_mode="r")
    cand = np.arange(n)
    copy = n * d * 4
    ctx = context(v, seed=1)
    whole(monkeypatch)
    peak_whole = numpy_peak(lambda: sel(name, **params).run(ctx, cand, budget))
    streamed(monkeypatch, chunk=4096)
    peak_stream = numpy_peak(lambda: sel(name, **params).run(ctx, cand, budget))
    assert peak_whole >= copy
    assert peak_stream < 0.7 * copy, (peak_stream, copy)
