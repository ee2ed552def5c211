"""``minhash-dedup``: near-duplicate removal with MinHash + LSH (Jaccard similarity on shingles).

1. Text of the chosen segment, lower-cased with whitespace collapsed; shingles are word n-grams
   (``shingle="word"``, default n=5) or byte n-grams (``"char"``). A text shorter than n words is one
   shingle. Empty texts are never duplicates.
2. Shingles are hashed with a polynomial hash computed for the whole batch at once (numpy, no per-token
   Python), then ``num_perm`` MinHash values per record with multiply-add-shift hashing.
3. LSH: ``bands`` x ``rows`` (when not given, chosen for ``threshold`` by minimising the false positive and
   negative probability mass, weighted 0.1 / 0.9 when candidates are verified, 0.5 / 0.5 otherwise). Records sharing a band bucket are candidate pairs: every pair in buckets of up to 8 members,
   and in larger buckets each member with the bucket's first member and its predecessor.
4. Candidate pairs are verified (``verify="minhash"``: estimated Jaccard >= threshold; ``"exact"``: true
   Jaccard of the shingle sets; ``"none"``), then grouped into clusters with union-find.
5. One record per cluster is kept (``keep="first"``: earliest candidate; ``"longest"``; or a column name:
   highest value). ``clusters_path`` writes the clusters as JSONL for inspection.

MinHash/LSH is approximate (a pair at Jaccard s becomes a candidate with probability 1 - (1 - s^r)^b);
``verify="exact"`` removes false positives, never false negatives.
"""

from __future__ import annotations

import itertools
import math
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


def normalize_text(t: str) -> str:
    return " ".join(t.lower().split())


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _powers(base: int, n: int) -> np.ndarray:
    p = np.full(n, base, dtype=np.uint64)
    p[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(p, dtype=np.uint64)


def shingle_hashes(texts: list[str], shingle: str = "word", n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each text's shingles (texts already normalised). Returns (hashes, offsets): the
    shingles of text i are hashes[offsets[i]:offsets[i+1]] (duplicates within a text are kept)."""
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
    if shingle == "word":
        space = buf == 32
        is_start = ~space & np.concatenate([[True], space[:-1]])
        is_end = ~space & np.concatenate([space[1:], [True]])
        ws, we = np.flatnonzero(is_start), np.flatnonzero(is_end) + 1
        wrec = rec_of_pos[ws]
        nw = np.bincount(wrec, minlength=len(texts))
        first_w = np.concatenate([[0], np.cumsum(nw)])[:-1]
        # n-grams inside one record; a record with 1..n-1 words yields one shingle (all its words)
        j = np.arange(len(ws))
        last = j + n - 1
        ok = (last < len(ws)) & (wrec[np.minimum(last, len(ws) - 1)] == wrec)
        short = (nw > 0) & (nw < n)
        a = np.concatenate([ws[ok], ws[first_w[short]]])
        b = np.concatenate([we[last[ok]], we[first_w[short] + nw[short] - 1]])
        rec = np.concatenate([wrec[ok], np.flatnonzero(short)])
    elif shingle == "char":
        p = np.arange(total)
        end_of_rec = np.repeat(rec_start + lens, lens + 1)[:total]
        ok = p + n <= end_of_rec
        short_rec = (lens > 0) & (lens < n)
        a = np.concatenate([p[ok], rec_start[short_rec]])
        b = np.concatenate([p[ok] + n, rec_start[short_rec] + lens[short_rec]])
        rec = np.concatenate([rec_of_pos[ok], np.flatnonzero(short_rec)])
    else:
        raise ConfigError(f"shingle must be 'word' or 'char', got {shingle!r}")
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


def minhash(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 0,
            block_elems: int = 1 << 23) -> np.ndarray:
    """MinHash signatures (records x num_perm, uint32). Records without shingles get all-max rows."""
    a, b = _perm_params(num_perm, seed)
    n = len(offsets) - 1
    sig = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    has = np.diff(offsets) > 0
    if not has.any():
        return sig
    x = (hashes >> np.uint64(32))[:, None]
    starts = offsets[:-1][has]
    pb = max(1, min(num_perm, block_elems // max(1, len(hashes))))
    buf = np.empty((len(hashes), pb), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for s in range(0, num_perm, pb):
            e = min(num_perm, s + pb)
            v = buf[:, :e - s]
            np.multiply(x, a[None, s:e], out=v)       # multiply-add-shift hashing, in place
            np.add(v, b[None, s:e], out=v)
            np.right_shift(v, np.uint64(32), out=v)
            sig[has, s:e] = np.minimum.reduceat(v, starts, axis=0)
    return sig


def lsh_params(threshold: float, num_perm: int, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted false-positive and
    false-negative probability mass (``fn_weight`` for misses, 1 - ``fn_weight`` for false candidates)."""
    s = np.linspace(0, 1, 1001)
    best, best_err = (1, num_perm), math.inf
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        p = 1 - (1 - s ** rows) ** bands
        fp = np.trapezoid(np.where(s < threshold, p, 0), s)
        fn = np.trapezoid(np.where(s >= threshold, 1 - p, 0), s)
        err = (1 - fn_weight) * fp + fn_weight * fn
        if err < best_err:
            best, best_err = (bands, rows), err
    return best


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
                 batch_records: int = 20000):
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

    def needs(self) -> list[str]:
        return [] if self.keep in ("first", "longest") else [self.keep]

    def config(self) -> dict[str, Any]:
        return {"segment": self.segment, "shingle": self.shingle, "ngram": self.ngram, "num_perm": self.num_perm,
                "threshold": self.threshold, "bands": self.bands, "rows": self.rows, "verify": self.verify,
                "keep": self.keep}

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
                sig[s:s + len(texts)] = minhash(h, off, self.num_perm, seed)
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
