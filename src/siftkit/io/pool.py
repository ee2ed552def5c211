"""Read many input files into one canonical pool (an Arrow table), with rejects and counts.

Canonical record (one row of ``Pool.table``):

- ``id`` (string, 16 hex chars): ``xxh3_64(conversation || file || row)`` where ``conversation`` is the
  normalised conversation (the canonical roles and contents after format adaptation, NUL-separated),
  ``file`` the path relative to the input root and ``row`` the record's 0-based position in the file
  (physical line for JSON Lines). Stable across runs and machines; unique even for duplicated text.
  (Exact dedup uses a separate, further normalised text hash: the ``exact_hash`` signal.)
- ``source`` (string): dataset name (input folder or file stem, or user-given).
- ``file``, ``row``, ``line``: provenance.
- ``messages``: list of ``{role, content, tool_calls, tool_call_id, name}``; roles are
  system/user/assistant/tool. ``tool_calls`` (assistant turns; else null) is a list of ``{id, name, arguments}``
  with ``arguments`` a JSON string; ``tool_call_id`` / ``name`` (tool turns; else null) say which call a tool
  result answers. For preference and KTO records ``messages`` is prompt + chosen answer (+ completion).
- ``original`` (string): the untouched original record as JSON text.
- ``tools`` (string, null when none): the record's tool definitions as JSON text.
- ``kind`` (string): ``sft``, ``preference`` or ``kto``.
- ``label`` (bool, null unless KTO): true = desirable, false = undesirable.
- ``rejected`` (list of messages, null unless preference): the rejected continuation of the prompt.
- ``prompt_turns`` (int32, null for SFT): how many leading ``messages`` form the prompt; the rest is the
  chosen answer (preference) or the completion the label judges (KTO).

Ids of plain records hash roles and contents only. A record with tool calls or tool-result ids folds them
into the key (after each such turn's content), and a preference / KTO record folds its kind, label and
rejected answer in; see docs/formats.md.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import xxhash

from .. import progress
from ..errors import ConfigError, EmptyResultError, InputDataError
from . import formats as F
from . import readers as R

TOOL_CALL_TYPE = pa.struct([("id", pa.string()), ("name", pa.string()), ("arguments", pa.string())])
MESSAGE_STRUCT = pa.struct([("role", pa.string()), ("content", pa.string()),
                            ("tool_calls", pa.list_(TOOL_CALL_TYPE)), ("tool_call_id", pa.string()),
                            ("name", pa.string())])
MESSAGE_TYPE = pa.list_(MESSAGE_STRUCT)
POOL_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("file", pa.string()),
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("messages", MESSAGE_TYPE),
    ("original", pa.string()),
    ("tools", pa.string()),
    ("kind", pa.string()),
    ("label", pa.bool_()),
    ("rejected", MESSAGE_TYPE),
    ("prompt_turns", pa.int32()),
])


def canonical_table(columns: Mapping[str, Any]) -> pa.Table:
    """A ``POOL_SCHEMA`` table from the given columns; missing ones get their defaults (``kind`` 'sft', the
    rest null) and ``messages`` given as plain ``{role, content}`` structs are widened."""
    n = len(next(iter(columns.values())))
    cols = []
    for f in POOL_SCHEMA:
        if f.name in columns:
            v = columns[f.name]
            if isinstance(v, (pa.Array, pa.ChunkedArray)):
                cols.append(v if v.type == f.type else v.cast(f.type))
            else:
                cols.append(pa.array(v, f.type))
        elif f.name == "kind":
            cols.append(pa.array(["sft"] * n, pa.string()))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(cols, schema=POOL_SCHEMA)


ON_ERROR = ("raise", "skip")
JSONL_CHUNK_BYTES = 48 << 20


@dataclass
class InputSpec:
    """One input: a file, a directory (read recursively), a glob, or ``hf:NAME`` (HF hub dataset)."""

    path: str
    source: str | None = None
    format: str | None = None
    mapping: dict[str, Any] | None = None
    header: bool | None = None
    split: str | None = None  # for HF datasets
    data: Any = None          # in-memory records (siftkit.io.memory); ``path`` is then their label

    @classmethod
    def coerce(cls, value: InputSpec | str | os.PathLike | Mapping[str, Any]) -> InputSpec:
        if isinstance(value, InputSpec):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"path", "source", "format", "mapping", "header", "split"}
            if unknown:
                raise ConfigError(f"unknown input keys {sorted(unknown)}; allowed: path, source, format, "
                                  f"mapping, header, split")
            if "path" not in value:
                raise ConfigError("an input needs a 'path'")
            return cls(**value)
        return cls(str(value))


@dataclass
class FileTask:
    path: str
    rel: str
    source: str
    format: str | None
    mapping: dict[str, Any] | None
    header: bool | None
    recover: bool
    byte_range: tuple[int, int, int] | None = None
    records: Any = None       # in-memory input: a callable yielding RawRecords (siftkit.io.memory)


@dataclass
class FileInfo:
    path: str
    rel: str
    source: str
    format: str
    size: int
    sha256: str
    records: int = 0
    rejected: int = 0
    defects: int = 0


@dataclass
class Pool:
    """The canonical pool. ``table`` follows ``POOL_SCHEMA``; row order is deterministic."""

    table: pa.Table
    rejects: list[dict[str, Any]] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    read_seconds: float = 0.0

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def ids(self) -> list[str]:
        return self.table.column("id").to_pylist()

    def counts(self) -> dict[str, Any]:
        by_source: dict[str, dict[str, int]] = {}
        for src, n in Counter(self.table.column("source").to_pylist()).items():
            by_source.setdefault(src, {"read": 0, "rejected": 0})["read"] = n
        rej_reasons: Counter[str] = Counter()
        for r in self.rejects:
            if r["code"] == "defect":
                continue
            rej_reasons[r["code"]] += 1
            by_source.setdefault(r["source"], {"read": 0, "rejected": 0})["rejected"] += 1
        return {
            "files": len(self.files),
            "records": len(self),
            "rejected": sum(rej_reasons.values()),
            "rejected_by_reason": dict(sorted(rej_reasons.items())),
            "defects": sum(1 for r in self.rejects if r["code"] == "defect"),
            "by_source": dict(sorted(by_source.items())),
        }

    def records(self, indices: Iterable[int] | None = None) -> list[dict[str, Any]]:
        t = self.table if indices is None else self.table.take(pa.array(list(indices), pa.int64()))
        return t.to_pylist()


# ---------------------------------------------------------------- input resolution

def _strip_ext(name: str) -> str:
    low = name.lower()
    for ext in sorted(R.KNOWN_EXT, key=len, reverse=True):
        if low.endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def _default_source(rel: str) -> str:
    """'alpaca_en/part-1.json' -> 'alpaca_en'; 'gsm8k_train.jsonl' -> 'gsm8k_train'."""
    parts = rel.replace(os.sep, "/").split("/")
    return parts[0] if len(parts) > 1 else _strip_ext(parts[0])


def _is_hf_saved_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "state.json")) or os.path.isfile(
        os.path.join(path, "dataset_dict.json"))


def _hf_saved_files(path: str) -> list[str]:
    import json

    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        with open(os.path.join(path, "dataset_dict.json")) as fh:
            splits = json.load(fh).get("splits", [])
        out = []
        for s in splits:
            out.extend(_hf_saved_files(os.path.join(path, s)))
        return out
    with open(os.path.join(path, "state.json")) as fh:
        state = json.load(fh)
    return [os.path.join(path, f["filename"]) for f in state.get("_data_files", [])]


def resolve_inputs(inputs: Sequence[InputSpec], recover: bool) -> tuple[list[FileTask], list[str]]:
    """Expand inputs into file tasks in a deterministic order; returns (tasks, skipped_files)."""
    tasks: list[FileTask] = []
    skipped: list[str] = []
    for spec in inputs:
        if spec.format is not None and spec.format not in F.FORMATS:
            raise ConfigError(f"unknown format {spec.format!r} for input {spec.path}; "
                              f"known: {', '.join(F.FORMATS)}")
        if spec.mapping is not None:
            F.make_mapping_adapter(spec.mapping)  # validate early
        if spec.data is not None:
            tasks.append(memory_task(spec, recover))
            continue
        path = os.path.expanduser(spec.path)
        if path.startswith("hf:"):
            tasks.append(FileTask(path, path[3:], spec.source or path[3:].split("/")[-1], spec.format,
                                  spec.mapping, spec.header, recover))
            continue
        files: list[tuple[str, str]] = []  # (path, rel)
        if any(ch in path for ch in "*?["):
            root = path
            while any(ch in root for ch in "*?["):
                root = os.path.dirname(root)
            matches = sorted(p for p in _glob.glob(path, recursive=True) if os.path.isfile(p))
            if not matches:
                raise InputDataError(f"no files match the pattern {spec.path!r}")
            files = [(p, os.path.relpath(p, root or ".")) for p in matches]
        elif os.path.isdir(path):
            if _is_hf_saved_dir(path):
                base = os.path.basename(os.path.normpath(path))
                files = [(p, os.path.join(base, os.path.relpath(p, path))) for p in _hf_saved_files(path)]
            else:
                for dirpath, dirnames, filenames in os.walk(path):
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                    if _is_hf_saved_dir(dirpath) and dirpath != path:
                        base = os.path.relpath(dirpath, path)
                        files.extend((p, os.path.join(base, os.path.relpath(p, dirpath)))
                                     for p in _hf_saved_files(dirpath))
                        dirnames[:] = []
                        continue
                    for fn in sorted(filenames):
                        full = os.path.join(dirpath, fn)
                        if fn.startswith("."):
                            continue
                        if R.file_kind(fn) is None:
                            skipped.append(full)
                            continue
                        files.append((full, os.path.relpath(full, path)))
                files.sort(key=lambda x: x[1])
            if not files:
                raise InputDataError(f"directory {spec.path!r} holds no readable data files "
                                     f"(looked for {', '.join(R.KNOWN_EXT)})")
        elif os.path.isfile(path):
            if R.file_kind(path) is None:
                raise InputDataError(f"unknown file type for {spec.path!r}: expected one of "
                                     f"{', '.join(R.KNOWN_EXT)}")
            files = [(path, os.path.basename(path))]
        else:
            raise InputDataError(f"input not found: {spec.path!r} (no such file or directory)")
        flat_dir = os.path.isdir(path) and all("/" not in r.replace(os.sep, "/") for _, r in files)
        dir_name = os.path.basename(os.path.normpath(path))
        for p, rel in files:
            rel = rel.replace(os.sep, "/")
            # Source: user-given; else a flat folder's name; else the first folder under the root, or the
            # file stem for files at the root.
            src = spec.source or (dir_name if flat_dir else _default_source(rel))
            kind = R.file_kind(p)
            if kind == "jsonl" and not p.lower().endswith((".gz", ".zst")):
                for rng in R.jsonl_ranges(p, JSONL_CHUNK_BYTES):
                    tasks.append(FileTask(p, rel, src, spec.format, spec.mapping, spec.header, recover, rng))
            else:
                tasks.append(FileTask(p, rel, src, spec.format, spec.mapping, spec.header, recover))
    _disambiguate_rels(tasks)
    return tasks, skipped


def _disambiguate_rels(tasks: list[FileTask]) -> None:
    """Different files with the same relative name (``a/c00.jsonl`` and ``b/c00.jsonl`` given one by one)
    get paths relative to their common folder instead, so provenance and ids stay distinct."""
    by_rel: dict[str, set[str]] = {}
    for t in tasks:
        by_rel.setdefault(t.rel, set()).add(os.path.abspath(t.path))
    for rel, paths in by_rel.items():
        if len(paths) < 2:
            continue
        root = os.path.commonpath(sorted(paths))
        for t in tasks:
            if t.rel == rel:
                t.rel = os.path.relpath(os.path.abspath(t.path), root).replace(os.sep, "/")


# ---------------------------------------------------------------- per-file work

def _raw_iter(task: FileTask) -> Iterable[R.RawRecord | R.ParseProblem]:
    if task.records is not None:
        return task.records()
    if task.path.startswith("hf:"):
        return _read_hf_hub(task)
    kind = R.file_kind(task.path)
    if kind == "jsonl":
        if task.byte_range is not None:
            s, e, line = task.byte_range
            return R.read_jsonl(task.path, s, e, line)
        return R.read_jsonl(task.path)
    if kind == "json":
        return R.read_json(task.path, task.recover)
    if kind == "csv":
        return R.read_csv(task.path, task.header)
    if kind == "parquet":
        return R.read_parquet(task.path)
    if kind == "arrow":
        return R.read_arrow(task.path)
    raise InputDataError(f"unknown file type for {task.path!r}")


def _read_hf_hub(task: FileTask) -> Iterable[R.RawRecord]:
    try:
        import datasets
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("datasets", "hf", "reading hub datasets") from None
    name = task.path[3:]
    split = None
    if ":" in name:
        name, split = name.split(":", 1)
    ds = datasets.load_dataset(name, split=split or "train")
    return R._iter_arrow_rows(ds.data.to_batches())


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def process_task(task: FileTask) -> dict[str, Any]:
    """Read and normalise one file (or byte range). Runs in worker processes."""
    adapter = F.make_mapping_adapter(task.mapping) if task.mapping else (
        F.ADAPTERS[task.format] if task.format else None)
    fmt = "mapping" if task.mapping else task.format
    ids: list[str] = []
    rows: list[int] = []
    lines: list[int | None] = []
    roles: list[str] = []
    contents: list[str] = []
    offsets: list[int] = [0]
    originals: list[str] = []
    rejects: list[dict[str, Any]] = []
    # Sparse extras: tool-call turns (flat turn index -> (calls, tool_call_id, name)) and record-level
    # fields of tool / preference / KTO records (record index -> Adapted). Plain files never fill them.
    rich_turns: dict[int, tuple] = {}
    extras: dict[int, F.Adapted] = {}
    hid = xxhash.xxh3_64_hexdigest
    tail = "\x00" + task.rel + "\x00"
    validate = F.validate_turns
    is_table = R.file_kind(task.path) == "csv"
    seen = 0
    for item in _raw_iter(task):
        seen += 1
        if seen == READ_TICK:                      # progress within a file (see _read_tick)
            _read_tick(seen)
            seen = 0
        if isinstance(item, R.ParseProblem):
            rec = {"file": task.rel, "source": task.source, "row": item.row, "line": item.line,
                   "column": item.column, "field": None, "code": item.code, "reason": item.reason,
                   "raw": item.raw}
            if not task.recover and item.code != "defect":
                raise InputDataError(item.reason + " (use --on-error skip to report bad records and go on)",
                                     file=task.path, line=item.line, column=item.column)
            rejects.append(rec)
            continue
        if adapter is None:
            # A CSV row without a header is a list of columns, not an alternating conversation.
            fmt = None if (is_table and isinstance(item.obj, list)) else F.detect_format(item.obj)
            if fmt is None:
                keys = sorted(item.obj)[:12] if isinstance(item.obj, dict) else type(item.obj).__name__
                hint = (" This looks like a header-less table: give a column mapping, e.g. "
                        "--map user=0 --map assistant=2" if isinstance(item.obj, list) else
                        " Give --format or a mapping (--map user=FIELD --map assistant=FIELD).")
                raise InputDataError(f"unknown record format (fields: {keys}).{hint}", file=task.path,
                                     line=item.line, record=item.row)
            adapter = F.ADAPTERS[fmt]
        try:
            turns = adapter(item.obj)
        except F.RecordError as e:
            if not task.recover:
                raise InputDataError(f"{e.reason} (format '{fmt}'; use --on-error skip to report bad records "
                                     f"and go on)", file=task.path, line=item.line,
                                     record=item.row, field=e.field) from None
            rejects.append({"file": task.rel, "source": task.source, "row": item.row, "line": item.line,
                            "column": None, "field": e.field, "code": e.code, "reason": e.reason,
                            "raw": item.original[:500]})
            continue
        extra = None
        if type(turns) is not list:
            extra = turns
            turns = extra.turns
            bad = validate(turns, extra.rejected, extra.prompt_turns)
        else:
            bad = validate(turns)
        if bad is not None:
            # An unusable conversation is never an error but always reported: rejected with its reason.
            rejects.append({"file": task.rel, "source": task.source, "row": item.row, "line": item.line,
                            "column": None, "field": None, "code": bad[0], "reason": bad[1],
                            "raw": item.original[:500]})
            continue
        if extra is None and max(map(len, turns)) == 2:  # plain turns: the id key is unchanged
            key = "\x00".join([r + "\x00" + c for r, c in turns]) + tail + str(item.row)
            for r, c in turns:
                roles.append(r)
                contents.append(c)
        else:
            key = _rich_key(turns, extra) + tail + str(item.row)
            if extra is not None and (extra.kind != "sft" or extra.tools is not None):
                extras[len(ids)] = extra
            for t in turns:
                if len(t) > 2:
                    rich_turns[len(roles)] = t[2:]
                roles.append(t[0])
                contents.append(t[1])
        ids.append(hid(key.encode("utf-8", "surrogatepass")))
        rows.append(item.row)
        lines.append(item.line)
        offsets.append(len(roles))
        originals.append(item.original)
    _read_tick(seen)
    n = len(ids)
    messages = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                        _message_struct(roles, contents, rich_turns))
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "source": pa.array([task.source] * n, pa.string()),
        "file": pa.array([task.rel] * n, pa.string()),
        "row": pa.array(rows, pa.int64()),
        "line": pa.array(lines, pa.int64()),
        "messages": messages,
        "original": pa.array(originals, pa.string()),
        **_record_extras(n, extras),
    }, schema=POOL_SCHEMA)
    first_chunk = task.byte_range is None or task.byte_range[0] == 0
    info = None
    if first_chunk and task.records is None and not task.path.startswith("hf:"):
        info = FileInfo(task.path, task.rel, task.source, fmt or "unknown", os.path.getsize(task.path),
                        _file_sha256(task.path))
    return {"table": table, "rejects": rejects, "info": info, "rel": task.rel, "format": fmt}


def _turn_key(t: tuple) -> str:
    if len(t) == 2:
        return t[0] + "\x00" + t[1]
    return t[0] + "\x00" + t[1] + "\x01" + orjson.dumps(list(t[2:])).decode()


def _rich_key(turns: F.Turns, extra: F.Adapted | None) -> str:
    """Id key of a record with tool calls or record-level fields: turns as for plain records, with each
    tool turn's calls / tool_call_id / name after its content; preference / KTO fold kind, label, prompt
    length and the rejected answer in."""
    key = "\x00".join([_turn_key(t) for t in turns])
    if extra is not None and extra.kind != "sft":
        key += ("\x02" + extra.kind + "\x00" + str(extra.label) + "\x00" + str(extra.prompt_turns) + "\x00"
                + "\x00".join([_turn_key(t) for t in extra.rejected or ()]))
    return key


def _message_struct(roles: list[str], contents: list[str], rich: Mapping[int, tuple]) -> pa.StructArray:
    n = len(roles)
    if not rich:
        calls = pa.nulls(n, MESSAGE_STRUCT.field("tool_calls").type)
        tcid = names = pa.nulls(n, pa.string())
    else:
        c_list: list[Any] = [None] * n
        t_list: list[Any] = [None] * n
        n_list: list[Any] = [None] * n
        for j, (c, t, nm) in rich.items():
            c_list[j], t_list[j], n_list[j] = c, t, nm
        calls = pa.array(c_list, MESSAGE_STRUCT.field("tool_calls").type)
        tcid, names = pa.array(t_list, pa.string()), pa.array(n_list, pa.string())
    return pa.StructArray.from_arrays([pa.array(roles, pa.string()), pa.array(contents, pa.string()),
                                       calls, tcid, names], fields=list(MESSAGE_STRUCT))


def message_dicts(turns: F.Turns) -> list[dict[str, Any]]:
    """Turns as ``MESSAGE_STRUCT`` dicts."""
    return [{"role": t[0], "content": t[1], "tool_calls": t[2] if len(t) > 2 else None,
             "tool_call_id": t[3] if len(t) > 2 else None, "name": t[4] if len(t) > 2 else None} for t in turns]


def _record_extras(n: int, extras: Mapping[int, F.Adapted]) -> dict[str, pa.Array]:
    if not extras:
        return {"tools": pa.nulls(n, pa.string()), "kind": pa.array(["sft"] * n, pa.string()),
                "label": pa.nulls(n, pa.bool_()), "rejected": pa.nulls(n, MESSAGE_TYPE),
                "prompt_turns": pa.nulls(n, pa.int32())}
    tools: list[Any] = [None] * n
    kind = ["sft"] * n
    label: list[Any] = [None] * n
    rejected: list[Any] = [None] * n
    pturns: list[Any] = [None] * n
    for i, a in extras.items():
        tools[i], kind[i], label[i], pturns[i] = a.tools, a.kind, a.label, a.prompt_turns
        if a.rejected is not None:
            rejected[i] = message_dicts(a.rejected)
    return {"tools": pa.array(tools, pa.string()), "kind": pa.array(kind, pa.string()),
            "label": pa.array(label, pa.bool_()), "rejected": pa.array(rejected, MESSAGE_TYPE),
            "prompt_turns": pa.array(pturns, pa.int32())}


# ---------------------------------------------------------------- driver

READ_TICK = 4096          # records between progress ticks while reading
_READ_COUNTER: Any = None  # in a reader process: a counter shared with the parent
_READ_CALLBACK: Any = None  # in this process: the read stage's update


def _read_tick(n: int) -> None:
    if not n:
        return
    if _READ_COUNTER is not None:
        with _READ_COUNTER.get_lock():
            _READ_COUNTER.value += n
    elif _READ_CALLBACK is not None:
        _READ_CALLBACK(n)


def _init_reader(counter: Any) -> None:
    global _READ_COUNTER
    _READ_COUNTER = counter


def read_pool(inputs: Sequence[InputSpec | str] | InputSpec | str, *, on_error: str = "raise",
              workers: int | None = None) -> Pool:
    """Read inputs into a canonical ``Pool``. ``on_error='skip'`` reports bad records as rejects."""
    import time

    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if isinstance(inputs, (str, os.PathLike, InputSpec, Mapping)):
        inputs = [inputs]
    specs = [InputSpec.coerce(x) for x in inputs]
    if not specs:
        raise ConfigError("no inputs given")
    t0 = time.perf_counter()
    tasks, skipped = resolve_inputs(specs, recover=on_error == "skip")
    for s in skipped:
        progress.warn(f"skipping {s}: not a data file type siftkit reads")
    total_bytes = sum((t.byte_range[1] - t.byte_range[0]) if t.byte_range else
                      (os.path.getsize(t.path) if os.path.isfile(t.path) else 0) for t in tasks)
    if workers is None:
        workers = min(os.cpu_count() or 1, len(tasks)) if total_bytes > (16 << 20) else 1
    results: list[dict[str, Any]] = []
    global _READ_CALLBACK
    progress.debug(f"read: {len(tasks)} task(s) from {len({t.path for t in tasks})} file(s), "
                   f"{total_bytes / 1e6:,.1f} MB, {workers} worker(s)")
    with progress.stage("read", unit="items") as b:     # items: records + rejects, as the files yield them
        done_bytes = done_items = 0

        def finished(task: FileTask, res: dict[str, Any]) -> None:
            # estimate the total from the bytes read so far, so the bar has an ETA
            nonlocal done_bytes, done_items
            done_bytes += _task_size(task)
            done_items += res["table"].num_rows + sum(1 for r in res["rejects"] if r["code"] != "defect")
            if 0 < done_bytes < total_bytes:
                b.set_total(max(b.n, int(done_items * total_bytes / done_bytes)))

        if workers > 1 and len(tasks) > 1:
            from concurrent.futures import FIRST_COMPLETED, wait

            from ..workers import mp_context, process_pool

            pa.array(["warm"], pa.string())  # pyarrow's lazy imports happen once here, not in every child
            # Largest tasks first for balance; results are re-ordered to input order afterwards.
            order = sorted(range(len(tasks)), key=lambda i: -_task_size(tasks[i]))
            spill = tempfile.mkdtemp(prefix="siftkit-read-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
            counter = mp_context().Value("q", 0)
            reported = 0

            def poll() -> None:
                nonlocal reported
                now = counter.value
                if now > reported:
                    b.update(now - reported)
                    reported = now

            try:
                with process_pool(workers, initializer=_init_reader, initargs=(counter,)) as ex:
                    futs = {i: ex.submit(_process_task_spilled, tasks[i], os.path.join(spill, f"{i}.arrow"))
                            for i in order}
                    out = {}
                    for i in order:
                        while not futs[i].done():
                            wait([futs[i]], timeout=0.5, return_when=FIRST_COMPLETED)
                            poll()
                        out[i] = _load_spilled(futs[i].result())
                        poll()
                        finished(tasks[i], out[i])
            finally:
                shutil.rmtree(spill, ignore_errors=True)  # mapped tables stay valid after unlinking
            results = [out[i] for i in range(len(tasks))]
        else:
            _READ_CALLBACK = b.update
            try:
                for t in tasks:
                    results.append(process_task(t))
                    finished(t, results[-1])
            finally:
                _READ_CALLBACK = None
        n_rej = sum(1 for r in results for rej in r["rejects"] if rej["code"] != "defect")
        b.set_total(b.n)
        b.set(records=sum(r["table"].num_rows for r in results), rejected=n_rej,
              files=len({t.path for t in tasks}), bytes=int(total_bytes))
    tables = [r["table"] for r in results]
    table = pa.concat_tables(tables) if tables else POOL_SCHEMA.empty_table()
    rejects = [rej for r in results for rej in r["rejects"]]
    infos: dict[str, FileInfo] = {}
    for r in results:
        if r["info"] is not None:
            infos[r["rel"]] = r["info"]
        fi = infos.get(r["rel"])
        if fi is not None:
            fi.records += r["table"].num_rows
            if fi.format == "unknown" and r["format"]:
                fi.format = r["format"]
    for rej in rejects:
        fi = infos.get(rej["file"])
        if fi is not None:
            if rej["code"] == "defect":
                fi.defects += 1
            else:
                fi.rejected += 1
    pool = Pool(table, rejects, list(infos.values()), skipped, time.perf_counter() - t0)
    _check_unique_ids(pool)
    if len(pool) == 0:
        raise EmptyResultError(f"the pool is empty: {len(rejects)} record(s) rejected, none usable"
                               + (f" (first: {rejects[0]['file']}: {rejects[0]['reason']})" if rejects else ""))
    return pool


def _process_task_spilled(task: FileTask, path: str) -> dict[str, Any]:
    """process_task in a worker; the table goes back as an Arrow IPC file (in /dev/shm where available)
    that the parent memory-maps, instead of being pickled through the result pipe."""
    res = process_task(task)
    table = res.pop("table")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    res["table_path"] = path
    return res


def _load_spilled(res: dict[str, Any]) -> dict[str, Any]:
    res["table"] = pa.ipc.open_file(pa.memory_map(res.pop("table_path"))).read_all()
    return res


def _task_size(t: FileTask) -> int:
    if t.byte_range:
        return t.byte_range[1] - t.byte_range[0]
    return os.path.getsize(t.path) if os.path.isfile(t.path) else 0


def _check_unique_ids(pool: Pool) -> None:
    import pyarrow.compute as pc

    ids = pool.table.column("id")
    if pc.count_distinct(ids).as_py() != len(ids):
        vc = pc.value_counts(ids)
        dup = [v["values"] for v in vc.to_pylist() if v["counts"] > 1][:3]
        raise InputDataError(f"duplicate record ids {dup}: the same file was given twice?")


# In-memory inputs (siftkit.io.memory holds the readers; the specs and tasks are built here, where their
# classes are, so that memory never imports pool).
def memory_spec(obj: Any, *, source: str | None = None, format: str | None = None,
                mapping: dict[str, Any] | None = None, split: str | None = None) -> Any:
    """An ``InputSpec`` for one in-memory input (``path`` is its provenance label, ``data`` the object).
    A ``DatasetDict`` needs ``split`` (unless it has one split only)."""
    from .memory import _dataset_name, kind

    k = kind(obj)
    if k is None:
        raise ConfigError(f"not an in-memory input: {type(obj).__name__}")
    if k == "lazy":
        raise ConfigError("a polars LazyFrame is not data yet: pass lazy_frame.collect()")
    if k == "dataset_dict":
        names = list(obj.keys())
        if split is None:
            if len(names) != 1:
                raise ConfigError(f"a DatasetDict needs split= (one of {', '.join(map(repr, names))})")
            split = names[0]
        if split not in obj:
            raise ConfigError(f"split {split!r} not in the DatasetDict; splits: {', '.join(map(repr, names))}")
        ds = obj[split]
        name = _dataset_name(ds)
        label = f"<dataset:{name or source or 'dataset'}:{split}>"
        return InputSpec(label, source or name or "memory", format, mapping, None, split, data=ds)
    if split is not None:
        raise ConfigError(f"split= applies to a DatasetDict, not to a {type(obj).__name__}")
    if k in ("dataset", "iterable_dataset"):
        name = _dataset_name(obj)
        label = f"<dataset:{name}>" if name else (f"<dataset:{source}>" if source else "<dataset>")
        return InputSpec(label, source or name or "memory", format, mapping, None, None, data=obj)
    label = f"<memory:{source}>" if source else "<memory>"
    return InputSpec(label, source or "memory", format, mapping, None, None, data=obj)


def memory_task(spec: Any, recover: bool) -> Any:
    """The read task of an in-memory ``InputSpec`` (see ``memory_spec``)."""
    from .memory import MemoryRecords

    return FileTask(spec.path, spec.path, spec.source or "memory", spec.format, spec.mapping, None, recover,
                    records=MemoryRecords(spec.data))
