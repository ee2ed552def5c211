"""On-disk signal cache: Parquet parts keyed by record id, one folder per (signal, fingerprint).

Layout::

    <cache_dir>/signals/<name>/<fingerprint>/meta.json                         name, version, config, columns
    <cache_dir>/signals/<name>/<fingerprint>/part-<key>-n<rows>-<xxh3>.parquet  id + the signal's columns

Each part's name carries its row count and the xxh3-64 checksum of its bytes. Parts are written
atomically (temporary file, then rename), so a killed run leaves only whole parts and a rerun computes just
the ids that no part holds yet. A part that fails its check on load (truncated, corrupted, wrong row count,
unreadable) is removed with a warning and its records are recomputed: a damaged cache never crashes a run
nor changes a result. Parts of older caches (``part-<key>.parquet``, no checksum) are still read.
Reuse is by id, so a pool that grows or is re-read in another order reuses everything it can.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from .. import fs, progress
from ..fsutil import atomic_write, clean_stale_tmp, disk_guard, file_xxh3
from .base import Signal

_PART = re.compile(r"^part-(?P<key>[0-9a-f]+)(?:-n(?P<rows>\d+)-(?P<sum>[0-9a-f]{16}))?\.parquet$")

__all__ = ["SignalStore", "atomic_parquet", "atomic_write", "check_part"]


def ensure_folder(d: str, meta_blob: dict[str, Any], what: str) -> str:
    """Make a cache folder ``d`` (local or URL) with its ``meta.json`` (written once, atomically: a rename
    locally, one PUT on an object store); ``what`` names the cache in errors ("signal", "vector")."""
    meta = fs.join(d, "meta.json")
    data = orjson.dumps(meta_blob, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str)
    if fs.is_remote(d):
        try:
            if not fs.exists(meta):
                fs.write_atomic(meta, data)
        except OSError as e:
            raise fs.fs_error(meta, e, f"cannot write the {what} cache at") from None
        return d
    os.makedirs(d, exist_ok=True)
    if not os.path.exists(meta):
        atomic_write(meta, data)
    return d


class SignalStore:
    """``cache_dir`` is a local folder or a URL (``s3://bucket/cache``, ``gs://``, ``hdfs://``,
    ``file://``): on an object store each part is one PUT of the whole object under its final name, so a
    reader (another worker, a rerun) sees whole parts only."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.remote = fs.is_remote(cache_dir)
        self.root = fs.join(cache_dir, "signals")

    def folder(self, sig: Signal) -> str:
        return fs.join(self.root, sig.name, sig.fingerprint())

    def _ensure(self, sig: Signal) -> str:
        return ensure_folder(self.folder(sig), {"name": sig.name, "version": sig.version, "config": sig.config(),
                             "columns": {k: str(v) for k, v in sig.columns().items()}}, "signal")

    def parts(self, sig: Signal) -> list[str]:
        d = self.folder(sig)
        if self.remote:
            try:
                names = fs.listdir(d)
            except FileNotFoundError:
                return []
            except OSError as e:
                if fs.error_kind(e) == "missing" and "bucket" not in str(e).lower():
                    return []
                raise fs.fs_error(d, e, "cannot list the signal cache at") from None
            return [fs.join(d, f) for f in names if _PART.match(f)]
        if not os.path.isdir(d):
            return []
        clean_stale_tmp(d)
        return sorted(os.path.join(d, f) for f in os.listdir(d) if _PART.match(f))

    def load(self, sig: Signal, ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Table, np.ndarray]:
        """Cached values aligned with ``ids`` and a boolean mask of the ids that are missing.

        Parts that fail their check are dropped (warning) so their ids count as missing."""
        cols = sig.columns()
        n = len(ids)
        tables = []
        for p in self.parts(sig):
            t = read_part(p, sig.name)
            if t is not None:
                tables.append(t)
        if not tables:
            return _empty_aligned(cols, n), np.ones(n, dtype=bool)
        cached = pa.concat_tables(tables).combine_chunks()
        pos = pc.index_in(ids, value_set=cached.column("id"))
        missing = pos.is_null().to_numpy(zero_copy_only=False)
        idx = pc.fill_null(pos, 0)
        aligned = cached.select(list(cols)).take(idx) if cached.num_rows else _empty_aligned(cols, n)
        return aligned, missing

    def write_part(self, sig: Signal, ids: pa.Array, values: dict[str, Any]) -> str:
        d = self._ensure(sig)
        cols = sig.columns()
        arrays = {"id": ids}
        for k, t in cols.items():
            arrays[k] = pa.array(values[k], type=t)
        table = pa.table(arrays)
        first = ids[0].as_py() if len(ids) else ""
        key = xxhash.xxh3_64_hexdigest(f"{first}:{len(ids)}".encode())
        if self.remote:
            data = fs.parquet_bytes(table)
            path = fs.join(d, f"part-{key}-n{table.num_rows}-{xxhash.xxh3_64_hexdigest(data)}.parquet")
            try:
                fs.write_atomic(path, data)      # one PUT: the part appears whole under its final name
            except OSError as e:
                raise fs.fs_error(path, e, "cannot write the signal cache at") from None
            for old in self.parts(sig):
                m = _PART.match(fs.basename(old))
                if m and m.group("key") == key and old != path:
                    fs.remove(old)
            return path
        tmp = os.path.join(d, f"part-{key}.parquet.tmp{os.getpid()}")
        with disk_guard(os.path.join(d, f"part-{key}.parquet"), table.nbytes, [tmp]):
            pq.write_table(table, tmp, compression="zstd")
            digest = file_xxh3(tmp)
            path = os.path.join(d, f"part-{key}-n{table.num_rows}-{digest}.parquet")
            os.replace(tmp, path)
        for old in self.parts(sig):   # an earlier copy of the same shard (e.g. a part that failed its check)
            m = _PART.match(os.path.basename(old))
            if m and m.group("key") == key and old != path:
                os.remove(old)
        return path

    def clear(self, sig: Signal) -> int:
        n = 0
        for p in self.parts(sig):
            fs.remove(p)
            n += 1
        return n


def check_part(path: str) -> tuple[pa.Table | None, str]:
    """Read a cache part and check it against its name: (table, "") or (None, what is wrong)."""
    m = _PART.match(fs.basename(path))
    try:
        data = fs.read_bytes(path)
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    if m and m.group("sum") and xxhash.xxh3_64_hexdigest(data) != m.group("sum"):
        return None, "checksum mismatch (truncated or corrupted)"
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged part
        return None, f"not a readable Parquet file ({type(e).__name__}: {str(e)[:120]})"
    if m and m.group("rows") and table.num_rows != int(m.group("rows")):
        return None, f"{table.num_rows} rows, its name says {m.group('rows')}"
    if "id" not in table.column_names:
        return None, "no id column"
    return table, ""


def read_part(path: str, what: str) -> pa.Table | None:
    """A checked part, or None after warning and removing a damaged one (its records get recomputed)."""
    table, problem = check_part(path)
    if table is not None:
        return table
    progress.warn(f"cache part {path} of {what} is damaged: {problem}; removing it and recomputing "
                  f"its records")
    try:
        fs.remove(path)
    except OSError:
        pass
    return None


def _empty_aligned(cols: dict[str, pa.DataType], n: int) -> pa.Table:
    return pa.table({k: pa.nulls(n, type=t) for k, t in cols.items()})


def atomic_parquet(path: str, table: pa.Table) -> None:
    """Write a Parquet file via a temporary file and rename; a full disk is a DiskFullError. ``path`` may be
    a URL (one PUT of the whole file)."""
    if fs.is_remote(path):
        fs.write_table(path, table)
        return
    tmp = path + f".tmp{os.getpid()}"
    with disk_guard(path, table.nbytes, [tmp]):
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
