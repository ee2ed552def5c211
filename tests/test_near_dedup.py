"""MinHash + LSH near-duplicate removal, against exact Jaccard all-pairs references."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from diversity_helpers import context, pool_table, qa_pool
from siftkit.errors import ConfigError
from siftkit.registry import make, selector_class
from siftkit.selectors.near_dedup import (
    connected_components,
    exact_jaccard,
    lsh_params,
    minhash,
    normalize_text,
    shingle_hashes,
)

WORDS = [f"w{i}" for i in range(3000)]


def word_shingles(text: str, n: int) -> set[tuple[str, ...]]:
    w = normalize_text(text).split()
    if not w:
        return set()
    if len(w) < n:
        return {tuple(w)}
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def ref_clusters(texts: list[str], n: int, threshold: float) -> list[int]:
    """Exact: union-find over all pairs with Jaccard >= threshold; label = smallest member."""
    sets = [word_shingles(t, n) for t in texts]
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            a, b = sets[i], sets[j]
            if a and b and len(a & b) / len(a | b) >= threshold:
                ri, rj = find(i), find(j)
                parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(len(texts))]


def near_dup_texts(rng: np.random.Generator, n_base: int, copies: int, edits: int, length: int = 80) -> list[str]:
    texts = []
    for _ in range(n_base):
        base = list(rng.choice(WORDS, size=length))
        texts.append(" ".join(base))
        for _ in range(copies):
            v = list(base)
            for _ in range(edits):
                v[int(rng.integers(length))] = str(rng.choice(WORDS))
            texts.append(" ".join(v).upper() if rng.random() < 0.3 else " ".join(v))
    order = rng.permutation(len(texts))
    return [texts[i] for i in order]


def dedup(**params):
    return make(selector_class("minhash-dedup"), params, "minhash-dedup")


def test_shingle_hashes_batch_equals_single_and_counts() -> None:
    texts = [normalize_text(t) for t in ["The quick brown fox jumps over the lazy dog", "hello", "", "a  b\tc d",
                                         "ünïcode wörds ok fine", "x" * 30]]
    for kind, n in [("word", 3), ("char", 5), ("word", 1)]:
        h, off = shingle_hashes(texts, kind, n)
        for i, t in enumerate(texts):
            hs, _ = shingle_hashes([t], kind, n)
            assert np.array_equal(hs, h[off[i]:off[i + 1]])
    h, off = shingle_hashes(texts, "word", 3)
    assert np.diff(off).tolist() == [7, 1, 0, 2, 2, 1]
    # identical shingles hash identically wherever they occur; different ones differ
    h2, _ = shingle_hashes(["quick brown fox", "the quick brown fox"], "word", 3)
    assert h2[0] == h2[2] and h2[1] != h2[0]


def test_minhash_estimates_jaccard() -> None:
    rng = np.random.default_rng(0)
    errors = []
    for t in range(100):
        k = int(rng.integers(0, 200))
        base = rng.integers(0, 2**63, size=200, dtype=np.uint64)
        other = np.concatenate([base[:200 - k], rng.integers(0, 2**63, size=k, dtype=np.uint64)])
        sig = minhash(np.concatenate([base, other]), np.array([0, 200, 400]), 256, seed=t)
        errors.append((sig[0] == sig[1]).mean() - (200 - k) / (200 + k))
    assert abs(np.mean(errors)) < 0.01 and np.std(errors) < 0.05   # binomial sd <= 0.031 at 256 perms


def test_lsh_params_and_components() -> None:
    b, r = lsh_params(0.8, 128)                    # balanced: few candidates far from the threshold
    assert b * r <= 128 and 1 - (1 - 0.9 ** r) ** b > 0.85 and 1 - (1 - 0.5 ** r) ** b < 0.01
    b, r = lsh_params(0.8, 128, fn_weight=0.9)     # recall-oriented (used when verifying)
    assert b * r <= 128 and 1 - (1 - 0.9 ** r) ** b > 0.99 and 1 - (1 - 0.5 ** r) ** b < 0.2
    assert dedup(threshold=0.8).bands == b
    rng = np.random.default_rng(1)
    n = 200
    u, v = rng.integers(0, n, 150), rng.integers(0, n, 150)
    labels = connected_components(n, u, v)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, c in zip(u.tolist(), v.tolist()):
        ra, rc = find(a), find(c)
        parent[max(ra, rc)] = min(ra, rc)
    assert labels.tolist() == [find(i) for i in range(n)]


@pytest.mark.parametrize("verify", ["exact", "minhash"])
def test_minhash_dedup_matches_exact_reference(verify: str) -> None:
    rng = np.random.default_rng(2)
    # 3 edits in 80 words: Jaccard ~0.7-0.9 with 3-grams; distinct texts: ~0
    texts = near_dup_texts(rng, 40, 3, 2) + [" ".join(rng.choice(WORDS, size=80)) for _ in range(60)]
    pool = qa_pool(texts)
    ctx = context(np.zeros((len(texts), 1), np.float32), pool=pool, seed=5)
    res = dedup(segment="query", ngram=3, threshold=0.6, verify=verify, num_perm=128).run(
        ctx, np.arange(len(texts)), None)
    ref = ref_clusters(texts, 3, 0.6)
    expected = sorted(set(ref))                     # keep="first": the smallest member of each cluster
    assert res.kept.tolist() == expected
    assert res.dropped["near_duplicate"] == len(texts) - len(expected) == 120


def test_minhash_dedup_keep_policies_and_clusters_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = " ".join(rng.choice(WORDS, size=60))
    texts = [base, base + " extra", "unrelated " + " ".join(rng.choice(WORDS, size=60)), base.upper()]
    pool = qa_pool(texts)
    ctx = context(np.zeros((4, 1), np.float32), {"q": [0.1, 0.2, 0.5, 0.9]}, pool=pool)
    out = tmp_path / "dups" / "clusters.jsonl"
    first = dedup(segment="query", clusters_path=str(out)).run(ctx, np.arange(4), None)
    assert first.kept.tolist() == [0, 2]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"kept": "r0", "duplicates": ["r1", "r3"], "size": 3}]
    assert dedup(segment="query", keep="longest").run(ctx, np.arange(4), None).kept.tolist() == [1, 2]
    assert dedup(segment="query", keep="q").run(ctx, np.arange(4), None).kept.tolist() == [2, 3]
    assert dedup(segment="query").needs() == [] and dedup(keep="q").needs() == ["q"]
    # only candidates are considered
    assert dedup(segment="query").run(ctx, np.array([1, 2, 3]), None).kept.tolist() == [1, 2]


def test_minhash_dedup_segments_multi_turn_and_empty() -> None:
    shared = "please explain how photosynthesis converts light energy into chemical energy in plants today"
    convos = [
        [("user", "hi"), ("assistant", "hello"), ("user", shared), ("assistant", "Answer A about chlorophyll.")],
        [("user", shared), ("assistant", "A completely different answer about the Calvin cycle and ATP.")],
        [("user", ""), ("assistant", "")],
        [("user", ""), ("assistant", "")],
    ]
    ctx = context(np.zeros((4, 1), np.float32), pool=pool_table(convos))
    # query of record 0 = "hi hello <shared>", of record 1 = "<shared>": Jaccard of 5-grams 9/11
    q = dedup(segment="query", threshold=0.7, verify="exact").run(ctx, np.arange(4), None)
    assert q.kept.tolist() == [0, 2, 3]             # empty texts are never duplicates
    r = dedup(segment="response", threshold=0.7, verify="exact").run(ctx, np.arange(4), None)
    assert r.kept.tolist() == [0, 1, 2, 3]


def test_exact_jaccard_helper() -> None:
    h, off = shingle_hashes(["a b c d", "a b c e", "x y"], "word", 1)
    j = exact_jaccard(h, off, np.array([0, 0]), np.array([1, 2]))
    assert j.tolist() == [3 / 5, 0.0]


@pytest.mark.parametrize("params", [{"threshold": 0}, {"verify": "maybe"}, {"bands": 20}, {"bands": 20, "rows": 10},
                                    {"shingle": "line"}, {"segment": "turns"}, {"ngram": 0}, {"backend": "rust"}])
def test_bad_params(params: dict) -> None:
    with pytest.raises(ConfigError):
        dedup(**params)


# ---------------------------------------------------------------- issue 18 item 6: the fast paths vs definitions
M64 = (1 << 64) - 1
R_POLY = 0x9E3779B97F4A7C15 | 1


def splitmix_int(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def shingle_hash_definition(piece: bytes) -> int:
    """The documented shingle hash, one shingle at a time in Python integers: the polynomial
    sum_t (byte_t + 1) R^t mod 2^64 of the shingle's bytes, xor length * C, then splitmix64."""
    h = sum((c + 1) * pow(R_POLY, t, 1 << 64) for t, c in enumerate(piece)) & M64
    return splitmix_int(h ^ (len(piece) * 0xD6E8FEB86659FD93 & M64))


def literal_shingles(text: str, kind: str, n: int) -> list[bytes]:
    if kind == "word":
        w = text.split(" ") if text else []
        grams = [w[i:i + n] for i in range(len(w) - n + 1)] or ([w] if w else [])
        return [" ".join(g).encode() for g in grams]
    b = text.encode()
    return [b[i:i + n] for i in range(len(b) - n + 1)] or ([b] if b else [])


def test_shingle_hashes_equal_the_definition() -> None:
    texts = [normalize_text(t) for t in ["The quick brown fox jumps over the lazy dog again and again", "hello",
                                         "", "a b", "ünïcode wörds ok fine 数据 选择", "x" * 30, "one two three four"]]
    for kind, n in [("word", 5), ("word", 3), ("word", 1), ("char", 5), ("char", 1)]:
        h, off = shingle_hashes(texts, kind, n)
        for i, t in enumerate(texts):
            want = [shingle_hash_definition(p) for p in literal_shingles(t, kind, n)]
            assert h[off[i]:off[i + 1]].tolist() == want, (kind, n, t)
    for texts in ([], [""], ["", ""]):
        h, off = shingle_hashes(texts, "word", 5)
        assert len(h) == 0 and off.tolist() == [0] * (len(texts) + 1)


def test_minhash_numpy_equals_the_definition() -> None:
    from siftkit.selectors.near_dedup import _perm_params

    rng = np.random.default_rng(3)
    sizes = [5, 0, 1, 40, 7, 0, 13, 2]
    hashes = rng.integers(0, 2**63, size=sum(sizes), dtype=np.uint64) * np.uint64(2)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    a, b = _perm_params(16, 9)
    for chunk in (3, 8, 4096):                      # groups split records at every possible place
        sig = minhash(hashes, offsets, 16, seed=9, chunk=chunk)
        for i, (s, e) in enumerate(itertools.pairwise(offsets.tolist())):
            xs = [int(x) >> 32 for x in hashes[s:e]]
            want = [min(((int(ap) * x + int(bp)) & M64) >> 32 for x in xs) if xs else 2**32 - 1
                    for ap, bp in zip(a, b)]
            assert sig[i].tolist() == want


def test_minhash_rensa_backend() -> None:
    pytest.importorskip("rensa")
    rng = np.random.default_rng(4)
    base = rng.integers(0, 2**63, size=300, dtype=np.uint64)
    other = np.concatenate([base[:200], rng.integers(0, 2**63, size=100, dtype=np.uint64)])   # J = 0.5
    hashes = np.concatenate([base, other])
    offsets = np.array([0, 300, 300, 600])
    sig = minhash(hashes, offsets, 512, seed=1, backend="rensa")
    assert sig.dtype == np.uint32 and sig.shape == (3, 512)
    assert (sig[1] == 2**32 - 1).all()                                  # no shingles
    assert abs((sig[0] == sig[2]).mean() - 0.5) < 0.08
    assert np.array_equal(sig, minhash(hashes, offsets, 512, seed=1, backend="rensa"))   # deterministic
    assert not np.array_equal(sig, minhash(hashes, offsets, 512, seed=2, backend="rensa"))
    # end to end: same clusters as the exact reference; the backend is part of the config
    texts = near_dup_texts(np.random.default_rng(2), 40, 3, 2) + [" ".join(rng.choice(WORDS, size=80))
                                                                 for _ in range(60)]
    ctx = context(np.zeros((len(texts), 1), np.float32), pool=qa_pool(texts), seed=5)
    step = dedup(segment="query", ngram=3, threshold=0.6, verify="exact", num_perm=128, backend="rensa")
    assert step.config()["backend"] == "rensa" and "backend" not in dedup().config()
    assert step.requirements() == {"rensa": "the rensa MinHash backend"}
    assert step.run(ctx, np.arange(len(texts)), None).kept.tolist() == sorted(set(ref_clusters(texts, 3, 0.6)))


def brute_force_lsh(threshold: float, num_perm: int, fn_weight: float) -> tuple[int, int]:
    """Every (b, r) with b * r <= num_perm, integrals by the trapezoid rule on a fine grid."""
    best, best_err = (0, 0), np.inf
    lo, hi = np.linspace(0, threshold, 4001), np.linspace(threshold, 1, 4001)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - lo ** r) ** b, lo)
            fn = np.trapezoid((1 - hi ** r) ** b, hi)
            err = (1 - fn_weight) * fp + fn_weight * fn
            if err < best_err - 1e-12:
                best, best_err = (b, r), err
    return best


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
@pytest.mark.parametrize("num_perm,fn_weight", [(32, 0.5), (64, 0.9), (128, 0.5)])
def test_lsh_params_brute_force(threshold: float, num_perm: int, fn_weight: float) -> None:
    assert lsh_params(threshold, num_perm, fn_weight) == brute_force_lsh(threshold, num_perm, fn_weight)


def test_lsh_params_reach_any_rows() -> None:
    assert lsh_params(0.8, 128) == (9, 13)          # 117 of 128 permutations: not 128 // bands rows
    assert lsh_params(0.8, 128, fn_weight=0.9) == (14, 9)
