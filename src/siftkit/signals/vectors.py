"""On-disk cache for vector signals (embeddings): float16 ``.npy`` files in pool order, ids alongside.

Layout::

    <cache_dir>/vectors/<name>/<fingerprint>/meta.json                   signal name, version, config, dim
    <cache_dir>/vectors/<name>/<fingerprint>/shard-<key>.npy             float16 rows of one computed shard
    <cache_dir>/vectors/<name>/<fingerprint>/shard-<key>.ids.parquet     the ids of those rows, same order
    <cache_dir>/vectors/<name>/<fingerprint>/pool-<poolkey>.npy          N x d float16, in pool order
    <cache_dir>/vectors/<name>/<fingerprint>/pool-<poolkey>.ids.parquet  the pool's ids, same order

Shards are written atomically as they finish, so a killed run resumes with only the missing ids. Reuse is
by record id: a pool re-read in another order, or grown, reuses every shard it can. The pool-order matrix
is assembled once per pool (keyed by a hash of its ids) and then opened as a read-only memmap.

Checks: a shard's name carries the xxh3-64 of its matrix file (``shard-<key>-<xxh3>.npy``); a shard whose
matrix is shorter than its header says, whose row count differs from its ids, or whose checksum fails is
removed with a warning and its records are recomputed. The pool matrix's space is reserved up front
(``posix_fallocate``), so a full disk is a DiskFullError (exit 5), never SIGBUS.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from .. import fs, progress
from ..errors import ConfigError
from ..fsutil import clean_stale_tmp, disk_guard, file_xxh3, preallocate, remove_path
from .base import Signal
from .store import atomic_parquet, ensure_folder

# Default vector spec for diversity selectors: CPU-only static embeddings of the query segment.
DEFAULT_SPEC: dict[str, Any] = {"name": "embedding", "backend": "static", "segment": "query"}
_BACKEND_SHORTHANDS = ("static", "sentence-transformers", "causal-lm")


def normalize_spec(spec: dict[str, Any] | str | None) -> dict[str, Any]:
    """A selector's ``embedding`` parameter as a full signal spec.

    ``None`` -> :data:`DEFAULT_SPEC`; a backend name (``"static"``, ``"sentence-transformers"``,
    ``"causal-lm"``) -> that backend on the query segment; any other string -> a signal name; a dict is
    taken as is (``name`` defaults to ``"embedding"``).
    """
    if spec is None:
        return dict(DEFAULT_SPEC)
    if isinstance(spec, str):
        if spec in _BACKEND_SHORTHANDS:
            return {"name": "embedding", "backend": spec, "segment": "query"}
        return {"name": spec}
    if isinstance(spec, dict):
        return {"name": "embedding", **spec}
    raise ConfigError(f"embedding spec must be a dict or a string, got {type(spec).__name__}")


class VectorStore:
    """``cache_dir`` may be a URL (``s3://bucket/cache``): shards are then objects in the store (one PUT
    each), read through local copies (:func:`siftkit.fs.local_copy`, downloaded once per machine), and the
    pool-order matrix is assembled in the local copy folder, so it is memory-mapped from local disk."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.remote = fs.is_remote(cache_dir)
        self.root = fs.join(cache_dir, "vectors")

    def folder(self, sig: Signal) -> str:
        return fs.join(self.root, sig.name, sig.fingerprint())

    def _local(self, path: str) -> str:
        """A local file holding ``path``'s bytes (the path itself for a local cache)."""
        if not self.remote:
            return path
        try:
            return fs.local_copy(path)
        except OSError as e:
            raise fs.fs_error(path, e, "cannot read the vector cache at") from None

    def _ensure(self, sig: Signal, dim: int) -> str:
        return ensure_folder(self.folder(sig), {"name": sig.name, "version": sig.version, "config": sig.config(),
                             "dim": dim, "dtype": "float16"}, "vector")

    def shards(self, sig: Signal) -> list[str]:
        """Paths (without suffix) of the complete shards: both the matrix and its ids exist."""
        d = self.folder(sig)
        if self.remote:
            try:
                names = set(fs.listdir(d))
            except FileNotFoundError:
                return []
            except OSError as e:
                raise fs.fs_error(d, e, "cannot list the vector cache at") from None
            return sorted(fs.join(d, f[:-len(".npy")]) for f in names
                          if f.startswith("shard-") and f.endswith(".npy") and f[:-4] + ".ids.parquet" in names)
        if not os.path.isdir(d):
            return []
        clean_stale_tmp(d)
        names = set(os.listdir(d))
        return sorted(os.path.join(d, f[:-len(".npy")]) for f in names
                      if f.startswith("shard-") and f.endswith(".npy") and f[:-4] + ".ids.parquet" in names)

    def write_shard(self, sig: Signal, ids: pa.Array, vectors: np.ndarray) -> str:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(f"signal {sig.name} returned shape {vectors.shape} for {len(ids)} records")
        d = self._ensure(sig, int(vectors.shape[1]))
        first = ids[0].as_py() if len(ids) else ""
        key = xxhash.xxh3_64_hexdigest(f"{first}:{len(ids)}".encode())
        # matrix first, ids last: a shard counts as complete only when its ids file exists
        arr = np.ascontiguousarray(vectors.astype(np.float16, copy=False))
        if self.remote:
            import io

            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            data = buf.getvalue()
            base = fs.join(d, f"shard-{key}-{xxhash.xxh3_64_hexdigest(data)}")
            try:
                fs.write_atomic(base + ".npy", data)
                atomic_parquet(base + ".ids.parquet", pa.table({"id": ids}))
            except OSError as e:
                raise fs.fs_error(base, e, "cannot write the vector cache at") from None
            return base
        tmp = os.path.join(d, f"shard-{key}.npy.tmp{os.getpid()}")
        with disk_guard(tmp[:-len(f".tmp{os.getpid()}")], arr.nbytes + 128, [tmp]):
            with open(tmp, "wb") as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
            base = os.path.join(d, f"shard-{key}-{file_xxh3(tmp)}")
            os.replace(tmp, base + ".npy")
        atomic_parquet(base + ".ids.parquet", pa.table({"id": ids}))
        return base

    def _checked(self, sig: Signal, verify_sum: bool = False) -> list[tuple[str, pa.Array]]:
        """(shard base, ids) of every shard that passes its checks; damaged ones are removed (warning)."""
        out = []
        for base in self.shards(sig):
            problem = ""
            ids = None
            try:
                ids = fs.read_table(base + ".ids.parquet").column("id").combine_chunks()
            except Exception as e:  # noqa: BLE001 - unreadable ids file: a damaged shard
                problem = f"ids file unreadable ({type(e).__name__})"
            if not problem:
                problem = npy_problem(self._local(base + ".npy"), rows=len(ids))
            if not problem and verify_sum:
                m = re.search(r"-([0-9a-f]{16})$", fs.basename(base))
                if m and file_xxh3(self._local(base + ".npy")) != m.group(1):
                    problem = "checksum mismatch (corrupted)"
            if problem:
                progress.warn(f"cached vector shard {base}.npy of {sig.name} is damaged: {problem}; removing "
                              f"it and recomputing its records")
                if self.remote:
                    fs.remove(base + ".ids.parquet")
                    fs.remove(base + ".npy")
                else:
                    remove_path(base + ".ids.parquet")
                    remove_path(base + ".npy")
                continue
            out.append((base, ids))
        return out

    def known_ids(self, sig: Signal, verify_sum: bool = True) -> pa.Array:
        """Ids of every intact shard (checksums verified: damaged shards are removed, so their ids count
        as missing and get recomputed before the pool matrix is assembled)."""
        parts = [ids for _, ids in self._checked(sig, verify_sum=verify_sum)]
        if not parts:
            return pa.array([], pa.string())
        return pa.chunked_array(parts).combine_chunks()

    def pool_path(self, sig: Signal, ids: pa.Array | pa.ChunkedArray) -> str:
        """Where the pool-order matrix lives: beside the shards, or for a remote cache in the local copy
        folder (it is memory-mapped, and any machine rebuilds it from the shared shards)."""
        if self.remote:
            folder = os.path.join(fs.local_cache_dir(), "vectors",
                                  xxhash.xxh3_64_hexdigest(self.folder(sig).encode()))
            os.makedirs(folder, exist_ok=True)
            return os.path.join(folder, f"pool-{pool_key(ids)}")
        return os.path.join(self.folder(sig), f"pool-{pool_key(ids)}")

    def cached_pool_matrix(self, sig: Signal, ids: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
        """The assembled pool-order matrix when it exists and is whole (a damaged one is removed)."""
        base = self.pool_path(sig, ids)
        if not (os.path.exists(base + ".npy") and os.path.exists(base + ".ids.parquet")):
            return None
        problem = npy_problem(base + ".npy", rows=len(ids))
        if problem:
            progress.warn(f"cached pool matrix {base}.npy of {sig.name} is damaged: {problem}; rebuilding it")
            remove_path(base + ".ids.parquet")
            remove_path(base + ".npy")
            return None
        return np.load(base + ".npy", mmap_mode="r")

    def assemble(self, sig: Signal, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The pool-order matrix for ``ids`` (every id must be in some shard), as a read-only memmap."""
        whole = self.cached_pool_matrix(sig, ids)
        if whole is not None:
            return whole
        base = self.pool_path(sig, ids)
        checked = self._checked(sig)      # checksums were verified by known_ids() before computing
        shards = [b for b, _ in checked]
        shard_ids = [i for _, i in checked]
        offsets = np.cumsum([0] + [len(s) for s in shard_ids])
        all_ids = pa.concat_arrays(shard_ids) if shard_ids else pa.array([], pa.string())
        pos = pc.index_in(ids, value_set=all_ids)
        if pos.null_count:
            raise RuntimeError(f"{pos.null_count} records have no cached vector for {sig.name}")
        pos = pos.to_numpy(zero_copy_only=False).astype(np.int64)
        dim = int(np.load(self._local(shards[0] + ".npy"), mmap_mode="r").shape[1]) if shards else 0
        tmp = base + f".npy.tmp{os.getpid()}"
        needed = len(pos) * dim * 2 + 128
        with disk_guard(base + ".npy", needed, [tmp], approx=False):
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(pos), dim))
            try:
                # reserve the blocks now: writing a sparse memmap on a full disk is SIGBUS, not an error
                preallocate(tmp, os.path.getsize(tmp))
            except BaseException:
                del out
                remove_path(tmp)
                raise
            shard_of = np.searchsorted(offsets, pos, side="right") - 1
            for s, p in enumerate(shards):
                rows = np.flatnonzero(shard_of == s)
                if len(rows):
                    mat = np.load(self._local(p + ".npy"), mmap_mode="r")
                    out[rows] = mat[pos[rows] - offsets[s]]
            out.flush()
            del out
            os.replace(tmp, base + ".npy")
        atomic_parquet(base + ".ids.parquet", pa.table({"id": ids}))
        return np.load(base + ".npy", mmap_mode="r")


def npy_problem(path: str, rows: int | None = None) -> str:
    """What is wrong with an ``.npy`` file ("" when it is whole): bad header, wrong row count, or a file
    shorter or longer than its header says (a truncated write)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _fortran, dtype = read(fh)
            offset = fh.tell()
    except Exception as e:  # noqa: BLE001 - any header failure is a damaged file
        return f"bad header ({type(e).__name__})"
    if len(shape) != 2:
        return f"shape {shape} is not 2-D"
    if rows is not None and shape[0] != rows:
        return f"{shape[0]} rows, its ids file has {rows}"
    expect = offset + int(np.prod(shape)) * dtype.itemsize
    size = os.path.getsize(path)
    if size != expect:
        return f"{size:,} bytes, its header says {expect:,}"
    return ""


def pool_key(ids: pa.Array | pa.ChunkedArray) -> str:
    h = xxhash.xxh3_64()
    chunks = ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]
    for ch in chunks:
        for buf in ch.cast(pa.large_string()).buffers()[1:]:
            if buf is not None:
                h.update(memoryview(buf))
    h.update(str(len(ids)).encode())
    return h.hexdigest()


def write_vector_part(cache_dir: str, sig: Signal, ids: pa.Array, values: dict[str, Any]) -> str:
    """One shard of a vector signal into the cache (the Ray engine's workers write with this)."""
    return VectorStore(cache_dir).write_shard(sig, ids, values[sig.name])


def load_or_compute_vectors(pool_table: pa.Table, spec: dict[str, Any] | str | None, cache_dir: str,
                            workers: int = 1, shard_size: int | None = None, engine: str = "local",
                            ray: Any = None, rows: np.ndarray | None = None,
                            spill: Any = None) -> np.ndarray:
    """The N x d float16 vectors of ``spec`` for every pool row, in pool order (read-only memmap).

    Missing ids are computed shard by shard (each shard saved as soon as it is done), so a killed run
    resumes where it stopped. This is the pipeline's ``SelectionContext.vector_loader``. ``engine="ray"``:
    computed by ``engines.ray.run_plan`` (its own pass; GPUs per ``ray``'s ``gpus_per_actor``), shards
    written by the workers; ``rows`` (pool rows, default all) and ``spill`` (``Pool.spill``) let the
    workers read the text themselves (the vectors returned are those of ``rows``).
    """
    from .compute import build_signal

    sig = spec if isinstance(spec, Signal) else build_signal(normalize_spec(spec))
    if sig.kind != "vector":
        raise ConfigError(f"signal {sig.name!r} is not a vector signal")
    store = VectorStore(cache_dir)
    ids = pool_table.column("id")
    ids = (ids if rows is None else ids.take(pa.array(rows, pa.int64()))).combine_chunks()
    whole = store.cached_pool_matrix(sig, ids)
    if whole is not None:
        progress.debug(f"vectors:{sig.name}: cache hit for the whole pool ({len(ids):,} rows, fingerprint "
                       f"{sig.fingerprint()})")
        return whole
    known = store.known_ids(sig)
    missing = pc.invert(pc.is_in(ids, value_set=known)).to_numpy(zero_copy_only=False)
    todo = np.flatnonzero(missing)
    if len(todo) and engine == "ray":
        from ..engines.ray import run_plan

        progress.debug(f"vectors:{sig.name}: fingerprint {sig.fingerprint()}, {len(ids) - len(todo):,} cached, "
                       f"{len(todo):,} to compute on ray")
        with progress.stage(f"signal:{sig.name}", total=len(todo)) as bar:
            bar.set(cached=int(len(ids) - len(todo)))
            at = todo if rows is None else np.sort(np.asarray(rows, dtype=np.int64)[todo])
            run_plan([(sig, at)], pool_table, cache_dir, settings=ray, shard_size=shard_size,
                     on_progress=lambda fp, n: bar.update(n), spill=spill, write=write_vector_part)
    elif len(todo):
        if rows is not None:
            raise ValueError("rows= is for the ray engine; take the rows of the pool table instead")
        if engine != "local":
            raise ConfigError(f"unknown engine {engine!r}; use 'local' or 'ray'")
        from ..engines.local import run_shards
        from .compute import make_shards

        shards = make_shards(pool_table, todo, shard_size or sig.shard_size or 65536)
        progress.debug(f"vectors:{sig.name}: fingerprint {sig.fingerprint()}, {len(ids) - len(todo):,} cached, "
                       f"{len(todo):,} to compute with {workers} worker(s)")
        with progress.stage(f"signal:{sig.name}", total=len(todo)) as bar:
            bar.set(cached=int(len(ids) - len(todo)))

            def done(i: int, values: dict[str, Any]) -> None:
                store.write_shard(sig, shards[i].column("id").combine_chunks(), values[sig.name])

            run_shards(sig, shards, done, workers=workers, on_progress=bar.update)
    else:
        progress.debug(f"vectors:{sig.name}: all {len(ids):,} cached (fingerprint {sig.fingerprint()})")
    return store.assemble(sig, ids)


class VectorLoader:
    """The pipeline's vector loader (``SelectionContext.vector_loader``): embeddings through the cache,
    recording which were used, overall (``used``) and since ``begin_step()`` (``step_used``), as
    fingerprint -> {name, fingerprint, config, dim}, so the manifest names every embedding a step read."""

    def __init__(self, pool: pa.Table, cache_dir: str, workers: int = 1, engine: str = "local", ray: Any = None,
                 spill: Any = None):
        self.pool, self.cache_dir, self.workers, self.engine, self.ray = pool, cache_dir, workers, engine, ray
        self.spill = spill   # Pool.spill: with engine ray the workers read the rows they embed
        self.used: dict[str, dict[str, Any]] = {}
        self.step_used: dict[str, dict[str, Any]] = {}

    def begin_step(self) -> None:
        self.step_used = {}

    def __call__(self, spec: dict[str, Any] | str | None, rows: np.ndarray | None = None) -> np.ndarray:
        from .compute import build_signal

        sig = spec if isinstance(spec, Signal) else build_signal(normalize_spec(spec))
        if self.engine == "ray":    # the driver cuts no text: the plan takes pool rows
            v = load_or_compute_vectors(self.pool, sig, self.cache_dir, engine="ray", ray=self.ray, rows=rows,
                                        spill=self.spill)
        else:
            part = self.pool if rows is None else self.pool.take(pa.array(rows, pa.int64()))
            v = load_or_compute_vectors(part, sig, self.cache_dir, workers=self.workers, engine=self.engine)
        fp = sig.fingerprint()
        entry = {"name": sig.name, "fingerprint": fp, "config": sig.config(), "dim": int(v.shape[1])}
        self.used.setdefault(fp, entry)
        self.step_used.setdefault(fp, entry)
        return v


def rows_f32(vectors: np.ndarray, rows: np.ndarray, normalize: bool = False,
             chunk: int = 65536) -> np.ndarray:
    """``vectors[rows]`` as a contiguous float32 array, optionally L2-normalised, converted in chunks."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
    for s in range(0, len(rows), chunk):
        out[s:s + chunk] = _f32(vectors[rows[s:s + chunk]], normalize, copy=False)  # fancy index: a copy
    return out


def _f32(block: np.ndarray, normalize: bool, copy: bool = True) -> np.ndarray:
    """One block of rows in float32 (a new array unless ``copy=False``), optionally L2-normalised row by
    row. Every row's arithmetic depends only on that row, so any chunking gives the same bytes."""
    block = np.array(block, dtype=np.float32) if copy else np.asarray(block, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block /= np.where(norms > 0, norms, 1.0)
    return block


# Selectors that need every candidate's row in float32 (kmeans, repr-filter, k-center, semdedup, diverseevol,
# rds, facility-location, diversity_report, Cherry's brief-experience clustering) make one whole float32
# copy when it takes at most this many bytes (SIFTKIT_VECTOR_MEMORY overrides) and beyond that read the
# float16 memory-map chunk by chunk through RowsF32: same bytes, same selections.
VECTOR_MEMORY = 4 * 2**30
VECTOR_MEMORY_ENV = "SIFTKIT_VECTOR_MEMORY"
STREAM_CHUNK = 8192           # rows a RowsF32 view converts at a time (callers' own blocks are cut finer)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def vector_memory_limit() -> int:
    """Bytes a selector may spend on one whole float32 copy of its candidates' vectors:
    ``SIFTKIT_VECTOR_MEMORY`` (bytes, or with a binary unit: ``512M``, ``8G``, ``1.5T``; ``0`` = always
    stream) or :data:`VECTOR_MEMORY` (4 GiB)."""
    raw = os.environ.get(VECTOR_MEMORY_ENV, "").strip()
    if not raw:
        return VECTOR_MEMORY
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?", raw.lower())
    if not m:
        raise ConfigError(f"{VECTOR_MEMORY_ENV}={raw!r} is not a size: give bytes, or a number with a unit "
                          f"(512M, 8G, 1.5T; 0 = always stream the vectors)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


class RowsF32:
    """``rows_f32(vectors, rows, normalize)`` without the copy: a read-only view whose indexing converts
    only the rows asked for (``view[a:b]``, ``view[int_array]``, ``view[bool_mask]``), chunk by chunk, from
    the float16 memory-map. Each row gets exactly the bytes ``rows_f32`` gives it. ``rows=None``: every row.

    Memory: what one indexing returns (callers ask for a chunk at a time), plus the ``rows`` array."""

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, vectors: np.ndarray, rows: np.ndarray | None = None, normalize: bool = False,
                 chunk: int = STREAM_CHUNK):
        self.vectors, self.normalize, self.chunk = vectors, bool(normalize), int(chunk)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n = len(vectors) if self.rows is None else len(self.rows)
        self.shape = (n, int(vectors.shape[1]))
        self._norms: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def cache_norms(self) -> None:
        """Keep every row's L2 norm (float32, 4 bytes a row) so that reading a row again only converts and
        divides (for callers that re-read rows, e.g. k-center's refreshes). Same bytes as without."""
        if not self.normalize or self._norms is not None:
            return
        norms = np.empty(len(self), dtype=np.float32)
        for s in range(0, len(self), self.chunk):
            e = min(len(self), s + self.chunk)
            raw = self.vectors[s:e] if self.rows is None else self.vectors[self.rows[s:e]]
            norms[s:e] = np.linalg.norm(np.asarray(raw, dtype=np.float32), axis=1)
        self._norms = norms

    def take(self, pos: np.ndarray) -> RowsF32:
        """The rows at view positions ``pos`` as another view (nothing is converted): ``view.take(p)[i]``
        has the bytes of ``view[p[i]]``; cached norms carry over."""
        pos = np.asarray(pos, dtype=np.int64)
        sub = RowsF32(self.vectors, pos if self.rows is None else self.rows[pos], self.normalize, self.chunk)
        if self._norms is not None:
            sub._norms = self._norms[pos]
        return sub

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1 and self.rows is None:
                return self._read(slice(start, max(start, stop)))
            key = np.arange(start, stop, step, dtype=np.int64)
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        if key.ndim != 1:
            raise IndexError("RowsF32 takes a slice, an integer or a 1-D array of positions")
        return self._read(key.astype(np.int64, copy=False))

    def _read(self, pos: slice | np.ndarray) -> np.ndarray:
        """Rows at view positions ``pos`` (a step-1 slice when ``rows`` is None, else positions), converted
        ``chunk`` rows at a time into one float32 array."""
        m = pos.stop - pos.start if isinstance(pos, slice) else len(pos)
        out = np.empty((m, self.shape[1]), dtype=np.float32)
        for s in range(0, m, self.chunk):
            e = min(m, s + self.chunk)
            if isinstance(pos, slice):
                p: slice | np.ndarray = slice(pos.start + s, pos.start + e)
                raw = self.vectors[p]
            else:
                p = pos[s:e]
                raw = self.vectors[p if self.rows is None else self.rows[p]]
            if self._norms is not None:          # normalize with the cached norms: the same division
                block = out[s:e]
                block[...] = raw                 # float16 -> float32 is exact, in place
                norms = self._norms[p]
                block /= np.where(norms > 0, norms, 1.0)[:, None]
            else:
                out[s:e] = _f32(raw, self.normalize)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole float32 matrix (what streaming avoids; only for callers that need an array)."""
        whole = self[0:len(self)]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def candidate_rows(vectors: np.ndarray, rows: np.ndarray | None = None, normalize: bool = False,
                   limit: int | None = None, chunk: int | None = None) -> np.ndarray | RowsF32:
    """The candidates' rows (``rows``, None = all) in float32, optionally L2-normalised: one whole copy
    (:func:`rows_f32`) when it takes at most ``limit`` bytes (default :func:`vector_memory_limit`), else a
    :class:`RowsF32` view that converts ``chunk`` (:data:`STREAM_CHUNK`) rows at a time. Both give every
    row the same bytes."""
    chunk = STREAM_CHUNK if chunk is None else int(chunk)
    n = len(vectors) if rows is None else len(rows)
    need = n * int(vectors.shape[1]) * 4
    limit = vector_memory_limit() if limit is None else int(limit)
    if need <= limit:
        return rows_f32(vectors, np.arange(n) if rows is None else rows, normalize)
    progress.debug(f"vectors: {n:,} x {vectors.shape[1]} float32 would take {need / 2**30:.2f} GiB, over the "
                   f"{limit / 2**30:.2f} GiB limit ({VECTOR_MEMORY_ENV}): streaming in chunks of {chunk:,} rows")
    return RowsF32(vectors, rows, normalize, chunk)
