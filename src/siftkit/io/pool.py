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

import dataclasses
import errno
import fnmatch
import functools
import glob as _glob
import os
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from .. import fs as _fs
from .. import progress
from ..errors import ConfigError, EmptyResultError, InputDataError, SiftkitError
from ..fsutil import file_digest
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


PER_FILE_KEYS = ("format", "mapping", "source", "header")


@dataclass
class InputSpec:
    """One input: a file, a directory (read recursively), a glob, or ``hf:NAME`` (HF hub dataset).

    ``per_file`` overrides options for some of the input's files: a list of ``{"match": PATTERN, "format"?,
    "mapping"?, "source"?, "header"?}``. PATTERN (fnmatch; ``*`` also crosses ``/``) is matched against the
    file's path relative to the input (``flan_cot/aqua_train.tsv``), its name alone when PATTERN has no
    ``/``, or its path as given (``../data/pool/flan_cot/aqua_train.tsv``). Every matching entry applies, in
    order; ``format`` and ``mapping`` replace each other. A pattern that matches no file is a config error.
    """

    path: str
    source: str | None = None
    format: str | None = None
    mapping: dict[str, Any] | None = None
    header: bool | None = None
    split: str | None = None  # for HF datasets
    data: Any = None          # in-memory records (siftkit.io.memory); ``path`` is then their label
    per_file: list[dict[str, Any]] | None = None

    @classmethod
    def coerce(cls, value: InputSpec | str | os.PathLike | Mapping[str, Any]) -> InputSpec:
        if isinstance(value, InputSpec):
            return value
        if isinstance(value, Mapping):
            allowed = tuple(f.name for f in dataclasses.fields(cls) if f.name != "data")
            unknown = set(value) - set(allowed)
            if unknown:
                raise ConfigError(f"unknown input keys {sorted(unknown)}; allowed: {', '.join(allowed)}")
            if "path" not in value:
                raise ConfigError("an input needs a 'path'")
            spec = cls(**value)
            _validate_spec(spec)
            return spec
        return cls(str(value))


def _validate_spec(spec: InputSpec) -> None:
    where = f"input {spec.path}"
    if spec.format is not None and spec.format not in F.FORMATS:
        raise ConfigError(f"unknown format {spec.format!r} for {where}; known: {', '.join(F.FORMATS)}")
    if spec.mapping is not None:
        if not isinstance(spec.mapping, Mapping):
            raise ConfigError(f"{where}: 'mapping' must be a mapping of role -> field, got {spec.mapping!r}")
        F.make_mapping_adapter(spec.mapping)  # validate early
    if spec.header is not None and not isinstance(spec.header, bool):
        raise ConfigError(f"{where}: 'header' must be true or false, got {spec.header!r}")
    if spec.per_file is None:
        return
    if not isinstance(spec.per_file, list):
        raise ConfigError(f"{where}: 'per_file' must be a list of {{match: PATTERN, format|mapping|source|"
                          f"header: ...}}")
    for i, o in enumerate(spec.per_file):
        w = f"{where}: per_file[{i}]"
        if not isinstance(o, Mapping):
            raise ConfigError(f"{w} must be a mapping with 'match' and options, got {o!r}")
        unknown = set(o) - {"match", *PER_FILE_KEYS}
        if unknown:
            raise ConfigError(f"{w}: unknown keys {sorted(unknown)}; allowed: match, {', '.join(PER_FILE_KEYS)}")
        if not isinstance(o.get("match"), str) or not o["match"].strip():
            raise ConfigError(f"{w} needs 'match': a path pattern relative to the input, e.g. 'flan_cot/*.tsv'")
        if not set(o) & set(PER_FILE_KEYS):
            raise ConfigError(f"{w} sets nothing: give one of {', '.join(PER_FILE_KEYS)}")
        if o.get("format") is not None and o["format"] not in F.FORMATS:
            raise ConfigError(f"unknown format {o['format']!r} in {w}; known: {', '.join(F.FORMATS)}")
        if o.get("mapping") is not None:
            if not isinstance(o["mapping"], Mapping):
                raise ConfigError(f"{w}: 'mapping' must be a mapping of role -> field")
            F.make_mapping_adapter(o["mapping"])
        if o.get("header") is not None and not isinstance(o["header"], bool):
            raise ConfigError(f"{w}: 'header' must be true or false, got {o['header']!r}")
        if o.get("source") is not None and not isinstance(o["source"], str):
            raise ConfigError(f"{w}: 'source' must be a string")


def _matches(pattern: str, rel: str, full: str) -> bool:
    pat = pattern.strip().removeprefix("./")
    if fnmatch.fnmatchcase(rel, pat):
        return True
    if "/" not in pat and fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pat):
        return True
    return fnmatch.fnmatchcase(os.path.normpath(full), os.path.normpath(os.path.expanduser(pattern.strip())))


def _file_options(spec: InputSpec, rel: str, full: str, matched: set[str]) -> dict[str, Any]:
    """The options for one file: the input's own, then every matching ``per_file`` entry in order."""
    opts: dict[str, Any] = {"format": spec.format, "mapping": spec.mapping, "source": spec.source,
                            "header": spec.header}
    for o in spec.per_file or ():
        if not _matches(o["match"], rel, full):
            continue
        matched.add(o["match"])
        if "format" in o:
            opts["format"] = o["format"]
            if "mapping" not in o:
                opts["mapping"] = None
        if "mapping" in o:
            opts["mapping"] = o["mapping"]
            if "format" not in o:
                opts["format"] = None
        for k in ("source", "header"):
            if k in o:
                opts[k] = o[k]
    return opts


@dataclass
class FileTask:
    path: str
    rel: str
    source: str
    format: str | None
    mapping: dict[str, Any] | None
    header: bool | None
    recover: bool
    byte_range: tuple[int, int, int | None] | None = None   # JSONL: (start, end, first line)
    records: Any = None       # in-memory input: a callable yielding RawRecords (siftkit.io.memory)
    problem: tuple[str, str, int | None] | None = None  # (code, reason, records): rejected before reading


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
    skipped_files: list[dict[str, str]] = field(default_factory=list)  # {path, reason}: not data, not read
    read_seconds: float = 0.0
    # When the table was read by workers into Arrow files (``--engine ray``): those files in table order,
    # as (path, rows); the table is memory-mapped from them, so workers can read any rows themselves.
    spill: list[tuple[str, int]] | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def ids(self) -> list[str]:
        return self.table.column("id").to_pylist()

    @property
    def rejected_files(self) -> list[dict[str, Any]]:
        """Files rejected whole or from some point on (unreadable, unknown format, truncated, ...): the
        entries of ``rejects`` with ``scope == "file"``; ``records`` is how many records each held when
        countable (else None) and ``kept`` how many were read before the problem."""
        return [r for r in self.rejects if r.get("scope") == "file"]

    def counts(self) -> dict[str, Any]:
        by_source: dict[str, dict[str, int]] = {}
        for vc in pc.value_counts(self.table.column("source")).to_pylist():   # not a Python str per record
            by_source.setdefault(vc["values"], {"read": 0, "rejected": 0})["read"] = vc["counts"]
        rej_reasons: Counter[str] = Counter()
        for r in self.rejects:
            if r["code"] == "defect":
                continue
            n = (r.get("records") or 0) if r.get("scope") == "file" else 1
            rej_reasons[r["code"]] += n
            by_source.setdefault(r["source"], {"read": 0, "rejected": 0})["rejected"] += n
        return {
            "files": len(self.files),
            "records": len(self),
            "rejected": sum(rej_reasons.values()),
            "rejected_by_reason": dict(sorted(rej_reasons.items())),
            "rejected_files": len(self.rejected_files),
            "skipped_files": len(self.skipped_files),
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


HF_MARKERS = ("state.json", "dataset_dict.json")   # a ``datasets.save_to_disk`` folder holds one of them


def _is_hf_saved_dir(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, m)) for m in HF_MARKERS)


def _hf_saved_files(path: str, root: str | None = None, listed: set[str] | None = None) -> list[str]:
    """The Arrow files of a ``datasets.save_to_disk`` folder, validated: its JSON must parse and list
    files, and every split folder and data file must lie inside the folder (links out are not followed).
    ``path`` may be a URL (``s3://bucket/hf``): its JSON files are read through siftkit.fs and ``listed``
    (the URLs of the files under it, from one listing) says which files exist without a request each."""
    import json
    import posixpath

    remote = _fs.is_remote(path)
    root = root or (path.rstrip("/") if remote else os.path.realpath(path))
    join = _fs.join if remote else os.path.join

    def shown(p: str) -> str:
        return R.safe_text(_fs.display(p))

    def inside(rel: str) -> bool:
        if os.path.isabs(rel) or posixpath.isabs(rel):
            return False
        if remote:   # no links on an object store: the name itself must stay under the folder
            n = posixpath.normpath(rel)
            return n != ".." and not n.startswith("../")
        rp = os.path.realpath(os.path.join(path, rel))
        return rp == root or rp.startswith(root.rstrip(os.sep) + os.sep)

    def isfile(p: str) -> bool:
        return p in listed if listed is not None else _fs.isfile(p)

    def load(name: str) -> Any:
        f = join(path, name)
        try:
            return json.loads(_fs.read_bytes(f))
        except (OSError, ValueError, RecursionError) as e:
            raise InputDataError(f"HF save_to_disk folder: cannot read {name}: {e}", file=shown(f)) from None

    if isfile(join(path, "dataset_dict.json")):
        d = load("dataset_dict.json")
        splits = d.get("splits") if isinstance(d, dict) else None
        where = shown(join(path, "dataset_dict.json"))
        if not isinstance(splits, list) or not splits or not all(isinstance(x, str) and x for x in splits):
            raise InputDataError("HF save_to_disk folder: dataset_dict.json needs 'splits': a list of folder "
                                 "names", file=where)
        out = []
        for x in splits:
            sub = join(path, x)
            if not inside(x):
                raise InputDataError(f"HF save_to_disk folder: split {x!r} points outside the folder (not "
                                     f"followed)", file=where)
            if not isfile(join(sub, "state.json")):
                raise InputDataError(f"HF save_to_disk folder: split folder {x!r} has no state.json",
                                     file=shown(sub))
            out.extend(_hf_saved_files(sub, root, listed))
        return out
    state = load("state.json")
    files = state.get("_data_files") if isinstance(state, dict) else None
    where = shown(join(path, "state.json"))
    if not isinstance(files, list) or not files:
        raise InputDataError("HF save_to_disk folder: state.json lists no '_data_files'", file=where)
    out = []
    for i, f in enumerate(files):
        fn = f.get("filename") if isinstance(f, dict) else None
        if not isinstance(fn, str) or not fn:
            raise InputDataError(f"HF save_to_disk folder: _data_files[{i}] has no 'filename'", file=where)
        full = join(path, fn)
        if not inside(fn):
            raise InputDataError(f"HF save_to_disk folder: _data_files[{i}] {fn!r} points outside the folder "
                                 f"(not followed)", file=where)
        if not isfile(full):
            raise InputDataError(f"HF save_to_disk folder: _data_files[{i}] {fn!r} does not exist", file=where)
        out.append(full)
    return out


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"))


class _Scan:
    """Walk one input: data files, files rejected before reading (with code and reason) and skipped
    entries (with reason). Symlinks are followed; a folder reached twice (a loop, or two links to one
    folder) and a file reached twice are read once. Raises at the first problem unless ``recover``."""

    def __init__(self, recover: bool, skipped: list[dict[str, str]]):
        self.recover, self.skipped = recover, skipped
        self.files: list[tuple[str, str]] = []
        self.problems: list[tuple[str, str, str, str, int | None]] = []
        self.dirs: dict[tuple[int, int], str] = {}
        self.seen: dict[tuple[int, int], str] = {}

    def problem(self, path: str, rel: str, code: str, reason: str) -> None:
        if not self.recover:
            raise InputDataError(reason + " (use --on-error skip to report it and go on)", file=R.safe_text(path))
        self.problems.append((path, rel, code, reason, None))

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append({"path": R.safe_text(path), "reason": reason})

    def entry(self, full: str, rel: str) -> None:
        try:
            st = os.stat(full)
        except OSError as e:
            if os.path.islink(full):
                if e.errno == errno.ELOOP:
                    return self.problem(full, rel, "symlink_loop", "symlink loop: the link never resolves")
                try:
                    target = os.readlink(full)
                except OSError:
                    target = "?"
                return self.problem(full, rel, "dangling_symlink",
                                    f"dangling symlink to {R.safe_text(target)} (the target does not exist)")
            return self.problem(full, rel, "unreadable", f"cannot open: {e.strerror}")
        if stat.S_ISDIR(st.st_mode):
            return self.folder(full, rel, st)
        if not stat.S_ISREG(st.st_mode):
            what = next((w for test, w in _NOT_REGULAR if test(st.st_mode)), "not a regular file")
            if R.file_kind(full) is None:
                return self.skip(full, f"{what}, not a data file")
            return self.problem(full, rel, "not_regular_file", f"{what}, not a regular file: cannot be read")
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            return self.skip(full, f"the same file as {R.safe_text(self.seen[key])} (a link to it): read once")
        self.seen[key] = rel
        if R.file_kind(full) is None:
            ext = os.path.splitext(full)[1]
            return self.skip(full, f"not a data file type siftkit reads ({ext or 'no extension'})")
        self.files.append((full, rel))

    def folder(self, full: str, rel: str, st: os.stat_result | None = None) -> None:
        try:
            st = st or os.stat(full)
        except OSError as e:
            return self.problem(full, rel or ".", "unreadable_folder", f"cannot open folder: {e.strerror}")
        key = (st.st_dev, st.st_ino)
        if key in self.dirs:
            return self.skip(full, f"folder already read as {R.safe_text(self.dirs[key]) or '.'} (a symlink "
                                   f"loop or a second link to it): read once")
        self.dirs[key] = rel
        if _is_hf_saved_dir(full):
            return self.hf(full, rel or os.path.basename(os.path.normpath(full)))
        try:
            names = sorted(os.listdir(full))
        except OSError as e:
            return self.problem(full, rel or ".", "unreadable_folder", f"cannot list folder: {e.strerror}")
        for name in names:
            child = os.path.join(full, name)
            crel = f"{rel}/{name}" if rel else name
            if name.startswith("."):
                self.skip(child, "hidden (name starts with '.'): not read"
                          + (" (a folder)" if os.path.isdir(child) else ""))
                continue
            self.entry(child, crel)

    def hf(self, full: str, rel: str, listed: set[str] | None = None) -> None:
        """A ``save_to_disk`` folder, local or a URL (``listed``: the objects of the input's one listing)."""
        try:
            paths = _hf_saved_files(full, listed=listed)
        except InputDataError as e:
            if not self.recover:
                raise
            self.problems.append((full, rel, "bad_hf_folder", e.reason, None))
            return
        for p in paths:
            sub = p[len(full) + 1:] if _fs.is_remote(full) else os.path.relpath(p, full).replace(os.sep, "/")
            self.files.append((p, f"{rel}/{sub}"))


def resolve_inputs(inputs: Sequence[InputSpec], recover: bool, count_lines: bool = True
                   ) -> tuple[list[FileTask], list[dict[str, str]]]:
    """Expand inputs into file tasks in a deterministic order; returns (tasks, skipped_files).

    Files that cannot be read at all (dangling symlinks, symlink loops, FIFOs named like data, unreadable
    folders, broken HF folders, unknown file types given by name) raise ``InputDataError``, or with
    ``recover`` become tasks with a ``problem`` (rejected whole, counted). ``skipped_files`` lists what is
    not data and not read, each with its reason (hidden names, other file types, links read once).
    ``count_lines=False``: a JSON Lines file cut into byte ranges is not read here to number its lines (the
    ranges after the first have no first line yet: ``number_lines`` gives them one)."""
    tasks: list[FileTask] = []
    skipped: list[dict[str, str]] = []
    patterns = {o["match"] for spec in inputs for o in (spec.per_file or ()) if isinstance(o, Mapping)}
    matched: set[str] = set()
    for spec in inputs:
        _validate_spec(spec)
        if spec.data is not None:
            tasks.append(memory_task(spec, recover))
            continue
        path = os.path.expanduser(spec.path)
        if path.startswith("hf:"):
            name = path[3:]
            if not name.split(":", 1)[0].strip():
                raise InputDataError(f"{spec.path!r}: hf: needs a dataset name, e.g. hf:tatsu-lab/alpaca or "
                                     f"hf:NAME:split")
            o = _file_options(spec, name, path, matched)
            tasks.append(FileTask(path, name, o["source"] or name.split(":")[0].split("/")[-1], o["format"],
                                  o["mapping"], o["header"], recover))
            continue
        path = _fs.local_path(path)
        scan = _Scan(recover, skipped)
        n_skipped_before = len(skipped)
        is_dir = False
        if _fs.is_remote(path):
            is_dir = _scan_remote(spec, path, scan)
        elif any(ch in path for ch in "*?["):
            root = path
            while any(ch in root for ch in "*?["):
                root = os.path.dirname(root)
            matches = sorted(_glob.glob(path, recursive=True))
            if not matches:
                raise InputDataError(f"no files match the pattern {spec.path!r}")
            for m in matches:
                scan.entry(m, os.path.relpath(m, root or ".").replace(os.sep, "/"))
        else:
            try:
                st = os.stat(path)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise InputDataError(f"input {spec.path!r} is a symlink loop") from None
                if os.path.islink(path):
                    raise InputDataError(f"input not found: {spec.path!r} is a dangling symlink to "
                                         f"{R.safe_text(os.readlink(path))}") from None
                if isinstance(e, FileNotFoundError):
                    raise InputDataError(f"input not found: {spec.path!r} (no such file or directory)") from None
                raise InputDataError(f"cannot open input {spec.path!r}: {e.strerror}") from None
            base = os.path.basename(os.path.normpath(path))
            if stat.S_ISDIR(st.st_mode):
                is_dir = True
                if _is_hf_saved_dir(path):
                    scan.hf(path, base)
                else:
                    scan.folder(path, "", st)
                if not scan.files and not scan.problems:
                    n_skip = len(skipped) - n_skipped_before
                    raise InputDataError(f"directory {spec.path!r} holds no readable data files "
                                         f"(looked for {', '.join(R.KNOWN_EXT)}"
                                         + (f"; skipped {n_skip}: hidden names or other file types"
                                            if n_skip else "") + ")")
            elif stat.S_ISREG(st.st_mode) and R.file_kind(path) is None:
                if not recover:
                    raise InputDataError(f"unknown file type for {spec.path!r}: expected one of "
                                         f"{', '.join(R.KNOWN_EXT)}")
                reason = f"unknown file type: expected one of {', '.join(R.KNOWN_EXT)}"
                scan.problems.append((path, base, "unknown_file_type", reason, None))
            else:
                scan.entry(path, base)
        flat_dir = is_dir and all("/" not in r for _, r in scan.files)
        dir_name = _fs.basename(path) if _fs.is_remote(path) else os.path.basename(os.path.normpath(path))
        entries = [(p, rel, None) for p, rel in scan.files] + [(q[0], q[1], q[2:]) for q in scan.problems]
        entries.sort(key=lambda x: x[1])
        for p, rel, problem in entries:
            o = _file_options(spec, rel, p, matched)
            rel = R.safe_text(rel.replace(os.sep, "/"))
            # Source: user-given; else a flat folder's name; else the first folder under the root, or the
            # file stem for files at the root.
            src = o["source"] or (dir_name if flat_dir else _default_source(rel))
            args = (p, rel, src, o["format"], o["mapping"], o["header"], recover)
            if problem is not None:
                tasks.append(FileTask(*args, problem=problem))
                continue
            kind = R.file_kind(p)
            if kind == "jsonl" and not p.lower().endswith((".gz", ".zst")):
                try:
                    ranges = R.jsonl_ranges(p, JSONL_CHUNK_BYTES, count_lines=count_lines)
                except OSError as e:
                    if _fs.is_remote(p):
                        raise _fs.fs_error(p, e, "cannot read input", InputDataError) from None
                    if not recover:
                        raise InputDataError(f"cannot open: {e.strerror}", file=R.safe_text(p)) from None
                    tasks.append(FileTask(*args, problem=("unreadable", f"cannot open: {e.strerror}", None)))
                    continue
                for rng in ranges:
                    tasks.append(FileTask(*args, byte_range=rng))
            else:
                tasks.append(FileTask(*args))
    unmatched = sorted(patterns - matched)
    if unmatched:
        raise ConfigError(f"per-file pattern {unmatched[0]!r} matches no input file (patterns match a file's "
                          f"path relative to its input, e.g. 'flan_cot/*.tsv', or its name, e.g. '*.tsv')")
    _disambiguate_rels(tasks)
    return tasks, skipped


def _scan_remote(spec: InputSpec, path: str, scan: _Scan) -> bool:
    """List a remote input (a file, a folder = prefix, or a glob) into ``scan``; True for a folder.
    Hidden names (a part starting with '.') and other file types are skipped, as for local folders."""
    import pyarrow.fs as pafs

    def err(e: BaseException) -> SiftkitError:
        return _fs.fs_error(path, e, "cannot read input", InputDataError)

    if any(ch in path for ch in "*?["):
        root = path
        while any(ch in root for ch in "*?["):
            root = _fs.dirname(root)
        try:
            matches = _fs.glob(path)
        except OSError as e:
            raise err(e) from None
        if not matches:
            raise InputDataError(f"no files match the pattern {_fs.display(spec.path)!r}")
        for m in matches:
            _remote_entry(scan, m, m[len(root):].lstrip("/"))
        return False
    try:
        info = _fs._info(path)
    except OSError as e:
        raise err(e) from None
    if info.type == pafs.FileType.File:
        if R.file_kind(path) is None:
            if not scan.recover:
                raise InputDataError(f"unknown file type for {_fs.display(spec.path)!r}: expected one of "
                                     f"{', '.join(R.KNOWN_EXT)}")
            scan.problems.append((path, _fs.basename(path), "unknown_file_type",
                                  f"unknown file type: expected one of {', '.join(R.KNOWN_EXT)}", None))
        else:
            scan.files.append((path, _fs.basename(path)))
            _REMOTE_SIZE[path] = int(info.size or 0)
        return False
    try:
        files = _fs.walk_files(path) if info.type == pafs.FileType.Directory else []
    except OSError as e:
        raise err(e) from None
    if info.type == pafs.FileType.NotFound or not files:
        try:
            no_bucket = _fs.bucket_missing(path)
        except OSError as e:
            raise err(e) from None
        raise InputDataError(f"input not found: {_fs.display(spec.path)!r} ("
                             + ("the bucket does not exist" if no_bucket else "no such object or folder") + ")")
    n_skipped_before = len(scan.skipped)
    base = path.rstrip("/")
    for url, _rel, nbytes in files:
        _REMOTE_SIZE[url] = nbytes
    # Hugging Face save_to_disk folders (the outermost folder holding state.json or dataset_dict.json):
    # their Arrow files as the JSON lists them, nothing else under them (as for local folders).
    hf_dirs: list[str] = []
    for d in sorted({rel.rpartition("/")[0] for _u, rel, _n in files if rel.rsplit("/", 1)[-1] in HF_MARKERS}):
        if not any(h == "" or d.startswith(h + "/") for h in hf_dirs) \
                and not any(part.startswith(".") for part in d.split("/") if part):
            hf_dirs.append(d)
    listed = {u for u, _r, _n in files}
    for d in hf_dirs:
        folder = f"{base}/{d}" if d else base
        label = d or _fs.basename(base)
        try:
            scan.hf(folder, label, listed)
        except OSError as e:
            raise err(e) from None
    for url, rel, _nbytes in files:
        if not any(h == "" or rel.startswith(h + "/") for h in hf_dirs):
            _remote_entry(scan, url, rel)
    if not scan.files and not scan.problems:
        n_skip = len(scan.skipped) - n_skipped_before
        raise InputDataError(f"directory {_fs.display(spec.path)!r} holds no readable data files "
                             f"(looked for {', '.join(R.KNOWN_EXT)}"
                             + (f"; skipped {n_skip}: hidden names or other file types" if n_skip else "") + ")")
    return True


_REMOTE_SIZE: dict[str, int] = {}   # sizes seen while listing remote inputs (saves a request per file)


def _remote_entry(scan: _Scan, url: str, rel: str) -> None:
    if any(part.startswith(".") for part in rel.split("/")):
        return scan.skip(url, "hidden (name starts with '.'): not read")
    if R.file_kind(url) is None:
        ext = os.path.splitext(url.rsplit("/", 1)[-1])[1]
        return scan.skip(url, f"not a data file type siftkit reads ({ext or 'no extension'})")
    scan.files.append((url, rel))


def _size(path: str) -> int:
    if _fs.is_remote(path):
        if path not in _REMOTE_SIZE:
            _REMOTE_SIZE[path] = _fs.size(path)
        return _REMOTE_SIZE[path]
    return os.path.getsize(path)


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

def split_tasks(tasks: list[FileTask], chunk_bytes: int, count_lines: bool = True) -> list[FileTask]:
    """The tasks with every JSON Lines byte range larger than ``chunk_bytes`` cut into newline-aligned
    ranges of about that size (``readers.jsonl_ranges``); record ids do not change (they come from the file
    and the physical line, which each range carries, or gets from ``number_lines``)."""
    out: list[FileTask] = []
    for t in tasks:
        r = t.byte_range
        if r is None or r[1] - r[0] <= chunk_bytes:
            out.append(t)
            continue
        out.extend(dataclasses.replace(t, byte_range=sub)
                   for sub in R.jsonl_ranges(t.path, chunk_bytes, r, count_lines=count_lines))
    return out


LineCounter = Any   # (jobs: list of (path, start, end)) -> newline counts, in order (e.g. on Ray workers)


def number_lines(tasks: list[FileTask], count: LineCounter | None = None) -> list[FileTask]:
    """Give every byte range without a first line (``count_lines=False``) its first line: the newlines of
    the ranges before it in its file, counted by ``count`` (default: ``readers.count_newlines`` here)."""
    files = {t.path for t in tasks if t.byte_range is not None and t.byte_range[2] is None}
    if not files:
        return tasks
    by_file: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        if t.path in files:
            by_file.setdefault(t.path, []).append(i)
    jobs: list[tuple[str, int, int]] = []
    for path, idx in by_file.items():
        idx.sort(key=lambda i: tasks[i].byte_range[0])
        jobs += [(path, tasks[i].byte_range[0], tasks[i].byte_range[1]) for i in idx[:-1]]
    counts = count(jobs) if count is not None else [R.count_newlines(*j) for j in jobs]
    out = list(tasks)
    k = 0
    for idx in by_file.values():
        first = tasks[idx[0]].byte_range
        line = first[2] if first[2] is not None else 1
        for j, i in enumerate(idx):
            s, e, _ = tasks[i].byte_range
            out[i] = dataclasses.replace(tasks[i], byte_range=(s, e, line))
            if j < len(idx) - 1:
                line += int(counts[k])
                k += 1
    return out


def _raw_iter(task: FileTask) -> Iterable[R.RawRecord | R.ParseProblem]:
    if task.records is not None:
        return task.records()
    if task.path.startswith("hf:"):
        return _read_hf_hub(task)
    kind = R.file_kind(task.path)
    if kind == "jsonl":
        if task.byte_range is not None:
            s, e, line = task.byte_range
            return R.read_jsonl(task.path, s, e, line, recover=task.recover)
        return R.read_jsonl(task.path, recover=task.recover)
    if kind == "json":
        return R.read_json(task.path, task.recover)
    if kind == "csv":
        return R.read_csv(task.path, task.header)
    if kind == "parquet":
        return R.read_parquet(task.path)
    if kind == "arrow":
        return R.read_arrow(task.path)
    raise R.FileProblem(f"unknown file type for {R.safe_text(task.path)!r}", code="unknown_file_type")


@functools.cache
def _read_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this input cannot be read" (never a traceback: a FileProblem instead)."""
    errs: list[type[BaseException]] = [OSError, EOFError, ValueError, RecursionError, MemoryError,
                                       pa.ArrowException]
    import csv

    errs.append(csv.Error)
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


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
    try:
        ds = datasets.load_dataset(name, split=split or "train")
        batches = ds.data.to_batches()
    except Exception as e:  # noqa: BLE001  network, not found, bad split: all input problems
        raise R.FileProblem(f"cannot load the hub dataset {name!r}: {type(e).__name__}: {e}",
                            code="unreadable") from None
    return R._iter_arrow_rows(batches)


def _file_sha256(path: str) -> str:
    if _fs.is_remote(path):   # hashed while it was read whole, else read again
        return R.REMOTE_SHA256.pop(path, None) or _fs.digest(path, "sha256")
    return file_digest(path, "sha256")


def _checked_items(task: FileTask, problems: list[R.FileProblem]
                   ) -> Iterable[R.RawRecord | R.ParseProblem]:
    """The task's items. A problem with the whole file raises (strict) or, with ``recover``, is appended to
    ``problems`` and ends the items (records read before it stay). A file with no items at all yields one
    ``defect`` (an empty file loses no record)."""
    display = R.safe_text(task.path)
    try:
        if task.problem is not None:
            code, reason, records = task.problem
            raise R.FileProblem(reason, code=code, records=records)
        item = None
        empty = (not task.path.startswith("hf:") and task.byte_range is None
                 and _is_empty_file(task.path))
        if not empty:
            try:
                for item in _raw_iter(task):
                    yield item
            except (R.FileProblem, InputDataError):
                raise
            except RecursionError:
                raise R.FileProblem(f"nested deeper than Python can parse (limit {R.MAX_DEPTH})",
                                    code="too_deep") from None
            except _read_errors() as e:
                raise R.FileProblem(f"cannot read: {type(e).__name__}: {e}", code="unreadable") from None
        if item is None and (task.byte_range is None or task.byte_range[0] == 0):
            yield R.ParseProblem(None, None, None, "empty file: it holds no records", code="defect")
    except R.FileProblem as e:
        if not task.recover:
            raise InputDataError(e.reason + " (use --on-error skip to report it and go on)", file=display,
                                 line=e.line, column=e.column) from None
        problems.append(e)


def _is_empty_file(path: str) -> bool:
    try:
        return _size(path) == 0
    except OSError:
        return False  # reading it will say why


def _sniff_format(task: FileTask, items: Iterable[R.RawRecord | R.ParseProblem], is_table: bool,
                  problems: list[R.FileProblem], limit: int = 1000
                  ) -> tuple[str | None, Iterable[R.RawRecord | R.ParseProblem]]:
    """Skip mode: the format of the first of the first ``limit`` records whose format is known, and the items
    to process (the buffered ones first). When none is known, the file is rejected whole: a ``FileProblem``
    ``unknown_format`` counting every record it holds is appended and no item is returned."""
    it = iter(items)
    buf: list[R.RawRecord | R.ParseProblem] = []
    n_raw = 0
    first: R.RawRecord | None = None
    for item in it:
        buf.append(item)
        if isinstance(item, R.ParseProblem):
            continue
        n_raw += 1
        first = first or item
        fmt = None if (is_table and isinstance(item.obj, list)) else F.detect_format(item.obj)
        if fmt is not None:
            return fmt, _replay(buf, it)
        if n_raw >= limit:
            break
    if first is None:
        return None, _replay(buf, it)
    records = sum(1 for x in buf if isinstance(x, R.RawRecord) or x.code != "defect")
    records += sum(1 for x in it if isinstance(x, R.RawRecord) or x.code != "defect")
    keys = sorted(first.obj)[:12] if isinstance(first.obj, dict) else type(first.obj).__name__
    hint = (" It looks like a header-less table: give a column mapping for it, e.g. "
            f"--map '{_pattern_hint(task)}:user={{0}}' --map '{_pattern_hint(task)}:assistant={{2}}'"
            if isinstance(first.obj, list) and is_table else
            f" Give a format or a mapping for it, e.g. --format '{_pattern_hint(task)}:alpaca' or "
            f"--map '{_pattern_hint(task)}:user=FIELD' --map '{_pattern_hint(task)}:assistant=FIELD'.")
    problems.append(R.FileProblem(f"unknown record format (fields: {keys}).{hint}", code="unknown_format",
                                  records=records))
    return None, ()


def _pattern_hint(task: FileTask) -> str:
    folder, _, name = task.rel.rpartition("/")
    ext = name[len(_strip_ext(name)):]
    return f"{folder}/*{ext}" if folder else f"*{ext}" if ext else name


def _replay(buf: list, it: Iterable) -> Iterable:
    yield from buf
    yield from it


def _file_rejects(task: FileTask, problems: list[R.FileProblem], kept: int) -> list[dict[str, Any]]:
    """Reject entries (``scope: file``) for whole-file problems."""
    out = []
    for e in problems:
        out.append({"file": task.rel, "source": task.source, "row": None, "line": e.line, "column": e.column,
                    "field": None, "code": e.code, "reason": e.reason, "raw": "", "scope": "file",
                    "records": e.records, "kept": kept})
    return out


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
    file_problems: list[R.FileProblem] = []
    items = _checked_items(task, file_problems)
    if adapter is None and task.recover:
        found, items = _sniff_format(task, items, is_table, file_problems)
        if found is not None:
            adapter, fmt = F.ADAPTERS[found], found
    seen = 0
    for item in items:
        if not isinstance(item, R.ParseProblem) or item.code != "defect":   # a defect is a note, not an item
            seen += 1
            if seen == READ_TICK:                  # progress within a file (see _read_tick)
                _read_tick(seen)
                seen = 0
        if isinstance(item, R.ParseProblem):
            rec = {"file": task.rel, "source": task.source, "row": item.row, "line": item.line,
                   "column": item.column, "field": None, "code": item.code, "reason": item.reason,
                   "raw": item.raw}
            if not task.recover and item.code != "defect":
                raise InputDataError(item.reason + " (use --on-error skip to report bad records and go on)",
                                     file=R.safe_text(task.path), line=item.line, column=item.column)
            rejects.append(rec)
            continue
        if adapter is None:
            # A CSV row without a header is a list of columns, not an alternating conversation.
            fmt = None if (is_table and isinstance(item.obj, list)) else F.detect_format(item.obj)
            if fmt is None:
                keys = sorted(item.obj)[:12] if isinstance(item.obj, dict) else type(item.obj).__name__
                pat = _pattern_hint(task)
                hint = (" This looks like a header-less table: give a column mapping, e.g. "
                        f"--map user=0 --map assistant=2 (or for these files only: --map '{pat}:user={{0}}' "
                        f"--map '{pat}:assistant={{2}}'), or --on-error skip to reject the file and go on."
                        if isinstance(item.obj, list) else
                        f" Give --format or a mapping (--map user=FIELD --map assistant=FIELD; for these files "
                        f"only: --format '{pat}:FORMAT'), or --on-error skip to reject the file and go on.")
                raise InputDataError(f"unknown record format (fields: {keys}).{hint}", file=R.safe_text(task.path),
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
    rejects.extend(_file_rejects(task, file_problems, kept=len(ids)))
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
    if first_chunk and task.records is None and not task.path.startswith("hf:") and task.problem is None:
        try:
            info = FileInfo(R.safe_text(task.path), task.rel, task.source, fmt or "unknown",
                            _size(task.path), _file_sha256(task.path))
        except OSError:
            info = None  # could not be opened: its rejection above says why
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


def result_items(res: dict[str, Any]) -> int:
    """The items of a task's result: its records and its rejects (a ``defect`` note is none), as the
    ``read`` stage counts them (``_read_tick`` as they are read)."""
    return res["table"].num_rows + sum(1 for r in res["rejects"] if r["code"] != "defect")


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
              workers: int | None = None, run_tasks: Any = None) -> Pool:
    """Read inputs into a canonical ``Pool``. ``on_error='skip'`` reports bad records as rejects.

    ``run_tasks(tasks, finished, advance)`` (optional) reads the file tasks elsewhere (the Ray engine's
    workers: ``engines.ray.ray_task_reader``): it returns ``{task index: process_task result}``, calls
    ``finished(task, result)`` as each arrives and ``advance(n)`` with the items read (``result_items``:
    as they are read, each task's exact count in full by its ``finished``); a result whose ``pool_file`` names the Arrow file its
    table is memory-mapped from makes ``Pool.spill``. Accounting (rejects, counts, duplicate ids) is the
    same code whichever reads."""
    import time

    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if isinstance(inputs, (str, os.PathLike, InputSpec, Mapping)):
        inputs = [inputs]
    specs = [InputSpec.coerce(x) for x in inputs]
    if not specs:
        raise ConfigError("no inputs given")
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    done: dict[int, dict[str, Any]] = {}
    global _READ_CALLBACK
    try:
        counter = getattr(run_tasks, "count_lines", None)   # a runner that numbers JSONL lines on its workers
        tasks, skipped = resolve_inputs(specs, recover=on_error == "skip", count_lines=counter is None)
        for s in skipped[:20]:
            progress.warn(f"skipping {s['path']}: {s['reason']}")
        if len(skipped) > 20:
            progress.warn(f"skipping {len(skipped) - 20} more files (listed in the manifest's skipped_files)")
        total_bytes = sum(_task_size(t) for t in tasks)
        chunking = getattr(run_tasks, "chunk_bytes", None)   # a runner with many workers wants smaller tasks
        if chunking is not None and tasks:
            tasks = split_tasks(tasks, chunking(total_bytes), count_lines=counter is None)
        if counter is not None:
            tasks = number_lines(tasks, counter)
        if workers is None:
            workers = min(os.cpu_count() or 1, len(tasks)) if total_bytes > (16 << 20) else 1
        if any(_fs.is_remote(t.path) for t in tasks):
            workers = 1   # the S3/GCS clients are not fork-safe: remote files are read in this process
        progress.debug(f"read: {len(tasks)} task(s) from {len({t.path for t in tasks})} file(s), "
                       f"{total_bytes / 1e6:,.1f} MB, {workers} worker(s)")
        with progress.stage("read", unit="items") as b:     # items: records + rejects, as the files yield them
            done_bytes = done_items = 0

            def finished(task: FileTask, res: dict[str, Any]) -> None:
                # estimate the total from the bytes read so far, so the bar has an ETA
                nonlocal done_bytes, done_items
                done_bytes += _task_size(task)
                done_items += result_items(res)
                if 0 < done_bytes < total_bytes:
                    b.set_total(max(b.n, int(done_items * total_bytes / done_bytes)))

            if run_tasks is not None and tasks:
                done.update(run_tasks(tasks, finished, b.update))
            elif workers > 1 and len(tasks) > 1:
                from concurrent.futures import FIRST_COMPLETED, wait

                from ..workers import mp_context, process_pool

                pa.array(["warm"], pa.string())  # pyarrow's lazy imports happen once here, not in every child
                # Largest tasks first for balance; results are re-ordered to input order afterwards.
                order = sorted(range(len(tasks)), key=lambda i: -_task_size(tasks[i]))
                spill = tempfile.mkdtemp(prefix="siftkit-read-",
                                         dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
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
                        for i in order:
                            while not futs[i].done():
                                wait([futs[i]], timeout=0.5, return_when=FIRST_COMPLETED)
                                poll()
                            done[i] = _load_spilled(futs[i].result())
                            poll()
                            finished(tasks[i], done[i])
                finally:
                    shutil.rmtree(spill, ignore_errors=True)  # mapped tables stay valid after unlinking
            else:
                _READ_CALLBACK = b.update
                try:
                    for i, t in enumerate(tasks):
                        done[i] = process_task(t)
                        finished(t, done[i])
                finally:
                    _READ_CALLBACK = None
            n_rej = sum(1 for r in done.values() for rej in r["rejects"] if rej["code"] != "defect")
            b.set_total(b.n)
            b.set(records=sum(r["table"].num_rows for r in done.values()), rejected=n_rej,
                  files=len({t.path for t in tasks}), bytes=int(total_bytes))
    except SiftkitError as e:
        # What reading got before the failure, for ``--rejects`` (the error itself is the last entry).
        e.rejects = [rej for i in sorted(done) for rej in done[i]["rejects"]] + (  # type: ignore[attr-defined]
            [{"file": e.file, "source": None, "row": e.record, "line": e.line, "column": e.column,
              "field": e.field, "code": "error", "reason": e.reason, "raw": "", "scope": "run"}]
            if isinstance(e, InputDataError) else [])
        raise
    results = [done[i] for i in range(len(tasks))]
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
            elif rej.get("scope") == "file":
                fi.rejected += rej.get("records") or 0  # the records a file rejected whole held
            else:
                fi.rejected += 1
    spill = [(r["pool_file"], r["table"].num_rows) for r in results] \
        if results and all("pool_file" in r for r in results) else None
    pool = Pool(table, rejects, list(infos.values()), skipped, time.perf_counter() - t0, spill)
    for r in pool.rejected_files:
        progress.warn(f"rejected {r['file']}" + (f":{r['line']}" if r["line"] else "") + f": {r['reason']}"
                      + (f" ({r['kept']:,} record(s) read before it kept)" if r["kept"] else ""))
    _check_unique_ids(pool)
    if len(pool) == 0:
        c = pool.counts()
        bad = [r for r in rejects if r["code"] != "defect"]
        err = EmptyResultError(f"the pool is empty: {c['rejected']} record(s) rejected"
                               + (f" and {c['rejected_files']} file(s) rejected" if c["rejected_files"] else "")
                               + ", none usable"
                               + (f" (first: {bad[0]['file']}: {bad[0]['reason']})" if bad else
                                  f" (first: {rejects[0]['file']}: {rejects[0]['reason']})" if rejects else ""))
        err.rejects = rejects  # type: ignore[attr-defined]
        raise err
    return pool


def _process_task_spilled(task: FileTask, path: str) -> dict[str, Any]:
    """process_task in a worker; the table goes back as an Arrow IPC file (in /dev/shm where available)
    that the parent memory-maps, instead of being pickled through the result pipe. ``path`` may be a URL
    (the Ray engine's ``<cache>/_pool`` on an object store): then the file is one PUT of the whole object."""
    res = process_task(task)
    res["table_path"] = write_spilled(res.pop("table"), path)
    return res


def write_spilled(table: pa.Table, path: str) -> str:
    """Write ``table`` as an Arrow IPC file at ``path`` (local: temporary file then rename; a URL: one PUT),
    so a reader sees it whole or not at all; returns the path written."""
    if _fs.is_remote(path):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        _fs.write_atomic(path, memoryview(sink.getvalue()))   # one PUT, no copy
        return path
    path = _fs.local_path(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    os.replace(tmp, path)            # whole or absent: a file in a shared cache is never half-written
    return path


def map_spilled(path: str, local_dir: str | None = None) -> pa.Table:
    """A spilled Arrow IPC file, memory-mapped: a local path directly, a URL through its local copy in
    ``local_dir`` (``fs.local_copy``: downloaded once per machine)."""
    return pa.ipc.open_file(pa.memory_map(_fs.local_copy(path, local_dir))).read_all()


def _load_spilled(res: dict[str, Any], local_dir: str | None = None) -> dict[str, Any]:
    res["table"] = map_spilled(res.pop("table_path"), local_dir)
    return res


def _task_size(t: FileTask) -> int:
    if t.byte_range:
        return t.byte_range[1] - t.byte_range[0]
    if _fs.is_remote(t.path):
        try:
            return _size(t.path)
        except OSError:
            return 0
    return os.path.getsize(t.path) if os.path.isfile(t.path) else 0


def take_rows(table: pa.Table, rows: Any) -> pa.Table:
    """``table.take(rows)`` batch by batch: Arrow's take on a many-chunk table (a pool is one chunk per
    file task) first concatenates each whole column, a transient copy of all the pool's text; this takes
    from each batch only its rows (one contiguous result, in the order of ``rows``)."""
    rows = np.asarray(rows, dtype=np.int64)
    batches = table.to_batches()
    if len(batches) <= 1 or not len(rows):
        return table.take(pa.array(rows, pa.int64()))
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    off = np.cumsum([0] + [b.num_rows for b in batches])
    if srt[0] < 0 or srt[-1] >= off[-1]:
        raise IndexError(f"row index out of bounds for a table of {off[-1]} rows")
    bi = np.searchsorted(off, srt, side="right") - 1
    cuts = (np.flatnonzero(np.diff(bi)) + 1).tolist()
    parts = [batches[bi[a]].take(pa.array(srt[a:b] - off[bi[a]], pa.int64()))
             for a, b in zip([0, *cuts], [*cuts, len(srt)])]
    out = pa.Table.from_batches(parts, table.schema).combine_chunks()
    if np.all(order[1:] > order[:-1]):
        return out
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    return out.take(pa.array(inv, pa.int64()))


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
