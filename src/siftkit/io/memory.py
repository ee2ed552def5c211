"""In-memory inputs for the Python API: HF datasets, pandas and polars DataFrames, Arrow tables, record lists.

Each in-memory input becomes one read task (``pool.FileTask`` with ``records`` set) whose raw records are
what the file readers produce, ``RawRecord(obj, row, line=None, original=JSON text)``: format detection and
adaptation (``format=``, ``mapping=``), validation, rejects and ids then run through the same
``pool.process_task`` as for files. Tabular inputs go through Arrow exactly like a Parquet file (a DataFrame
reads like ``df.to_parquet()`` read back); a list of dicts reads like a JSON array.

Provenance: ``file`` is ``<dataset:NAME>`` for a HF dataset (``NAME`` its name, ``:split`` appended for a
split of a ``DatasetDict``; ``<dataset>`` when it has none) and ``<memory:SOURCE>`` (``<memory>`` without a
``source=``) for the rest; several inputs with the same label get ``#2``, ``#3``...; ``row`` is the row
index; ``line`` is null. ``source`` defaults to the dataset's name, else ``memory``. Ids are the file scheme's
``xxh3_64(conversation || file || row)``: the same records read from ``data.jsonl`` have the same messages,
rows and (parsed) originals but other ids, because ``file`` differs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from . import readers as R

INPUT_KEYS = {"path", "source", "format", "mapping", "header", "split", "per_file"}  # = InputSpec keys (tested)
BATCH = 8192


def _top_module(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def kind(obj: Any) -> str | None:
    """What kind of in-memory input ``obj`` is (None: not one; a path, an input spec, ...). Libraries are
    recognised by duck typing: none is imported here."""
    if isinstance(obj, (pa.Table, pa.RecordBatch)):
        return "arrow"
    if isinstance(obj, pa.RecordBatchReader):
        return "arrow_reader"
    mod = _top_module(obj)
    if mod == "datasets":
        if isinstance(obj, Mapping):
            return "dataset_dict"
        if hasattr(obj, "with_format") and hasattr(obj, "num_rows"):
            return "dataset"
        if hasattr(obj, "__iter__"):
            return "iterable_dataset"
    if mod == "pandas" and hasattr(obj, "columns") and hasattr(obj, "to_dict"):
        return "pandas"
    if mod == "polars" and type(obj).__name__ == "LazyFrame":
        return "lazy"
    if callable(getattr(obj, "to_arrow", None)) and not isinstance(obj, (str, bytes, Mapping)):
        return "to_arrow"   # polars DataFrame, and other frames that convert to Arrow
    if hasattr(obj, "__arrow_c_stream__"):
        return "arrow_stream"
    if isinstance(obj, (list, tuple)) and obj and _is_record_list(obj):
        return "records"
    return None


def _is_record_list(items: Sequence[Any]) -> bool:
    """A list of records (dicts, or conversations as lists of strings), not a list of inputs."""
    if all(isinstance(x, (list, tuple)) for x in items):
        return True
    if not all(isinstance(x, Mapping) for x in items):
        return False
    # [{"path": ...}, ...] of input keys only is a list of input specs; [{"data": ...}] of in-memory specs
    return not all(("path" in x and set(x) <= INPUT_KEYS) or "data" in x for x in items)


def is_memory(obj: Any) -> bool:
    return kind(obj) is not None


def _dataset_name(ds: Any) -> str | None:
    info = getattr(ds, "info", None)
    for attr in ("dataset_name", "builder_name"):
        v = getattr(info, attr, None)
        if isinstance(v, str) and v:
            return v
    return None


def unique_labels(specs: Sequence[Any]) -> None:
    """Give in-memory inputs that share a label ``#2``, ``#3``... so their files (and ids) stay distinct."""
    seen: dict[str, int] = {}
    for s in specs:
        if getattr(s, "data", None) is None:
            continue
        n = seen.get(s.path, 0) + 1
        seen[s.path] = n
        if n > 1:
            s.path = f"{s.path}#{n}"


class MemoryRecords:
    """Callable yielding the raw records of one in-memory object (picklable, for reader processes)."""

    def __init__(self, obj: Any):
        self.kind, self.obj = kind(obj), obj

    def __getstate__(self) -> dict[str, Any]:
        # streams cannot be pickled (to a reader process): they travel as the table they hold
        if self.kind in ("arrow_reader", "arrow_stream"):
            return {"kind": "arrow", "obj": self.obj.read_all() if self.kind == "arrow_reader" else pa.table(self.obj)}
        if self.kind == "to_arrow":
            return {"kind": "arrow", "obj": _as_table(self.obj.to_arrow())}
        return dict(self.__dict__)

    def __call__(self) -> Iterator[R.RawRecord]:
        k, obj = self.kind, self.obj
        if k == "arrow":
            batches = obj.to_batches(max_chunksize=BATCH) if isinstance(obj, pa.Table) else [obj]
            return R._iter_arrow_rows(batches)
        if k == "arrow_reader":
            return R._iter_arrow_rows(obj)
        if k == "dataset":   # arrow format: rows with the dataset's indices (select, shuffle, filter) applied
            return R._iter_arrow_rows(obj.with_format("arrow").iter(batch_size=BATCH))
        if k == "iterable_dataset":
            return _rows(iter(obj))
        if k == "pandas":
            return _pandas_rows(obj)
        if k == "to_arrow":
            return R._iter_arrow_rows(_as_table(obj.to_arrow()).to_batches(max_chunksize=BATCH))
        if k == "arrow_stream":
            return R._iter_arrow_rows(pa.table(obj).to_batches(max_chunksize=BATCH))
        return _rows(iter(obj))


def _as_table(t: Any) -> pa.Table:
    return t if isinstance(t, pa.Table) else pa.table(t)


def _rows(items: Iterator[Any]) -> Iterator[R.RawRecord]:
    for i, rec in enumerate(items):
        if isinstance(rec, tuple):
            rec = list(rec)
        yield R.RawRecord(rec, i, None, R._dumps(rec))


def _pandas_rows(df: Any) -> Iterator[R.RawRecord]:
    """Through Arrow like a Parquet file; a frame Arrow cannot type (a column mixing dicts and strings, say)
    row by row, with numpy values made plain and missing values (NaN, None, NaT) as null."""
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, TypeError):
        return _rows(_plain(r) for r in df.to_dict("records"))
    return R._iter_arrow_rows(table.to_batches(max_chunksize=BATCH))


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is not None and type(value).__name__ in ("NaTType", "NAType"):
        return None
    return value
