"""``minhash-dedup``: near-duplicate removal with MinHash + LSH (Jaccard similarity on shingles).

1. Text of the chosen segment, lower-cased with whitespace collapsed; shingles are word n-grams
   (``shingle="word"``, default n=5) or byte n-grams (``"char"``). A text shorter than n words is one
   shingle. Empty texts are never duplicates.
2. Shingles are hashed for the whole batch at once (numpy + pyarrow, no per-record Python): a 64-bit
   polynomial hash of the shingle's bytes, mixed with its length (splitmix64). Word shingles are composed
   from per-word hashes (each distinct word of the batch hashed once), byte shingles from byte prefix sums;
   both give the hash of the shingle's bytes. Then ``num_perm`` MinHash values per record:
   ``backend="numpy"`` (default) min over shingles of ((a * (h >> 32) + b) mod 2^64) >> 32, in cache-sized
   blocks; ``backend="rensa"`` (extra ``minhash``) rensa's RMinHash over the same 64-bit shingle hashes
   (different values for the same seed; the backend is part of the step's config).
3. LSH: ``bands`` x ``rows`` (when not given, the pair with bands * rows <= num_perm minimising the false
   positive and negative probability mass, weighted 0.1 / 0.9 when candidates are verified, 0.5 / 0.5
   otherwise: ``lsh_params``). Records sharing a band bucket are candidate pairs: every pair in buckets of
   up to 8 members, and in larger buckets each member with the bucket's first member and its predecessor.
4. Candidate pairs are verified (``verify="minhash"``: estimated Jaccard >= threshold; ``"exact"``: true
   Jaccard of the shingle sets; ``"none"``), then grouped into clusters with union-find.
5. One record per cluster is kept (``keep="first"``: earliest candidate; ``"longest"``; or a column name:
   highest value). ``clusters_path`` writes the clusters as JSONL for inspection.

MinHash/LSH is approximate (a pair at Jaccard s becomes a candidate with probability 1 - (1 - s^r)^b);
``verify="exact"`` removes false positives, never false negatives.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
import orjson

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.segments import SEGMENTS, flatten
from .base import SelectionContext, Selector, StepResult

_MASK64 = (1 << 64) - 1
_R = 0x9E3779B97F4A7C15 | 1            # odd multiplier of the polynomial hash
_R_INV = pow(_R, -1, 1 << 64)
_R_INV_U = np.uint64(_R_INV)


def normalize_text(t: str) -> str:
    return " ".join(t.lower().split())


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_POW_BLOCK = 4096


def _powers(base: int, n: int) -> np.ndarray:
    """base**k mod 2**64 for k < n (uint64): two short cumulative products and one outer product, so
    the sequential cumprod never runs over more than max(4096, n / 4096) elements."""
    if n <= _POW_BLOCK:
        p = np.full(max(n, 0), base, dtype=np.uint64)
        if n:
            p[0] = 1
        with np.errstate(over="ignore"):
            return np.cumprod(p, dtype=np.uint64)
    small = _powers(base, _POW_BLOCK)
    with np.errstate(over="ignore"):
        step = int(small[-1]) * base & _MASK64              # base ** 4096
        big = _powers(step, -(-n // _POW_BLOCK))
        return (big[:, None] * small[None, :]).ravel()[:n]


def _word_shingles(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram hashes from per-word polynomial hashes (no pass over the bytes of the batch).

    The polynomial hash of a shingle's bytes composes from its words: with G(w) = H(w) + 33 R^len(w)
    (the word followed by a space), H(w_1 ' ' ... ' ' w_c) = sum_k R^(o_k) G(w_k) - 33 R^L, where o_k is
    the byte offset of word k in the shingle and L the shingle's length. Distinct words are hashed once
    (pyarrow dictionary encoding); the n-gram sums are n vectorised passes over the word occurrences."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not texts:
        return np.zeros(0, np.uint64), np.zeros(1, np.int64)
    lists = pc.split_pattern(pa.array(texts, pa.large_string()), " ")
    words = lists.flatten()
    per_rec = np.diff(lists.offsets.to_numpy())
    enc = pc.dictionary_encode(words)
    uniq = enc.dictionary
    uoff = np.frombuffer(uniq.buffers()[1], dtype=np.int64, count=len(uniq) + 1, offset=uniq.offset * 8)
    data = uniq.buffers()[2]
    ubuf = np.frombuffer(data, dtype=np.uint8, count=int(uoff[-1] - uoff[0]), offset=int(uoff[0])) \
        if data is not None and uoff[-1] > uoff[0] else np.zeros(0, np.uint8)
    uoff = uoff - uoff[0]
    ulen = np.diff(uoff)
    total = len(ubuf)
    with np.errstate(over="ignore"):
        prefix = np.zeros(total + 1, dtype=np.uint64)
        if total:
            np.cumsum((ubuf.astype(np.uint64) + np.uint64(1)) * _powers(_R, total), out=prefix[1:])
        inv = _powers(_R_INV, total + 1)
        hu = (prefix[uoff[1:]] - prefix[uoff[:-1]]) * inv[uoff[:-1]]
    idx = enc.indices.to_numpy(zero_copy_only=False)
    lw = ulen[idx]
    keep = lw > 0                                   # "" (an empty text) is no word
    rec_w = np.repeat(np.arange(len(texts)), per_rec)[keep]
    idx, lw = idx[keep], lw[keep].astype(np.uint64)
    nw = np.bincount(rec_w, minlength=len(texts))
    hw = hu[idx]                                    # H(w) of each word occurrence
    with np.errstate(over="ignore"):
        rl = _powers(_R, int(lw.max()) + 2 if len(lw) else 1)[lw + np.uint64(1)]   # R^(len + 1)
        g = hw + np.uint64(33) * rl * _R_INV_U
    cs = np.concatenate([[0], np.cumsum(lw + np.uint64(1))]).astype(np.uint64)
    first_w = np.concatenate([[0], np.cumsum(nw)])[:-1]
    W = len(idx)
    m = max(W - n + 1, 0)
    ok = np.flatnonzero(rec_w[n - 1:] == rec_w[:m]) if m else np.zeros(0, np.int64)   # inside one record
    with np.errstate(over="ignore"):
        # regular n-grams, Horner from the last word: acc = G(w_k) + R^(len_k + 1) acc
        acc = hw[n - 1:n - 1 + m].copy()
        for k in range(n - 2, -1, -1):
            acc *= rl[k:k + m]
            acc += g[k:k + m]
        h_reg, len_reg = acc[ok], cs[ok + n] - cs[ok] - np.uint64(1)
        # records with 1..n-1 words: one shingle of all their words
        short = np.flatnonzero((nw > 0) & (nw < n))
        s0, c = first_w[short], nw[short]
        acc = hw[s0 + c - 1].copy()
        for k in range(n - 2, -1, -1):
            act = k < c - 1
            acc[act] = acc[act] * rl[s0[act] + k] + g[s0[act] + k]
        h_short, len_short = acc, cs[s0 + c] - cs[s0] - np.uint64(1)
        h_reg = _splitmix(h_reg ^ len_reg * np.uint64(0xD6E8FEB86659FD93))
        h_short = _splitmix(h_short ^ len_short * np.uint64(0xD6E8FEB86659FD93))
    counts = np.bincount(rec_w[ok], minlength=len(texts))
    counts[short] = 1                               # a short record has no regular n-gram
    offsets = np.concatenate([[0], np.cumsum(counts)])
    slot = np.zeros(int(offsets[-1]), dtype=bool)
    slot[offsets[short]] = True
    out = np.empty(int(offsets[-1]), dtype=np.uint64)
    out[~slot], out[slot] = h_reg, h_short          # regular n-grams are already in record order
    return out, offsets


def shingle_hashes(texts: list[str], shingle: str = "word", n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each text's shingles (texts already normalised). Returns (hashes, offsets): the
    shingles of text i are hashes[offsets[i]:offsets[i+1]] (duplicates within a text are kept)."""
    if shingle == "word":
        return _word_shingles(texts, n)
    if shingle != "char":
        raise ConfigError(f"shingle must be 'word' or 'char', got {shingle!r}")
    enc = [t.encode("utf-8") for t in texts]
    lens = np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc))
    rec_start = np.concatenate([[0], np.cumsum(lens + 1)])[:-1]   # records joined with one space
    buf = np.frombuffer(b" ".join(enc), dtype=np.uint8)
    total = len(buf)
    if total == 0:
        return np.zeros(0, np.uint64), np.zeros(len(texts) + 1, np.int64)
    with np.errstate(over="ignore"):
        prefix = np.zeros(total + 1, dtype=np.uint64)
        np.cumsum((buf.astype(np.uint64) + np.uint64(1)) * _powers(_R, total), out=prefix[1:])
        inv = _powers(_R_INV, total + 1)
    rec_of_pos = np.repeat(np.arange(len(texts)), lens + 1)[:total]
    p = np.arange(total)                                            # byte n-grams inside one record
    end_of_rec = np.repeat(rec_start + lens, lens + 1)[:total]
    ok = p + n <= end_of_rec
    short_rec = (lens > 0) & (lens < n)
    a = np.concatenate([p[ok], rec_start[short_rec]])
    b = np.concatenate([p[ok] + n, rec_start[short_rec] + lens[short_rec]])
    rec = np.concatenate([rec_of_pos[ok], np.flatnonzero(short_rec)])
    with np.errstate(over="ignore"):
        h = (prefix[b] - prefix[a]) * inv[a]
        h = _splitmix(h ^ (b - a).astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93))
    order = np.argsort(rec, kind="stable")
    counts = np.bincount(rec, minlength=len(texts))
    return h[order], np.concatenate([[0], np.cumsum(counts)])


def _perm_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0x6D696E68])
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


MINHASH_BACKENDS = ("numpy", "rensa")


def minhash(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 0, chunk: int = 4096,
            backend: str = "numpy") -> np.ndarray:
    """MinHash signatures (records x num_perm, uint32). Records without shingles get all-max rows.

    ``numpy`` (siftkit's definition): value p of a record = min over its shingle hashes h of
    ((a_p * (h >> 32) + b_p) mod 2^64) >> 32, with (a_p odd, b_p) from numpy's PCG64 seeded with
    (seed, 0x6D696E68). Computed over groups of records holding about ``chunk`` shingles, so the
    (num_perm x chunk) uint64 block stays in cache; the shift is applied after the minimum (it is monotone).
    ``rensa``: rensa's RMinHash digests of the same 64-bit shingle hashes (``RMinHash.
    digest_matrix_from_flat_token_hashes``, rensa's own permutation parameters from ``seed``): different
    values from ``numpy`` for the same seed, same estimator."""
    n = len(offsets) - 1
    if backend == "rensa":
        import rensa

        m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            np.ascontiguousarray(hashes, dtype=np.uint64), np.asarray(offsets, dtype=np.uint64), num_perm,
            int(seed))
        rows = m.to_rows()
        sig = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.uint32, count=n * num_perm)
        sig = sig.reshape(n, num_perm)
        sig[np.diff(offsets) == 0] = np.iinfo(np.uint32).max
        return sig
    if backend != "numpy":
        raise ConfigError(f"minhash backend must be one of {MINHASH_BACKENDS}, got {backend!r}")
    a, b = _perm_params(num_perm, seed)
    sig = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if not len(hashes):
        return sig
    offsets = np.asarray(offsets, dtype=np.int64)
    x = hashes >> np.uint64(32)
    bounds = np.searchsorted(offsets, np.arange(0, offsets[-1], chunk), side="right") - 1
    bounds = np.unique(np.concatenate([bounds, [n]]))
    buf = np.empty(num_perm * chunk * 2, dtype=np.uint64)
    ac, bc = a[:, None], b[:, None]
    with np.errstate(over="ignore"):
        for r0, r1 in itertools.pairwise(bounds.tolist()):
            s, e = int(offsets[r0]), int(offsets[r1])
            if e == s:
                continue
            blk = buf[:num_perm * (e - s)].reshape(num_perm, e - s) if e - s <= 2 * chunk else \
                np.empty((num_perm, e - s), np.uint64)
            np.multiply(ac, x[None, s:e], out=blk)      # multiply-add-shift hashing, in place
            np.add(blk, bc, out=blk)
            has = offsets[r0 + 1:r1 + 1] > offsets[r0:r1]
            low = np.minimum.reduceat(blk, offsets[r0:r1][has] - s, axis=1)
            sig[r0:r1][has] = (low.T >> np.uint64(32))
    return sig


def lsh_params(threshold: float, num_perm: int, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising (1 - fn_weight) * FP + fn_weight * FN over every pair with
    bands * rows <= num_perm, where, with P(s) = 1 - (1 - s^rows)^bands the probability that a pair at
    Jaccard s becomes a candidate, FP = integral of P over [0, threshold] and FN = integral of 1 - P over
    [threshold, 1] (datasketch's ``optimal_param`` criterion, written from that definition). P is a
    polynomial of degree bands * rows <= num_perm, so Gauss-Legendre quadrature with num_perm // 2 + 1
    nodes per interval integrates it exactly (up to num_perm 256; above, 129 nodes: accurate, not exact).
    Ties: fewer bands, then fewer rows."""
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)])
    x, w = np.polynomial.legendre.leggauss(min(num_perm, 256) // 2 + 1)

    def integral(lo: float, hi: float, miss: bool) -> np.ndarray:
        s = (hi - lo) / 2 * x + (hi + lo) / 2
        out = np.empty(len(pairs))
        step = max(1, (1 << 22) // len(s))          # pairs per block: <= 4M integrand values at a time
        for a in range(0, len(pairs), step):
            pr = pairs[a:a + step]
            p = 1 - (1 - s[None, :] ** pr[:, 1:2]) ** pr[:, 0:1]
            out[a:a + step] = ((1 - p if miss else p) * w[None, :]).sum(axis=1) * (hi - lo) / 2
        return out

    err = (1 - fn_weight) * integral(0.0, threshold, False) + fn_weight * integral(threshold, 1.0, True)
    best = int(np.argmin(err))                      # first minimum: pairs are in (bands, rows) order
    return int(pairs[best, 0]), int(pairs[best, 1])


def lsh_candidate_pairs(sig: np.ndarray, bands: int, rows: int, valid: np.ndarray | None = None,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (u < v) of records sharing at least one band bucket."""
    n = len(sig)
    idx = np.arange(n) if valid is None else np.flatnonzero(valid)
    mult = np.random.default_rng([seed, 0x6C7368]).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    us, vs = [], []
    for band in range(bands):
        cols = sig[idx, band * rows:(band + 1) * rows].astype(np.uint64)
        with np.errstate(over="ignore"):
            key = _splitmix((cols * mult[None, :]).sum(axis=1, dtype=np.uint64) + np.uint64(band))
        order = np.argsort(key, kind="stable")
        ks = key[order]
        same = ks[1:] == ks[:-1]
        if not same.any():
            continue
        members = idx[order]
        run_start = np.concatenate([[True], ~same])
        run_id = np.cumsum(run_start) - 1
        first_of_run = np.flatnonzero(run_start)
        run_len = np.diff(np.concatenate([first_of_run, [len(ks)]]))
        # predecessor edges and edges to the run's first member
        t = np.flatnonzero(same) + 1
        us += [members[t - 1], members[first_of_run[run_id[t]]]]
        vs += [members[t], members[t]]
        # all pairs inside small runs (3..8 members)
        for size in range(3, 9):
            runs = first_of_run[run_len == size]
            if len(runs):
                ii, jj = np.triu_indices(size, 1)
                us.append(members[(runs[:, None] + ii[None, :]).ravel()])
                vs.append(members[(runs[:, None] + jj[None, :]).ravel()])
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u, v = np.concatenate(us), np.concatenate(vs)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    keep = lo != hi
    pairs = np.unique(lo[keep] * np.int64(n) + hi[keep])
    return pairs // n, pairs % n


def connected_components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Component label (smallest member index) of each of ``n`` nodes given undirected edges."""
    parent = np.arange(n)
    if not len(u):
        return parent
    while True:
        pu, pv = parent[u], parent[v]
        lo, hi = np.minimum(pu, pv), np.maximum(pu, pv)
        cross = lo != hi
        if not cross.any():
            return parent
        np.minimum.at(parent, hi[cross], lo[cross])
        while True:
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp


def exact_jaccard(hashes: np.ndarray, offsets: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    sets: dict[int, np.ndarray] = {}

    def get(i: int) -> np.ndarray:
        if i not in sets:
            sets[i] = np.unique(hashes[offsets[i]:offsets[i + 1]])
        return sets[i]

    out = np.empty(len(u))
    for t, (i, j) in enumerate(zip(u.tolist(), v.tolist())):
        a, b = get(i), get(j)
        inter = len(np.intersect1d(a, b, assume_unique=True))
        union = len(a) + len(b) - inter
        out[t] = inter / union if union else 0.0
    return out


@register_selector("minhash-dedup")
class MinHashDedup(Selector):
    role = "dedup"

    def __init__(self, segment: str = "conversation", shingle: str = "word", ngram: int = 5,
                 num_perm: int = 128, threshold: float = 0.8, bands: int | None = None, rows: int | None = None,
                 verify: str = "minhash", keep: str = "first", clusters_path: str | None = None,
                 batch_records: int = 20000, backend: str = "numpy"):
        if segment not in SEGMENTS:
            raise ConfigError(f"minhash-dedup: segment must be one of {', '.join(SEGMENTS)}, got {segment!r}")
        if shingle not in ("word", "char"):
            raise ConfigError(f"minhash-dedup: shingle must be 'word' or 'char', got {shingle!r}")
        if int(ngram) < 1:
            raise ConfigError(f"minhash-dedup: ngram must be >= 1, got {ngram}")
        if int(num_perm) < 2:
            raise ConfigError(f"minhash-dedup: num_perm must be >= 2, got {num_perm}")
        if not 0 < float(threshold) <= 1:
            raise ConfigError(f"minhash-dedup: threshold must be a Jaccard similarity in (0, 1], got {threshold}")
        if verify not in ("minhash", "exact", "none"):
            raise ConfigError(f"minhash-dedup: verify must be 'minhash', 'exact' or 'none', got {verify!r}")
        if backend not in MINHASH_BACKENDS:
            raise ConfigError(f"minhash-dedup: backend must be one of {', '.join(MINHASH_BACKENDS)}, got {backend!r}")
        self.backend = backend
        if (bands is None) != (rows is None):
            raise ConfigError("minhash-dedup: give both bands and rows, or neither")
        if bands is not None and int(bands) * int(rows) > int(num_perm):  # type: ignore[arg-type]
            raise ConfigError(f"minhash-dedup: bands x rows = {int(bands) * int(rows)} exceeds num_perm={num_perm}")  # type: ignore[arg-type]
        self.segment, self.shingle, self.ngram, self.num_perm = segment, shingle, int(ngram), int(num_perm)
        self.threshold, self.verify, self.keep, self.clusters_path = float(threshold), verify, keep, clusters_path
        # verified candidates cost only a check, so favour recall when verifying
        fn_weight = 0.5 if verify == "none" else 0.9
        self.bands, self.rows = (int(bands), int(rows)) if bands is not None else \
            lsh_params(self.threshold, self.num_perm, fn_weight)
        self.batch_records = int(batch_records)

    def requirements(self) -> dict[str, str]:
        return {"rensa": "the rensa MinHash backend"} if self.backend == "rensa" else {}

    def needs(self) -> list[str]:
        return [] if self.keep in ("first", "longest") else [self.keep]

    def config(self) -> dict[str, Any]:
        cfg = {"segment": self.segment, "shingle": self.shingle, "ngram": self.ngram, "num_perm": self.num_perm,
               "threshold": self.threshold, "bands": self.bands, "rows": self.rows, "verify": self.verify,
               "keep": self.keep}
        if self.backend != "numpy":         # other signature values: part of the step's config
            cfg["backend"] = self.backend
        return cfg

    def _texts(self, ctx: SelectionContext, rows: np.ndarray) -> list[str]:
        import pyarrow as pa

        sub = ctx.pool.select(["messages"]).take(pa.array(rows, pa.int64()))
        return [normalize_text(t) for t in flatten(sub).texts(self.segment)]

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        candidates = np.asarray(candidates, dtype=np.int64)
        n = len(candidates)
        sig = np.empty((n, self.num_perm), dtype=np.uint32)
        nonempty = np.zeros(n, dtype=bool)
        lengths = np.zeros(n, dtype=np.int64)
        seed = int(ctx.rng("minhash").integers(2**31 - 1))
        with progress.bar("minhash", total=n) as bar:
            for s in range(0, n, self.batch_records):
                texts = self._texts(ctx, candidates[s:s + self.batch_records])
                h, off = shingle_hashes(texts, self.shingle, self.ngram)
                sig[s:s + len(texts)] = minhash(h, off, self.num_perm, seed, backend=self.backend)
                nonempty[s:s + len(texts)] = np.diff(off) > 0
                lengths[s:s + len(texts)] = [len(t) for t in texts]
                bar.update(len(texts))
        with progress.stage("minhash: lsh", total=n) as st:
            u, v = lsh_candidate_pairs(sig, self.bands, self.rows, nonempty, seed)
            st.update(n)
            st.set(candidate_pairs=len(u))
        n_candidates = len(u)
        if self.verify == "minhash" and len(u):
            est = np.concatenate([(sig[u[s:s + 65536]] == sig[v[s:s + 65536]]).mean(axis=1)
                                  for s in range(0, len(u), 65536)])
            ok = est >= self.threshold
            u, v = u[ok], v[ok]
        elif self.verify == "exact" and len(u):
            involved = np.unique(np.concatenate([u, v]))
            with progress.stage("minhash: exact jaccard", total=len(u), unit="pairs") as st:
                h, off = shingle_hashes(self._texts(ctx, candidates[involved]), self.shingle, self.ngram)
                loc = np.searchsorted(involved, np.concatenate([u, v]))
                jac = exact_jaccard(h, off, loc[:len(u)], loc[len(u):])
                st.update(len(u))
            ok = jac >= self.threshold
            u, v = u[ok], v[ok]
        labels = connected_components(n, u, v)
        keep_pos = self._representatives(ctx, candidates, labels, lengths)
        details: dict[str, Any] = {"bands": self.bands, "rows": self.rows, "candidate_pairs": int(n_candidates),
                                   "verified_pairs": len(u),
                                   "clusters": len(np.unique(labels[labels != np.arange(n)]))}
        if self.clusters_path:
            details["clusters_path"] = self.write_clusters(ctx, candidates, labels, keep_pos)
        return StepResult(kept=candidates[keep_pos], dropped={"near_duplicate": int(n - len(keep_pos))},
                          details=details)

    def _representatives(self, ctx: SelectionContext, candidates: np.ndarray, labels: np.ndarray,
                         lengths: np.ndarray) -> np.ndarray:
        n = len(labels)
        if self.keep == "first":
            return np.flatnonzero(labels == np.arange(n))
        if self.keep == "longest":
            score = lengths.astype(np.float64)
        else:
            score = np.asarray(ctx.column(self.keep)[candidates], dtype=np.float64)
            score = np.where(np.isnan(score), -np.inf, score)
        order = np.lexsort((np.arange(n), -score, labels))  # per cluster: best score, then earliest
        first = np.concatenate([[True], labels[order][1:] != labels[order][:-1]])
        return np.sort(order[first])

    def write_clusters(self, ctx: SelectionContext, candidates: np.ndarray, labels: np.ndarray,
                       keep_pos: np.ndarray) -> str:
        ids = ctx.pool.column("id").to_numpy(zero_copy_only=False)[candidates]
        kept = np.zeros(len(labels), dtype=bool)
        kept[keep_pos] = True
        order = np.lexsort((np.arange(len(labels)), labels))
        bounds = np.flatnonzero(np.concatenate([[True], labels[order][1:] != labels[order][:-1], [True]]))
        os.makedirs(os.path.dirname(os.path.abspath(self.clusters_path)), exist_ok=True)  # type: ignore[arg-type]
        with open(self.clusters_path, "wb") as fh:  # type: ignore[arg-type]
            for a, b in itertools.pairwise(bounds):
                mem = order[a:b]
                if len(mem) < 2:
                    continue
                fh.write(orjson.dumps({"kept": ids[mem[kept[mem]]][0], "duplicates": ids[mem[~kept[mem]]].tolist(),
                                       "size": len(mem)}) + b"\n")
        return str(self.clusters_path)
