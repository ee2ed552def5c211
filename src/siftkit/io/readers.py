"""File readers: turn one input file (or a byte range of one) into raw records with locations.

Each reader yields ``RawRecord`` items or ``ParseProblem`` items (a record that could not be parsed,
or a defect such as a trailing comma that loses no record). Readers never drop anything silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import InputDataError

JSON_EXT = (".json",)
JSONL_EXT = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".ndjson.zst", ".json.gz",
             ".json.zst")
PARQUET_EXT = (".parquet", ".pq")
CSV_EXT = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
ARROW_EXT = (".arrow",)
KNOWN_EXT = JSON_EXT + JSONL_EXT + PARQUET_EXT + CSV_EXT + ARROW_EXT


@dataclass(slots=True)
class RawRecord:
    obj: Any              # parsed record (dict, list, or CSV row)
    row: int              # 0-based position in the file (physical line index for JSONL)
    line: int | None      # 1-based line where the record starts, when known
    original: str         # the untouched original record as JSON text


@dataclass(slots=True)
class ParseProblem:
    row: int | None
    line: int | None
    column: int | None
    reason: str
    code: str = "parse_error"   # parse_error (a record is lost) or defect (no record lost)
    raw: str = ""


def file_kind(path: str) -> str | None:
    low = path.lower()
    # Longest suffix wins: .json.gz is JSON Lines when gzipped (common for dumps).
    for kind, exts in (("jsonl", JSONL_EXT), ("parquet", PARQUET_EXT), ("csv", CSV_EXT),
                       ("arrow", ARROW_EXT), ("json", JSON_EXT)):
        if low.endswith(exts):
            return kind
    return None


def open_text_stream(path: str) -> io.TextIOBase:
    low = path.lower()
    if low.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    if low.endswith(".zst"):
        import zstandard

        fh = open(path, "rb")
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh, closefd=True),
                                encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


# ---------------------------------------------------------------- JSON Lines

def read_jsonl(path: str, start: int = 0, end: int | None = None, first_line: int = 1
               ) -> Iterator[RawRecord | ParseProblem]:
    """Read JSON Lines; ``start``/``end`` select a byte range (uncompressed files only)."""
    loads = orjson.loads
    if path.lower().endswith((".gz", ".zst")):
        lines: Any = (ln.encode() for ln in open_text_stream(path))
    else:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(None if end is None else end - start)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
    for i, raw in enumerate(lines):
        lineno = first_line + i
        s = raw.strip()
        if not s:
            continue
        if lineno == 1 and s.startswith(b"\xef\xbb\xbf"):
            s = s[3:]
        try:
            obj = loads(s)
        except orjson.JSONDecodeError as e:
            yield ParseProblem(lineno - 1, lineno, getattr(e, "colno", None), f"invalid JSON: {e.msg}",
                               raw=s[:500].decode("utf-8", "replace"))
            continue
        yield RawRecord(obj, lineno - 1, lineno, s.decode("utf-8", "replace"))


def jsonl_ranges(path: str, chunk_bytes: int) -> list[tuple[int, int, int]]:
    """Split an uncompressed JSONL file into newline-aligned byte ranges: (start, end, first_line)."""
    size = os.path.getsize(path)
    if size <= chunk_bytes:
        return [(0, size, 1)]
    ranges = []
    start, line = 0, 1
    with open(path, "rb") as fh:
        while start < size:
            fh.seek(min(start + chunk_bytes, size))
            fh.readline()
            end = min(fh.tell(), size)
            fh.seek(start)
            n_lines = fh.read(end - start).count(b"\n")
            ranges.append((start, end, line))
            start, line = end, line + n_lines
    return ranges


# ---------------------------------------------------------------- JSON (array or object)

def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def _records_from_json_value(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], (dict, list))]
        # {"data": [...]}, {"examples": [...]}: one list of records wrapped in an object.
        if len(lists) == 1 and len(value) <= 3:
            return value[lists[0]]
        return [value]
    raise InputDataError(f"top-level JSON value is a {type(value).__name__}, expected a list of records")


def read_json(path: str, recover: bool) -> Iterator[RawRecord | ParseProblem]:
    with open(path, "rb") as fh:
        data = fh.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        text = data.decode("utf-8", "replace")
        line, col = _line_col(text, e.pos)
        if not recover:
            raise InputDataError(f"malformed JSON: {e.msg} (use --on-error skip to recover the valid "
                                 f"records and report the rest)", file=path, line=line, column=col) from None
        yield from _recover_json_array(text)
        return
    if not data.strip():
        return
    try:
        records = _records_from_json_value(value)
    except InputDataError as e:
        raise InputDataError(e.reason, file=path) from None
    dumps = orjson.dumps
    for i, rec in enumerate(records):
        yield RawRecord(rec, i, None, dumps(rec).decode())


_RESYNC = re.compile(r"\}\s*,\s*(?=\{)")


def _recover_json_array(text: str) -> Iterator[RawRecord | ParseProblem]:
    """Element-by-element parse of a broken JSON array; reports each defect with line and column."""
    dec = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()
    if not text.startswith("[", pos):
        line, col = _line_col(text, pos)
        yield ParseProblem(None, line, col, "malformed JSON that is not an array: cannot recover records")
        return
    pos += 1
    idx = 0
    n = len(text)
    while True:
        pos = ws.match(text, pos).end()
        if pos >= n:
            line, col = _line_col(text, pos)
            yield ParseProblem(None, line, col, "unterminated array (missing ']')", code="defect")
            return
        if text[pos] == "]":
            return
        try:
            rec, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            line, col = _line_col(text, e.pos)
            m = _RESYNC.search(text, e.pos)
            raw = text[pos:(m.start() + 1) if m else min(n, pos + 500)]
            start_line, start_col = _line_col(text, pos)
            yield ParseProblem(idx, start_line, start_col,
                               f"invalid JSON in array element {idx}: {e.msg} at line {line} column {col}",
                               raw=raw[:500])
            idx += 1
            if not m:
                return
            pos = m.end()
            continue
        yield RawRecord(rec, idx, _line_col(text, pos)[0], json.dumps(rec, ensure_ascii=False))
        idx += 1
        pos = ws.match(text, end).end()
        if pos < n and text[pos] == ",":
            after = ws.match(text, pos + 1).end()
            if after < n and text[after] == "]":
                line, col = _line_col(text, pos)
                yield ParseProblem(None, line, col, "trailing comma before ']' (no record lost)", code="defect")
                return
            pos += 1
        elif pos < n and text[pos] == "]":
            return
        else:
            line, col = _line_col(text, pos)
            yield ParseProblem(None, line, col, "expected ',' or ']' after an array element", code="defect")
            m = _RESYNC.search(text, pos - 1)
            if not m:
                return
            pos = m.end()


# ---------------------------------------------------------------- CSV / TSV

HEADER_HINTS = {"instruction", "input", "output", "response", "prompt", "completion", "question", "answer",
                "messages", "conversations", "user", "assistant", "system", "query", "text", "id"}


def read_csv(path: str, header: bool | None) -> Iterator[RawRecord | ParseProblem]:
    low = path.lower().removesuffix(".gz")
    delim = "\t" if low.endswith(".tsv") else ","
    csv.field_size_limit(1 << 30)
    with open_text_stream(path) as fh:
        reader = csv.reader(fh, delimiter=delim)
        names = None
        row_idx = 0
        prev_line = 0
        for fields in reader:
            start_line = prev_line + 1
            prev_line = reader.line_num
            if names is None and row_idx == 0 and header is not False:
                is_header = header is True or (
                    header is None and sum(f.strip().lower() in HEADER_HINTS for f in fields) >= 1)
                if is_header:
                    names = [f.strip() for f in fields]
                    continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if names is not None:
                if len(fields) != len(names):
                    yield ParseProblem(row_idx, start_line, None,
                                       f"row has {len(fields)} fields, header has {len(names)}",
                                       raw=delim.join(fields)[:500])
                    row_idx += 1
                    continue
                obj: Any = dict(zip(names, fields))
            else:
                obj = fields
            yield RawRecord(obj, row_idx, start_line, _dumps(obj))
            row_idx += 1


# ---------------------------------------------------------------- Parquet / Arrow

def _iter_arrow_rows(batches: Iterator[Any]) -> Iterator[RawRecord]:
    i = 0
    for batch in batches:
        for rec in batch.to_pylist():
            yield RawRecord(rec, i, None, _dumps(rec))
            i += 1


def read_parquet(path: str) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid with a useful message
        raise InputDataError(f"cannot read Parquet: {e}", file=path) from None
    yield from _iter_arrow_rows(pf.iter_batches(batch_size=8192))


def read_arrow(path: str) -> Iterator[RawRecord]:
    """Arrow IPC files as written by HF ``datasets.save_to_disk`` (stream format) or the file format."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(path)
    except pa.ArrowInvalid:
        try:
            reader = pa.ipc.open_file(path)
            yield from _iter_arrow_rows(reader.get_batch(i) for i in range(reader.num_record_batches))
            return
        except pa.ArrowInvalid as e:
            raise InputDataError(f"cannot read Arrow IPC: {e}", file=path) from None
    yield from _iter_arrow_rows(iter(reader))
