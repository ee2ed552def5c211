"""File readers: turn one input file (or a byte range of one) into raw records with locations.

Each reader yields ``RawRecord`` items or ``ParseProblem`` items (a record that could not be parsed,
or a defect such as a trailing comma that loses no record). A problem with the whole file (it cannot be
opened, a compressed stream is cut short or corrupt, the top-level value is not records) raises
``FileProblem`` after yielding every record read before it. Readers never drop anything silently.

Record-level checks (each a ``ParseProblem`` with its own code, rejected in skip mode, an error otherwise):
``parse_error`` (invalid JSON), ``invalid_utf8``, ``lone_surrogate``, ``non_finite_number`` (NaN,
Infinity: not JSON), ``too_deep`` (nesting beyond 1024 levels), ``duplicate_key`` (the same key twice with
different values: which one is meant is ambiguous; the same key twice with the same value is a ``defect``,
since nothing is lost or changed), ``unterminated_quote`` (CSV).
"""

from __future__ import annotations

import csv
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Self

import orjson

from .. import fs as _fs
from ..errors import ConfigError, InputDataError

JSON_EXT = (".json",)
JSONL_EXT = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".ndjson.zst", ".json.gz",
             ".json.zst")
PARQUET_EXT = (".parquet", ".pq")
CSV_EXT = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
ARROW_EXT = (".arrow",)
KNOWN_EXT = JSON_EXT + JSONL_EXT + PARQUET_EXT + CSV_EXT + ARROW_EXT
MAX_DEPTH = 1024  # orjson's nesting limit; the slow paths keep the same limit


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
    code: str = "parse_error"   # parse_error etc. (a record is lost) or defect (no record lost)
    raw: str = ""


class FileProblem(InputDataError):
    """The whole file (or the rest of it) cannot be read: ``code`` names why, ``records`` how many records
    it held when that is countable (None when not). Records read before the problem stay read."""

    def __init__(self, message: str, *, code: str = "unreadable", records: int | None = None,
                 file: str | None = None, line: int | None = None, column: int | None = None):
        super().__init__(message, file=file, line=line, column=column)
        self.code, self.records = code, records   # picklable with them: SiftkitError.__reduce__


def _open(path: str, seekable: bool = False) -> Any:
    """A binary file: local paths with ``open``, URLs (``s3://``, ``gs://``, ...) through siftkit.fs (a
    stream unless ``seekable``). A remote stream read to its end leaves its sha256 in ``REMOTE_SHA256``,
    so the manifest's checksum costs no second download."""
    if not _fs.is_url(path):
        return open(path, "rb")
    fh = _fs.open_input(path, seekable)
    return fh if seekable or not _fs.is_remote(path) else _HashingReader(path, fh)


REMOTE_SHA256: dict[str, str] = {}   # url -> sha256 of the bytes of a remote file read whole (this process)


class _HashingReader:
    def __init__(self, path: str, fh: Any):
        import hashlib

        self.path, self.fh, self.h = path, fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        b = self.fh.read(n)
        self.h.update(b)
        if not b or n is None or n < 0:
            REMOTE_SHA256[self.path] = self.h.hexdigest()
        return b

    def __iter__(self) -> Iterator[bytes]:
        for ln in self.fh:
            self.h.update(ln)
            yield ln
        REMOTE_SHA256[self.path] = self.h.hexdigest()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def file_kind(path: str) -> str | None:
    low = path.lower()
    # Longest suffix wins: .json.gz is JSON Lines when gzipped (common for dumps).
    for kind, exts in (("jsonl", JSONL_EXT), ("parquet", PARQUET_EXT), ("csv", CSV_EXT),
                       ("arrow", ARROW_EXT), ("json", JSON_EXT)):
        if low.endswith(exts):
            return kind
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def safe_text(s: str) -> str:
    """``s`` made encodable as UTF-8: undecodable bytes (surrogate escapes) shown as ``\\xNN``."""
    if not _SURROGATE.search(s):
        return s
    return s.encode("utf-8", "surrogateescape" if _only_escapes(s) else "surrogatepass").decode(
        "utf-8", "backslashreplace")


def _only_escapes(s: str) -> bool:
    return all("\udc80" <= ch <= "\udcff" for ch in _SURROGATE.findall(s))


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


# ---------------------------------------------------------------- byte streams

def _utf16_or_32(head: bytes) -> str | None:
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    return None


def _check_encoding(head: bytes, path: str) -> None:
    enc = _utf16_or_32(head)
    if enc:
        raise FileProblem(f"the file is {enc} encoded (byte order mark); siftkit reads UTF-8: convert it, "
                          f"e.g. iconv -f {enc} -t UTF-8", code="unsupported_encoding", file=path)


def _decompressed_chunks(path: str) -> Iterator[bytes]:
    """Decompressed bytes of a .gz (all members) or .zst (all frames) file. Raises ``FileProblem``
    for a corrupt stream and for a stream cut short (``code='truncated'``), after yielding what came before."""
    gz = path.lower().endswith(".gz")
    if gz:
        make = lambda: zlib.decompressobj(wbits=31)
        errors: tuple[type[BaseException], ...] = (zlib.error,)
    else:
        import zstandard

        dctx = zstandard.ZstdDecompressor()
        make = dctx.decompressobj
        errors = (zstandard.ZstdError,)
    what = "gzip" if gz else "zstd"
    read = out = 0
    with _open(path) as fh:
        d = make()
        done = False
        while True:
            buf = fh.read(1 << 20)
            if not buf:
                break
            read += len(buf)
            while buf:
                if done:
                    if gz and not buf.strip(b"\x00"):  # zero padding after the last member
                        buf = b""
                        break
                    d, done = make(), False
                saved = d.copy() if gz else None
                try:
                    chunk = d.decompress(buf)
                except errors as e:
                    if saved is not None:  # keep what decompresses before the damaged byte
                        for good in _salvage(saved, buf):
                            out += len(good)
                            yield good
                    raise FileProblem(f"corrupt {what} stream (not {what} data, or damaged) after {out:,} "
                                      f"decompressed bytes: {e}", code="corrupt_compressed", file=path) from None
                out += len(chunk)
                if chunk:
                    yield chunk
                if d.eof:
                    done = True
                    buf = d.unused_data
                else:
                    buf = b""
        if not done:
            raise FileProblem(f"truncated {what} stream: it ends after {read:,} compressed and {out:,} "
                              f"decompressed bytes, before the end-of-stream marker; what follows the cut is "
                              f"lost", code="truncated", file=path)


def _salvage(d: Any, buf: bytes) -> Iterator[bytes]:
    """Output of a zlib decompressor ``d`` for ``buf`` up to the first byte it fails on (by halving)."""
    pos, n = 0, len(buf)
    while pos < n:
        size = n - pos
        while size:
            trial = d.copy()
            try:
                chunk = trial.decompress(buf[pos:pos + size])
            except zlib.error:
                size //= 2
                continue
            d = trial
            pos += size
            if chunk:
                yield chunk
            if d.eof:
                return
            break
        if not size:  # the byte at pos is where it fails
            return


def _lines(path: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Physical lines (without the newline) of a plain file's byte range or of a whole compressed file.
    A compressed file cut short raises ``FileProblem`` naming the last complete line; the cut line is not
    yielded."""
    if not path.lower().endswith((".gz", ".zst")):
        if start == 0 and end is None:  # a whole plain file: streamed
            with _open(path) as fh:
                for i, ln in enumerate(fh):
                    if i == 0:
                        _check_encoding(ln[:4], path)
                    yield ln[:-1] if ln.endswith(b"\n") else ln
            return
        with _open(path, seekable=True) as fh:
            fh.seek(start)
            data = fh.read(None if end is None else end - start)
        if start == 0:
            _check_encoding(data[:4], path)
            if _fs.is_remote(path) and (end is None or end == _fs.size(path)):   # the whole file
                import hashlib

                REMOTE_SHA256[path] = hashlib.sha256(data).hexdigest()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        yield from lines
        return
    pieces: list[bytes] = []
    n = 0
    first = True
    try:
        for chunk in _decompressed_chunks(path):
            if first:
                _check_encoding(chunk[:4], path)
                first = False
            parts = chunk.split(b"\n")
            if len(parts) == 1:
                pieces.append(chunk)
                continue
            pieces.append(parts[0])
            yield b"".join(pieces)
            n += 1
            yield from parts[1:-1]
            n += len(parts) - 2
            pieces = [parts[-1]]
    except FileProblem as e:
        if e.code == "truncated":
            cut = b"".join(pieces)
            where = (f"; the cut falls inside line {n + 1} ({len(cut):,} bytes of it read)" if cut else
                     f"; the cut falls after line {n}")
            raise FileProblem(e.reason + where + f"; the {n:,} complete line(s) before it were read",
                              code="truncated", file=path, line=n + 1) from None
        raise
    rest = b"".join(pieces)
    if rest:
        yield rest


# ---------------------------------------------------------------- JSON checks (slow path only)

class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def _pairs_hook(dups: list[tuple[str, bool, int]]):
    """object_pairs_hook collecting (key, same value?, id of the object) for every repeated key."""
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                dups.append((k, out[k] == v, id(out)))
            out[k] = v
        return out
    return hook


def _strict_value_problem(value: Any, dups: list[tuple[str, bool, int]]) -> tuple[str, str] | None:
    """(code, reason) for a value parsed by the stdlib parser that orjson would not accept as is."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[e.start:e.end]
        if _only_escapes(bad):
            return "invalid_utf8", f"invalid UTF-8 byte(s) {safe_text(bad)!s} in a string"
        return "lone_surrogate", (f"lone surrogate \\u{ord(bad[0]):04x} in a string (not encodable as UTF-8)")
    except ValueError as e:  # allow_nan=False: float('nan') from an overflowing literal such as 1e999
        return "non_finite_number", f"non-finite number ({e}): not valid JSON"
    except RecursionError:
        return "too_deep", f"nested deeper than {MAX_DEPTH} levels"
    differing = [d[0] for d in dups if not d[1]]
    if differing:
        return "duplicate_key", (f"duplicate key '{safe_text(differing[0])}' with different values (JSON "
                                 f"parsers keep only the last one, so which is meant is ambiguous)")
    return None


def _dup_defect(dups: list[tuple[str, bool]] | list[tuple[str, bool, int]]) -> str | None:
    if dups and all(d[1] for d in dups):
        return (f"duplicate key '{safe_text(dups[0][0])}' with the same value twice "
                f"(kept once; no data lost)")
    return None


def _slow_parse(text: str) -> tuple[Any, list[tuple[str, bool, int]]]:
    """Parse with the stdlib, rejecting NaN/Infinity, collecting duplicate keys. Deep nesting raises
    RecursionError (the stdlib parser guards its recursion), which callers turn into ``too_deep``."""
    dups: list[tuple[str, bool, int]] = []
    value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_pairs_hook(dups))
    return value, dups


_D, _L = dict, list


def _n_keys(o: Any) -> int:
    n = 0
    if type(o) is _D:
        n = len(o)
        for v in o.values():
            if type(v) is _D or type(v) is _L:
                n += _n_keys(v)
    elif type(o) is _L:
        for v in o:
            if type(v) is _D or type(v) is _L:
                n += _n_keys(v)
    return n


_KEY_COLON_WS = re.compile(rb'"[ \t\r\n]+:')


def _key_colons(raw: bytes) -> int:
    """How many ``":`` (a key's closing quote and its colon) the raw text holds, JSON whitespace between
    them allowed (``"a" : 1``); the regex runs only when a quote is followed by whitespace somewhere."""
    c = raw.count(b'":')
    if b'" ' in raw or b'"\t' in raw or b'"\n' in raw or b'"\r' in raw:
        c += len(_KEY_COLON_WS.findall(raw))
    return c


def _maybe_dup_keys(raw: bytes, obj: Any) -> bool:
    """Cheap test: True when the raw text may hold a duplicate key (more ``":`` than keys in the parsed
    value, whitespace before the colon included; escaped quotes inside strings can give false alarms,
    settled by the slow path)."""
    c = _key_colons(raw)
    if c <= 1 or (type(obj) is _D and c <= len(obj)):
        return False
    return c > _n_keys(obj)


def _diagnose(s: bytes, msg: str) -> tuple[str, str, Any]:
    """Why orjson refused a record: (code, reason, value); value is not None when the record is in fact
    valid JSON that orjson cannot hold (integers beyond 64 bits) and is accepted."""
    try:
        text = s.decode("utf-8")
    except UnicodeDecodeError as e:
        return "invalid_utf8", f"invalid UTF-8 byte(s) at byte {e.start} of the record", None
    if "depth" in msg or "recursion" in msg:
        return "too_deep", f"nested deeper than {MAX_DEPTH} levels", None
    try:
        value, dups = _slow_parse(text)
    except _NonFinite as e:
        return "non_finite_number", f"non-finite number {e} is not valid JSON", None
    except RecursionError:
        return "too_deep", f"nested deeper than {MAX_DEPTH} levels", None
    except ValueError:
        if "surrogate" in msg:
            return "lone_surrogate", f"invalid JSON: {msg}", None
        return "parse_error", f"invalid JSON: {msg}", None
    bad = _strict_value_problem(value, dups)
    if bad is not None:
        return bad[0], bad[1], None
    return "", "", value


# ---------------------------------------------------------------- JSON Lines

def read_jsonl(path: str, start: int = 0, end: int | None = None, first_line: int = 1,
               recover: bool = False) -> Iterator[RawRecord | ParseProblem]:
    """Read JSON Lines; ``start``/``end`` select a byte range (uncompressed files only).

    A whole file that is in fact one JSON document (a pretty-printed array: the first line is ``[``)
    is read as JSON with a defect note, instead of rejecting every line."""
    it = iter(_lines(path, start, end))
    if start != 0 or (end is not None and end < _fs.size(path)):
        yield from _parse_lines(it, first_line)
        return
    head: list[bytes] = []
    for raw in it:
        head.append(raw)
        if raw.strip():
            break
    first = head[-1].strip().removeprefix(b"\xef\xbb\xbf") if head else b""
    if first[:1] in (b"[", b"{") and not _parses(first):
        rest = list(it)
        data = b"\n".join(head + rest)
        if first == b"[" or _parses(data):
            yield ParseProblem(None, None, None, "the file holds one JSON document, not JSON Lines (one record "
                               "a line): read as JSON", code="defect")
            yield from parse_json_document(path, data, recover)
            return
        yield from _parse_lines(head + rest, first_line)
        return
    yield from _parse_lines(_chain(head, it), first_line)


def jsonl_values(path: str, what: str = "") -> Iterator[tuple[int, Any]]:
    """``(line, value)`` for each non-blank line of a JSON Lines side file (eval sets, evolve outputs, bench
    data; ``.gz`` / ``.zst`` too), 1-based lines. Not the pool reader (``read_jsonl``): nothing is recovered,
    the first line that is not JSON raises ``ConfigError`` naming ``path:line`` (after ``what: ``)."""
    pre = f"{what}: " if what else ""
    if not _fs.isfile(path):
        raise ConfigError(f"{pre}{path} not found")
    for n, raw in enumerate(_lines(path), 1):
        s = raw.strip()
        if not s:
            continue
        if n == 1:
            s = s.removeprefix(b"\xef\xbb\xbf")
        try:
            value = orjson.loads(s)
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"{pre}{path}:{n}: not JSON (column {e.colno}: {e.msg})") from None
        yield n, value


def _chain(head: list[bytes], it: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from it


def _parses(b: bytes) -> bool:
    try:
        orjson.loads(b)
        return True
    except orjson.JSONDecodeError:
        return False


def _parse_lines(lines: Iterable[bytes], first_line: int = 1) -> Iterator[RawRecord | ParseProblem]:
    loads = orjson.loads
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
            code, reason, obj = _diagnose(s, e.msg)
            if obj is None:
                yield ParseProblem(lineno - 1, lineno, getattr(e, "colno", None) if code == "parse_error"
                                   else None, reason, code=code, raw=safe_text(s[:500].decode("utf-8", "replace")))
                continue
        else:
            if _maybe_dup_keys(s, obj):  # rare: then the slow path says whether a key is repeated
                problem = _dup_problem(s, lineno - 1, lineno)
                if problem is not None:
                    yield problem
                    if problem.code != "defect":
                        continue
        yield RawRecord(obj, lineno - 1, lineno, s.decode("utf-8", "replace"))


def _dup_problem(s: bytes, row: int | None, line: int | None) -> ParseProblem | None:
    try:
        _, dups = _slow_parse(s.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    differing = [d[0] for d in dups if not d[1]]
    if differing:
        return ParseProblem(row, line, None, f"duplicate key '{safe_text(differing[0])}' with different values "
                            f"(JSON parsers keep only the last one, so which is meant is ambiguous)",
                            code="duplicate_key", raw=s[:500].decode("utf-8", "replace"))
    note = _dup_defect(dups)
    return ParseProblem(row, line, None, note, code="defect") if note else None


def jsonl_ranges(path: str, chunk_bytes: int, within: tuple[int, int, int | None] | None = None,
                 count_lines: bool = True) -> list[tuple[int, int, int | None]]:
    """Split an uncompressed JSONL file into newline-aligned byte ranges: (start, end, first_line).
    ``within``: split only that range of it (a range this function gave), e.g. into smaller ones.
    ``count_lines=False`` reads only a line at each cut (not the whole file): the ranges after the first
    have ``first_line`` ``None``, for the caller to count elsewhere (``count_newlines``, e.g. on workers)."""
    start, size, line = within if within is not None else (0, _fs.size(path), 1)
    if size - start <= chunk_bytes:
        return [(start, size, line)]
    ranges: list[tuple[int, int, int | None]] = []
    with _open(path, seekable=True) as fh:
        while start < size:
            fh.seek(min(start + chunk_bytes, size))
            fh.readline()
            end = min(fh.tell(), size)
            ranges.append((start, end, line))
            if count_lines and line is not None:
                line += _newlines_in(fh, start, end)
            else:
                line = None
            start = end
    return ranges


def count_newlines(path: str, start: int, end: int) -> int:
    """Newlines in bytes ``[start, end)`` of a file (local or URL)."""
    with _open(path, seekable=True) as fh:
        return _newlines_in(fh, start, end)


def _newlines_in(fh: Any, start: int, end: int, block: int = 8 << 20) -> int:
    """Newlines in bytes ``[start, end)`` of an open seekable file, read ``block`` bytes at a time."""
    n = 0
    fh.seek(start)
    left = end - start
    while left > 0:
        data = fh.read(min(block, left))
        if not data:
            break
        n += data.count(b"\n")
        left -= len(data)
    return n


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
    raise FileProblem(f"top-level JSON value is a {type(value).__name__}, expected a list of records or "
                      f"one record (an object)", code="not_records", records=1)


def _strict_document(data: bytes) -> Any:
    """The document parsed by the stdlib when it is valid, strict JSON without duplicate keys, else None."""
    try:
        value, dups = _slow_parse(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return None if dups or _strict_value_problem(value, dups) is not None else value


def _looks_like_json_lines(data: bytes) -> bool:
    lines = [ln.strip() for ln in data.split(b"\n", 3)[:3]]
    lines = [ln for ln in lines if ln]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(orjson.loads(ln), dict) for ln in lines[:2])
    except orjson.JSONDecodeError:
        return False


def read_json(path: str, recover: bool) -> Iterator[RawRecord | ParseProblem]:
    return parse_json_document(path, None, recover)


def parse_json_document(path: str, data: bytes | None, recover: bool) -> Iterator[RawRecord | ParseProblem]:
    """One JSON document (an array of records, ``{"data": [...]}``, or one record) from its bytes (read
    from ``path`` when ``data`` is None)."""
    if data is None:
        with _open(path) as fh:
            data = fh.read()
    _check_encoding(data[:4], path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        return
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        strict = _strict_document(data)
        if strict is not None:  # valid JSON orjson cannot hold (integers beyond 64 bits)
            for i, rec in enumerate(_records_from_json_value(strict)):
                yield RawRecord(rec, i, None, json.dumps(rec, ensure_ascii=False))
            return
        if _looks_like_json_lines(data):
            yield ParseProblem(None, None, None, "the file holds JSON Lines (one record a line), not one JSON "
                               "document: read line by line", code="defect")
            yield from _parse_lines(data.split(b"\n"))
            return
        text = data.decode("utf-8", "surrogateescape")
        line, col = _line_col(text, e.pos)
        if not recover:
            msg = e.msg
            if "UTF-8" in msg:
                msg = "invalid UTF-8 (" + msg + ")"
            raise InputDataError(f"malformed JSON: {msg} (use --on-error skip to recover the valid "
                                 f"records and report the rest)", file=path, line=line, column=col) from None
        yield from _recover_json_array(text)
        return
    records = _records_from_json_value(value)
    dumps = orjson.dumps
    originals = [dumps(rec) for rec in records]
    # Duplicate keys: orjson keeps the last value silently. The document holds more '":' than the records
    # written back (and the wrapper's own keys) only when some key was repeated (or for '\":' in strings,
    # which the slow path then clears).
    raw_c = _key_colons(data)
    if raw_c > len(records) and raw_c > sum(len(r) for r in records if type(r) is _D):
        back = b"\n".join(originals).count(b'":')
        if type(value) is _D and not (len(records) == 1 and records[0] is value):
            back += dumps({k: v for k, v in value.items() if v is not records}).count(b'":')
        if raw_c > back:
            yield from _records_checking_dups(data, value)
            return
    for i, (rec, original) in enumerate(zip(records, originals)):
        yield RawRecord(rec, i, None, original.decode())


def _records_checking_dups(data: bytes, value: Any) -> Iterator[RawRecord | ParseProblem]:
    """Some object may hold a key twice (orjson kept the last value): parse again with the stdlib to find
    which records, reject those where the values differ, note those where they are the same."""
    try:
        slow, dups = _slow_parse(data.decode("utf-8"))
    except (ValueError, RecursionError):
        slow, dups = value, []
    flagged = {obj_id for _, same, obj_id in dups if not same}
    dumps = orjson.dumps
    for i, rec in enumerate(_records_from_json_value(slow)):
        if flagged and _holds(rec, flagged):
            keys = [k for k, same, obj_id in dups if not same and _holds(rec, {obj_id})]
            yield ParseProblem(i, None, None, f"record {i}: duplicate key '{safe_text(keys[0])}' with different "
                               f"values (JSON parsers keep only the last one, so which is meant is ambiguous)",
                               code="duplicate_key", raw=safe_text(dumps(rec).decode()[:500]))
            continue
        yield RawRecord(rec, i, None, dumps(rec).decode())
    note = _dup_defect([(k, same) for k, same, _ in dups if same])
    if note:
        yield ParseProblem(None, None, None, note, code="defect")


def _holds(o: Any, ids: set[int]) -> bool:
    if id(o) in ids:
        return True
    if type(o) is _D:
        return any(_holds(v, ids) for v in o.values() if type(v) is _D or type(v) is _L)
    if type(o) is _L:
        return any(_holds(v, ids) for v in o if type(v) is _D or type(v) is _L)
    return False


_RESYNC = re.compile(r"\}\s*,\s*(?=\{)")


def _recover_json_array(text: str) -> Iterator[RawRecord | ParseProblem]:
    """Element-by-element parse of a broken JSON array; reports each defect with line and column.
    Elements are checked as strictly as the fast path: invalid UTF-8, lone surrogates, NaN/Infinity,
    nesting deeper than MAX_DEPTH and duplicate keys are rejected per element with their reason."""
    dups: list[tuple[str, bool, int]] = []
    dec = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_pairs_hook(dups))
    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()
    if not text.startswith("[", pos):
        line, col = _line_col(text, pos)
        yield ParseProblem(None, line, col, "malformed JSON that is not an array: cannot recover records",
                           raw=safe_text(text[pos:pos + 500]))
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
        dups.clear()
        bad: tuple[str, str] | None = None
        try:
            rec, end = dec.raw_decode(text, pos)
        except (json.JSONDecodeError, _NonFinite, RecursionError) as e:
            m = _RESYNC.search(text, getattr(e, "pos", None) or pos)
            raw = text[pos:(m.start() + 1) if m else min(n, pos + 500)]
            start_line, start_col = _line_col(text, pos)
            if isinstance(e, json.JSONDecodeError):
                line, col = _line_col(text, e.pos)
                code, reason = "parse_error", f"invalid JSON in array element {idx}: {e.msg} at line {line} column {col}"
            elif isinstance(e, _NonFinite):
                code, reason = "non_finite_number", f"array element {idx}: non-finite number {e} is not valid JSON"
            else:
                code, reason = "too_deep", f"array element {idx} is nested deeper than {MAX_DEPTH} levels"
            yield ParseProblem(idx, start_line, start_col, reason, code=code, raw=safe_text(raw[:500]))
            idx += 1
            if not m:
                return
            pos = m.end()
            continue
        bad = _strict_value_problem(rec, dups)
        start_line = _line_col(text, pos)[0]
        if bad is not None:
            yield ParseProblem(idx, start_line, _line_col(text, pos)[1], f"array element {idx}: {bad[1]}",
                               code=bad[0], raw=safe_text(text[pos:min(end, pos + 500)]))
        else:
            note = _dup_defect(dups)
            if note:
                yield ParseProblem(idx, start_line, None, f"array element {idx}: {note}", code="defect")
            yield RawRecord(rec, idx, start_line, json.dumps(rec, ensure_ascii=False))
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


def _numbered_text_lines(path: str) -> Iterator[tuple[int, str, bool]]:
    """(1-based line number, text with its newline, whether the line held invalid UTF-8)."""
    for i, raw in enumerate(_lines(path)):
        try:
            text = raw.decode("utf-8")
            bad = False
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "surrogateescape")
            bad = True
        if i == 0 and text.startswith("\ufeff"):
            text = text[1:]
        yield i + 1, text + "\n", bad


def _unterminated(text: str, delim: str) -> bool:
    try:
        for _ in csv.reader(io.StringIO(text), delimiter=delim, strict=True):
            pass
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


def read_csv(path: str, header: bool | None) -> Iterator[RawRecord | ParseProblem]:
    low = path.lower().removesuffix(".gz")
    delim = "\t" if low.endswith(".tsv") else ","
    csv.field_size_limit(1 << 30)
    names: list[str] | None = None
    row_idx = 0
    source: Iterator[tuple[int, str, bool]] | None = _numbered_text_lines(path)
    while source is not None:
        buf: list[tuple[int, str, bool]] = []

        def feed(src: Iterator[tuple[int, str, bool]] = source,
                 buf: list[tuple[int, str, bool]] = buf) -> Iterator[str]:
            for item in src:
                buf.append(item)
                yield item[1]

        source = None
        reader = csv.reader(feed(), delimiter=delim)
        for fields in reader:
            row_lines = buf[:]
            del buf[:]
            start_line = row_lines[0][0] if row_lines else None
            if sum(t.count('"') for _, t, _ in row_lines) % 2 and _unterminated(
                    "".join(t for _, t, _ in row_lines), delim):
                yield ParseProblem(row_idx, start_line, None,
                                   f"unterminated quote: the quoted field opened on line {start_line} never "
                                   f"closes (the lines after it are read again as rows)",
                                   code="unterminated_quote", raw=safe_text(row_lines[0][1][:500]))
                row_idx += 1
                source = iter(row_lines[1:])
                break
            if any(bad for _, _, bad in row_lines):
                yield ParseProblem(row_idx, start_line, None, "invalid UTF-8 byte(s) in the row",
                                   code="invalid_utf8", raw=safe_text(delim.join(fields)[:500]))
                row_idx += 1
                continue
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

def _iter_arrow_rows(batches: Iterable[Any]) -> Iterator[RawRecord]:
    i = 0
    for batch in batches:
        for rec in batch.to_pylist():
            yield RawRecord(rec, i, None, _dumps(rec))
            i += 1


def read_parquet(path: str) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(_arrow_source(path))
    except Exception as e:  # noqa: BLE001  pyarrow raises ArrowInvalid/OSError with a useful message
        raise FileProblem(f"cannot read Parquet: {e}", code="unreadable", file=path) from None
    yield from _iter_arrow_rows(pf.iter_batches(batch_size=8192))


def _arrow_source(path: str) -> Any:
    if not _fs.is_remote(path):
        return path
    f, p = _fs.resolve(path)
    return f.open_input_file(p)


def read_arrow(path: str) -> Iterator[RawRecord]:
    """Arrow IPC files as written by HF ``datasets.save_to_disk`` (stream format) or the file format."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(_arrow_source(path))
    except (pa.ArrowInvalid, OSError):
        try:
            freader = pa.ipc.open_file(_arrow_source(path))
        except (pa.ArrowInvalid, OSError) as e:
            raise FileProblem(f"cannot read Arrow IPC: {e}", code="unreadable", file=path) from None
        yield from _iter_arrow_rows(freader.get_batch(i) for i in range(freader.num_record_batches))
        return
    yield from _iter_arrow_rows(reader)
