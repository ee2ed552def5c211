"""On-disk signal cache: Parquet parts keyed by record id, one folder per (signal, fingerprint).

Layout::

    <cache_dir>/signals/<name>/<fingerprint>/meta.json          signal name, version, config, columns
    <cache_dir>/signals/<name>/<fingerprint>/part-<key>.parquet  columns: id + the signal's columns

Parts are written atomically (temporary file, then rename), so a killed run leaves only whole parts and
a rerun computes just the ids that no part holds yet. Reuse is by id, so a pool that grows or is re-read
in another order reuses everything it can.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from .base import Signal


class SignalStore:
    def __init__(self, cache_dir: str | os.PathLike):
        self.root = os.path.join(os.fspath(cache_dir), "signals")

    def folder(self, sig: Signal) -> str:
        return os.path.join(self.root, sig.name, sig.fingerprint())

    def _ensure(self, sig: Signal) -> str:
        d = self.folder(sig)
        os.makedirs(d, exist_ok=True)
        meta = os.path.join(d, "meta.json")
        if not os.path.exists(meta):
            blob = {"name": sig.name, "version": sig.version, "config": sig.config(),
                    "columns": {k: str(v) for k, v in sig.columns().items()}}
            atomic_write(meta, orjson.dumps(blob, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
                                             default=str))
        return d

    def parts(self, sig: Signal) -> list[str]:
        d = self.folder(sig)
        if not os.path.isdir(d):
            return []
        return sorted(os.path.join(d, f) for f in os.listdir(d)
                      if f.startswith("part-") and f.endswith(".parquet"))

    def load(self, sig: Signal, ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Table, np.ndarray]:
        """Cached values aligned with ``ids`` and a boolean mask of the ids that are missing."""
        cols = sig.columns()
        parts = self.parts(sig)
        n = len(ids)
        if not parts:
            return _empty_aligned(cols, n), np.ones(n, dtype=bool)
        cached = pa.concat_tables([pq.read_table(p) for p in parts]).combine_chunks()
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
        path = os.path.join(d, f"part-{key}.parquet")
        atomic_parquet(path, table)
        return path

    def clear(self, sig: Signal) -> int:
        n = 0
        for p in self.parts(sig):
            os.remove(p)
            n += 1
        return n


def _empty_aligned(cols: dict[str, pa.DataType], n: int) -> pa.Table:
    return pa.table({k: pa.nulls(n, type=t) for k, t in cols.items()})


def atomic_write(path: str, data: bytes) -> None:
    """Write via a temporary file and rename: readers never see a partial file, a killed run leaves none."""
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def atomic_parquet(path: str, table: pa.Table) -> None:
    tmp = path + f".tmp{os.getpid()}"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
