"""Write a selection to an output folder: records, per-record status, rejects and the manifest.

Files (see docs/outputs.md)::

    selected.jsonl | selected.parquet   the chosen records (pool order, or pick order with
                                        --order pick), original or converted
    README.md                           dataset card: tells ``datasets.load_dataset(OUT)`` to load
                                        selected.* only
    manifest.json                       inputs (paths, sizes, sha256), config, seed, versions, counts,
                                        steps, signal and embedding fingerprints, timings (written last)
    report.html                         (with --report)
    _siftkit/selection.parquet          every pool record: id, source, file, row, status, rank
                                        (rank: pick order of the budgeted step, -1 unselected)
    _siftkit/rejects.jsonl              records that could not be used, with file/line/field/reason
    _siftkit/report.parquet             (pools not re-readable from the manifest's inputs) the columns
                                        ``siftkit report`` needs

A run writes everything into a fresh ``.siftkit-tmp-<name>-<pid>-<hex>`` folder beside the output and then
swaps it into place (``renameat2(RENAME_EXCHANGE)`` on Linux), so the folder is always either the previous
complete output or the new one. Leftovers of killed runs are removed by the next run into the same folder.

Everything but the ``created``, ``timings`` and ``cache`` (records computed vs reused) fields of the manifest
is byte-identical for the same inputs, config and seed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import re
import secrets
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import fs, progress
from ._version import __version__
from .errors import ConfigError, InputDataError
from .fsutil import disk_guard, exchange, fsync_dir, fsync_path, is_no_space, pid_alive, remove_path
from .io.pool import take_rows
from .io.writers import dataset_info_entry, write_jsonl, write_records
from .pipeline import Selection

MANIFEST_VERSION = 1
RECORD_ORDERS = ("pool", "pick")             # output.order / --order: the records file's order
SIDE_DIR = "_siftkit"                       # side files; load_dataset(OUT) reads selected.* only
SELECTION_FILE = f"{SIDE_DIR}/selection.parquet"
REJECTS_FILE = f"{SIDE_DIR}/rejects.jsonl"
REPORT_DATA_FILE = f"{SIDE_DIR}/report.parquet"
LEGACY_SELECTION_FILE = "selection.parquet"   # outputs written before the side folder
# Everything siftkit writes at the top of an output folder (incl. the layout before _siftkit/). A folder
# holding anything else is not replaced without --overwrite.
OUTPUT_NAMES = frozenset({"selected.jsonl", "selected.parquet", "manifest.json", "report.html", "README.md",
                          "dataset_info.json", SIDE_DIR, LEGACY_SELECTION_FILE, "rejects.jsonl"})
_STAGING = re.compile(r"^\.siftkit-(?P<kind>tmp|old)-(?P<name>.+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def versions() -> dict[str, str]:
    out = {"siftkit": __version__, "python": platform.python_version(), "platform": sys.platform}
    for mod in ("numpy", "pyarrow", "tokenizers", "orjson", "xxhash"):
        with contextlib.suppress(Exception):   # a module that fails to import has no version to report
            out[mod] = __import__(mod).__version__
    for mod in ("torch", "transformers", "faiss"):
        if mod in sys.modules:
            out[mod] = getattr(sys.modules[mod], "__version__", "?")
    return out


def build_manifest(sel: Selection, outputs: dict[str, Any], pool_info: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    cfg = sel.config
    return {
        "manifest_version": MANIFEST_VERSION,
        "siftkit_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": cfg.seed,
        "budget": cfg.budget,
        "budget_resolved": sel.budget_resolved,
        "config": cfg.raw,
        "inputs": [{"path": fs.abspath(f.path), "rel": f.rel, "source": f.source, "format": f.format,
                    "size": f.size, "sha256": f.sha256, "records": f.records, "rejected": f.rejected,
                    "defects": f.defects} for f in sel.pool.files],
        "skipped_files": sel.pool.skipped_files,
        "pool": pool_info if pool_info is not None else pool_origin(sel),
        "signals": sel.signal_stats_public(),
        "vectors": vectors_used(sel),
        "counts": sel.counts(),
        "steps": [s.as_dict() for s in sel.steps],
        "outputs": outputs,
        "versions": versions(),
        "timings": sel.timings,
        "cache": sel.cache_hits(),
        **({"usage": sel.usage()} if sel.usage() else {}),
    }


def vectors_used(sel: Selection) -> dict[str, Any]:
    """Every embedding the run read (selectors, diversity metrics): fingerprint -> name, config, dim."""
    used = getattr(sel.vector_loader, "used", None) or {}
    return {fp: {"name": e["name"], "config": e["config"], "dim": e["dim"]} for fp, e in sorted(used.items())}


def pool_origin(sel: Selection) -> dict[str, Any]:
    """How ``siftkit report`` can rebuild this selection's pool: from the config's inputs (re-read and
    checked by sha256), or, for a pool handed over from Python (in memory, a subset, no files), from the
    columns stored in the output (``_siftkit/report.parquet``)."""
    files = sel.pool.files
    given = any(_input_path(x) == "<pool>" for x in (sel.config.inputs or []))
    whole = bool(files) and sum(f.records for f in files) == len(sel.pool)
    info: dict[str, Any] = {"given": given, "files": len(files), "records": len(sel.pool)}
    if given or not whole:
        info["report_from"] = REPORT_DATA_FILE
        why = ("a pool passed from Python" + ("" if files else " without files") if given else
               "inputs without local files (hub datasets)" if not files else
               "a pool holding only some of its files' records")
        info["note"] = f"{why}: the report is rebuilt from the columns stored in the output"
    else:
        info["report_from"] = "inputs"
    return info


def _input_path(x: Any) -> str | None:
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return x.get("path")
    return getattr(x, "path", None)


def diversity_sections(sel: Selection, force: bool = False) -> list[dict[str, Any]]:
    """Report sections with diversity metrics (coverage, cluster entropy, Vendi, 2-D map) of the selection.

    Uses the embeddings a selector already loaded; with ``force`` (``output.diversity: true``) computes the
    default embedding (static, query segment) when none was used. Empty when there is nothing to measure.
    """

    vecs = dict(sel.vectors)
    if not vecs and force and sel.vector_loader is not None:
        vecs = {'{"name":"embedding"}': sel.vector_loader({"name": "embedding"})}
    if not vecs or len(sel.selected) == 0:
        return []
    from .diversity import diversity_report

    spec_key, v = next(iter(vecs.items()))
    d = diversity_report(v, sel.selected, seed=sel.config.seed)
    rows = [
        {"metric": "coverage: mean distance pool -> nearest selected", "value": round(d["coverage"]["mean"], 4)},
        {"metric": "coverage: 95th percentile", "value": round(d["coverage"]["p95"], 4)},
        {"metric": "cluster entropy of the selection (normalised)",
         "value": round(float(d["cluster_entropy"]["normalized"]), 4)},
        {"metric": "cluster entropy of the pool (normalised)",
         "value": round(float(d["pool_cluster_entropy"]["normalized"]), 4)},
        {"metric": "Vendi score, selection (sample)", "value": round(d["vendi"]["selected"], 2)},
        {"metric": "Vendi score, pool (sample)", "value": round(d["vendi"]["pool"], 2)},
    ]
    m = d["map"]
    n_pool, n_sel = len(m["pool"]["x"]), len(m["selected"]["x"])
    # one list of points: a pool sample, then a selection sample; the caption counts records, not points
    return [{"title": "Diversity", "text": f"Embeddings: {spec_key}", "table": rows},
            {"title": "Pool vs selection, 2-D PCA map",
             "scatter": {"x": m["pool"]["x"] + m["selected"]["x"], "y": m["pool"]["y"] + m["selected"]["y"],
                         "selected": [False] * n_pool + [True] * n_sel,
                         "in_pool": [True] * n_pool + [False] * n_sel,
                         "n_pool": len(sel.pool), "n_sel": len(sel.selected), "xlabel": "PC1", "ylabel": "PC2"}}]


def _dataset_info(fmt: str, file_name: str, chosen: pa.Table,
                  unwritable: list[dict[str, Any]]) -> dict[str, Any] | None:
    """LLaMA-Factory's dataset_info entry for the written records, or None when the format has none."""
    kept = chosen
    if unwritable:
        import pyarrow.compute as pc

        kept = chosen.filter(pc.invert(pc.is_in(chosen.column("id"), pa.array([r["id"] for r in unwritable]))))
    try:
        return dataset_info_entry(fmt, file_name, kept)
    except ValueError:
        return None


def _with_length_signals(sel: Selection) -> pa.Table:
    """The selection's signals plus character and token lengths (cached), so every report shows lengths."""
    from .signals.compute import compute_signals

    cfg = sel.config
    want = [("text_stats", "chars_total"), ({"name": "tokens", "tokenizer": cfg.tokenizer}, "tokens_total"),
            ({"name": "special_tokens", "tokenizer": cfg.tokenizer}, "special_tokens")]
    missing = [spec for spec, col in want if col not in sel.signals.column_names]
    if not missing:
        return sel.signals
    more = compute_signals(sel.pool.table, missing, cfg.cache_dir, workers=cfg.workers or 1, engine=cfg.engine,
                           shard_size=cfg.shard_size, ray=cfg.ray, spill=sel.pool.spill)
    if sel.signals.num_columns == 0:
        return more
    table = sel.signals
    for name in more.column_names:
        if name not in table.column_names:
            table = table.append_column(name, more.column(name))
    return table


def write_selection(sel: Selection, out_dir: str, fmt: str = "original", file_format: str = "jsonl",
                    report: bool = False, diversity: bool = False, overwrite: bool = False,
                    escape_special_tokens: bool | None = None, order: str | None = None) -> dict[str, Any]:
    """Write the output folder (see the module docstring): each file into a temporary folder, manifest
    last, then swap it into place. ``overwrite`` replaces a non-empty folder that is not a siftkit output.
    A full disk raises DiskFullError (exit 5) and leaves the previous output as it was.
    ``escape_special_tokens`` (default: the run's ``output.escape_special_tokens``) writes literal special
    tokens in an inert form (``siftkit.signals.special_tokens.escape_special_tokens``), in whichever format
    is written; the pool itself is not changed. ``order`` (default: the run's ``output.order``, else
    ``pool``) is the order of the records file: ``pool`` (input order) or ``pick`` (the order the budgeted
    step picked them, the ``rank`` of ``_siftkit/selection.parquet``, which is written either way)."""
    import time

    t0 = time.perf_counter()
    ext = "jsonl" if file_format == "jsonl" else "parquet"
    protect = [sel.config.cache_dir] + [f.path for f in sel.pool.files]
    pool_info = pool_origin(sel)
    with staged_output(out_dir, overwrite=overwrite, protect=protect) as tmp:
        def at(rel: str) -> str:
            return os.path.join(tmp, rel)

        os.mkdir(at(SIDE_DIR))
        sel_name = f"selected.{ext}"
        if order is None:
            order = str((sel.config.output or {}).get("order", "pool"))
        if order not in RECORD_ORDERS:
            raise ConfigError(f"output order must be one of {RECORD_ORDERS}, got {order!r}")
        picks = np.asarray(getattr(sel, "pick_order", sel.selected), dtype=np.int64)
        rows = picks if order == "pick" else sel.selected
        chosen = take_rows(sel.pool.table, rows)
        if escape_special_tokens is None:
            escape_special_tokens = bool((sel.config.output or {}).get("escape_special_tokens", False))
        with progress.stage("write", total=int(chosen.num_rows)) as st:
            if escape_special_tokens:
                from .signals.special_tokens import escape_special_tokens as _escape

                chosen = _escape(chosen, sel.config.tokenizer)
            unwritable: list[dict[str, Any]] = []  # selected records the output format cannot represent
            with disk_guard(os.path.join(out_dir, sel_name), _records_bytes(chosen, fmt),
                            [at(sel_name + ".tmp")]):
                written = write_records(chosen, at(sel_name), fmt, file_format, rejects=unwritable)
            st.update(int(chosen.num_rows))
        outputs: dict[str, Any] = {"selected": sel_name, "format": fmt, "file_format": file_format,
                                   "records": int(written)}
        if unwritable:
            outputs["unrepresentable"] = len(unwritable)  # selected = records + unrepresentable
        entry = _dataset_info(fmt, sel_name, chosen, unwritable)
        if entry is not None:   # LLaMA-Factory's entry, keyed by the output folder's name
            blob = orjson.dumps({fs.basename(fs.abspath(out_dir)): entry}, option=orjson.OPT_INDENT_2)
            with disk_guard(os.path.join(out_dir, "dataset_info.json"), len(blob), approx=False), \
                    open(at("dataset_info.json"), "wb") as fh:
                fh.write(blob)
            outputs["dataset_info"] = "dataset_info.json"
        if escape_special_tokens:
            outputs["escape_special_tokens"] = True
        if order == "pick":
            outputs["order"] = "pick"
        rank = np.full(len(sel.pool), -1, dtype=np.int64)
        rank[picks] = np.arange(len(picks))     # the pick order of the budgeted step (pool order if none)
        status_tbl = pa.table({
            "id": sel.pool.table.column("id"), "source": sel.pool.table.column("source"),
            "file": sel.pool.table.column("file"), "row": sel.pool.table.column("row"),
            "status": sel.status_array(), "rank": pa.array(rank),
        })
        for col, arr in (getattr(sel, "record_columns", None) or {}).items():   # e.g. decontam_match
            status_tbl = status_tbl.append_column(col, pa.array(arr.tolist() if arr.dtype == object else arr))
        with disk_guard(os.path.join(out_dir, SELECTION_FILE), status_tbl.nbytes):
            pq.write_table(status_tbl, at(SELECTION_FILE), compression="zstd")
        outputs["selection"] = SELECTION_FILE
        if sel.pool.rejects or unwritable:
            with disk_guard(os.path.join(out_dir, REJECTS_FILE), cleanup=[at(REJECTS_FILE + ".tmp")]):
                write_jsonl(sel.pool.rejects + unwritable, at(REJECTS_FILE))
            outputs["rejects"] = REJECTS_FILE
        sel.timings["write"] = round(time.perf_counter() - t0, 3)
        report_signals = None
        if report or pool_info["report_from"] != "inputs":
            report_signals = _with_length_signals(sel)
        if pool_info["report_from"] != "inputs":
            data = report_data(sel.pool.table, report_signals, sel.mask, _report_seed(sel.config.seed))
            with disk_guard(os.path.join(out_dir, REPORT_DATA_FILE), data.nbytes):
                pq.write_table(data, at(REPORT_DATA_FILE), compression="zstd")
            outputs["report_data"] = REPORT_DATA_FILE
        if report:
            from .report import render_report

            t1 = time.perf_counter()
            outputs["report"] = "report.html"
            with progress.stage("report", total=len(sel.pool)) as st:
                extra = diversity_sections(sel, force=diversity)
                if extra:
                    outputs["diversity"] = extra[0]["table"]
                from .selectors.decontaminate import report_sections

                extra = extra + report_sections([s.as_dict() for s in sel.steps])
                manifest = build_manifest(sel, outputs, pool_info)
                with disk_guard(os.path.join(out_dir, "report.html"), cleanup=[at("report.html.tmp")]):
                    render_report(sel.pool.table, report_signals, sel.mask, manifest, at("report.html"),
                                  extra_sections=extra)
                st.update(len(sel.pool))
            sel.timings["report"] = round(time.perf_counter() - t1, 3)
        outputs["readme"] = "README.md"
        card = dataset_card(sel_name, len(sel.selected), len(sel.pool), sel.config.seed)
        with disk_guard(os.path.join(out_dir, "README.md"), len(card), approx=False), \
                open(at("README.md"), "wb") as fh:
            fh.write(card)
        manifest = build_manifest(sel, outputs, pool_info)
        blob = orjson.dumps(manifest, option=orjson.OPT_INDENT_2, default=str)
        with disk_guard(os.path.join(out_dir, "manifest.json"), len(blob), approx=False), \
                open(at("manifest.json"), "wb") as fh:   # last: a folder with a manifest is complete
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
    return manifest


def _records_bytes(chosen: pa.Table, fmt: str) -> int:
    """About how many bytes the records file takes (for the disk-full message)."""
    import pyarrow.compute as pc

    if fmt == "original" and chosen.num_rows:
        return int(pc.sum(pc.binary_length(chosen.column("original"))).as_py() or 0) + chosen.num_rows
    return int(chosen.select([c for c in chosen.column_names if c != "original"]).nbytes)


def dataset_card(selected_name: str, n_selected: int, n_pool: int, seed: int) -> bytes:
    """README.md with a Hugging Face dataset card header naming the records file, so that
    ``datasets.load_dataset(OUT)`` loads exactly the selected records (not the manifest or side files)."""
    return (f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            f"    path: {selected_name}\n---\n\n# siftkit selection\n\n{n_selected:,} of {n_pool:,} records, selected by siftkit "
            f"{__version__} (seed {seed}).\n\n- `{selected_name}`: the selected records\n"
            f"- `manifest.json`: inputs, config, counts, steps, fingerprints\n"
            f"- `{SIDE_DIR}/`: per-record status (`selection.parquet`) and rejects (`rejects.jsonl`)\n\n"
            f"Load with `datasets.load_dataset(\"<this folder>\")`; rebuild the report with "
            f"`siftkit report <this folder>`.\n").encode()


def _report_seed(seed: Any) -> int:
    return seed if isinstance(seed, int) and seed >= 0 else 0


def report_data(pool: pa.Table, signals: pa.Table, selected: np.ndarray, seed: int) -> pa.Table:
    """What ``siftkit report`` needs besides selection.parquet to rebuild the page without the inputs:
    every numeric signal column (pool-aligned) and the messages of the report's sampled records only."""
    from .report.data import numeric_columns, sample_indices

    n = pool.num_rows
    idx = sample_indices(selected, seed=seed)
    pos = np.full(n, -1, dtype=np.int64)
    pos[idx] = np.arange(len(idx))
    sample_msgs = pool.column("messages").take(pa.array(idx, pa.int64())).to_pylist()
    msgs = pa.array([sample_msgs[p] if p >= 0 else None for p in pos.tolist()],
                    pool.schema.field("messages").type)
    cols: dict[str, Any] = {"messages": msgs}
    for c in (numeric_columns(signals) if signals is not None and signals.num_columns else []):
        cols[c] = signals.column(c)
    return pa.table(cols)


# ------------------------------------------------------------------ the output folder

def output_state(out_dir: str) -> tuple[str, list[str]]:
    """("missing" | "empty" | "siftkit" | "foreign" | "file", entries siftkit did not write)."""
    if not os.path.lexists(out_dir):
        return "missing", []
    if not os.path.isdir(out_dir):
        return "file", []
    names = sorted(os.listdir(out_dir))
    if not names:
        return "empty", []
    foreign = [n for n in names if n not in OUTPUT_NAMES and not n.endswith(".tmp")]
    ours = {"manifest.json", SIDE_DIR, LEGACY_SELECTION_FILE} & set(names)
    if foreign or not ours:
        return "foreign", foreign or names
    return "siftkit", []


def _inside(path: str, folder: str) -> bool:
    p, f = os.path.realpath(path), os.path.realpath(folder)
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


def clean_leftovers(out_dir: str) -> None:
    """Remove what killed runs left beside and in ``out_dir``: staging folders of dead processes (an old
    output moved aside by an interrupted swap is put back when ``out_dir`` is missing) and ``*.tmp``."""
    parent, name = os.path.split(os.path.abspath(out_dir))
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return
    for e in entries:
        m = _STAGING.match(e)
        if not m or m.group("name") != name:
            continue
        pid = int(m.group("pid"))
        if pid != os.getpid() and pid_alive(pid):
            continue                      # another run writing the same folder right now
        path = os.path.join(parent, e)
        if m.group("kind") == "old" and not os.path.lexists(out_dir):
            os.rename(path, out_dir)      # killed between the two renames of a swap: restore the old output
            progress.warn(f"restored the previous output {out_dir} from an interrupted swap")
        else:
            remove_path(path)
    if output_state(out_dir)[0] == "siftkit":
        for f in os.listdir(out_dir):
            if f.endswith(".tmp"):
                remove_path(os.path.join(out_dir, f))


@contextlib.contextmanager
def staged_output(out_dir: str, overwrite: bool = False, protect: Sequence[str] = ()) -> Iterator[str]:
    """Yield a fresh temporary folder beside ``out_dir``; on success swap it into place (the previous
    output, if any, is removed after the swap); on any error remove it and leave ``out_dir`` untouched.

    A non-empty ``out_dir`` that is not a siftkit output is refused (ConfigError, exit 2) unless
    ``overwrite``; a folder holding any ``protect`` path (the cache, an input) is always refused.

    ``out_dir`` may be a URL (``s3://bucket/out``): the output is staged in a local temporary folder and then
    uploaded, see :func:`_publish_remote`."""
    if fs.is_remote(out_dir):
        with _staged_remote(out_dir.rstrip("/"), overwrite, protect) as tmp:
            yield tmp
        return
    out_dir = os.path.abspath(fs.local_path(out_dir))
    protect = [fs.local_path(p) for p in protect if p and not fs.is_remote(p)]
    if os.path.islink(out_dir) and os.path.isdir(out_dir):
        out_dir = os.path.realpath(out_dir)
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    clean_leftovers(out_dir)
    state, foreign = output_state(out_dir)
    if state == "file":
        raise ConfigError(f"output folder {out_dir} is a file")
    if state in ("siftkit", "foreign"):
        for p in protect:
            if p and _inside(p, out_dir):
                raise ConfigError(f"output folder {out_dir} holds {p} (the cache or an input), which "
                                  f"replacing the folder would delete: choose another --out")
    if state == "foreign" and not overwrite:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"output folder {out_dir} is not empty and is not a siftkit output (it holds "
                          f"{shown}): choose another --out, empty it, or pass --overwrite to replace it")
    tmp = os.path.join(parent, f".siftkit-tmp-{name}-{os.getpid()}-{secrets.token_hex(4)}")
    with disk_guard(tmp):
        os.mkdir(tmp)
    try:
        yield tmp
        _fsync_tree(tmp)
        _swap(tmp, out_dir)
    except BaseException as e:
        remove_path(tmp)
        if is_no_space(e):
            from .errors import DiskFullError
            from .fsutil import free_bytes

            raise DiskFullError(out_dir, None, free_bytes(parent)) from None
        raise


def remote_output_state(out_dir: str) -> tuple[str, list[str]]:
    """:func:`output_state` for a URL (an object store has no empty folders: "missing" when no object is
    under the prefix)."""
    try:
        names = fs.listdir(out_dir)
    except FileNotFoundError:
        return "missing", []
    except OSError as e:
        if fs.error_kind(e) == "missing" and "bucket" not in str(e).lower():
            return "missing", []
        raise fs.fs_error(out_dir, e, "cannot list the output folder") from None
    if not names:
        return "missing", []
    foreign = [n for n in names if n not in OUTPUT_NAMES and not n.endswith(".tmp")]
    ours = {"manifest.json", SIDE_DIR, LEGACY_SELECTION_FILE} & set(names)
    if foreign or not ours:
        return "foreign", foreign or names
    return "siftkit", []


@contextlib.contextmanager
def _staged_remote(out_dir: str, overwrite: bool, protect: Sequence[str]) -> Iterator[str]:
    state, foreign = remote_output_state(out_dir)
    if state in ("siftkit", "foreign"):
        for p in protect:
            if p and fs.is_remote(p) and (p.rstrip("/") + "/").startswith(out_dir + "/"):
                raise ConfigError(f"output folder {fs.display(out_dir)} holds {fs.display(p)} (the cache or an "
                                  f"input), which replacing the folder would delete: choose another --out")
    if state == "foreign" and not overwrite:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"output folder {fs.display(out_dir)} is not empty and is not a siftkit output (it "
                          f"holds {shown}): choose another --out, empty it, or pass --overwrite to replace it")
    tmp = tempfile.mkdtemp(prefix=".siftkit-stage-")
    try:
        yield tmp
        _publish_remote(tmp, out_dir, state)
    finally:
        remove_path(tmp)


def _publish_remote(tmp: str, out_dir: str, state: str) -> None:
    """Upload a complete staged output to ``out_dir`` on an object store, which has no atomic folder rename:
    the previous manifest.json is deleted first, then every file is PUT (each object appears whole; the
    ``_siftkit/`` side folder first, so even a half-published folder is recognised as a siftkit output and
    replaced by the next run), the previous output's other files that the new one lacks are deleted, and
    manifest.json is PUT last. A reader
    that finds manifest.json sees a complete output; while a run writes, manifest.json is missing (a reader
    must treat the folder as incomplete, as ``siftkit report``/``read`` do)."""
    try:
        old: list[str] = []
        if state != "missing":
            old = [rel for _u, rel, _n in fs.walk_files(out_dir)]
            fs.remove(fs.join(out_dir, "manifest.json"))
        written = fs.upload_tree(tmp, out_dir, last="manifest.json", first=SIDE_DIR + "/")
        for rel in sorted(set(old) - set(written)):
            fs.remove(fs.join(out_dir, rel))
    except OSError as e:
        raise fs.fs_error(out_dir, e, "cannot write the output folder") from None


def _fsync_tree(folder: str) -> None:
    """Flush every file and folder of the staged output to disk before it becomes visible."""
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            fsync_path(os.path.join(dirpath, f))
        fsync_dir(dirpath)


def _swap(tmp: str, out_dir: str) -> None:
    """Put the complete ``tmp`` folder at ``out_dir``; at every instant ``out_dir`` is the old or the new."""
    parent, name = os.path.split(out_dir)
    if not os.path.lexists(out_dir) or (os.path.isdir(out_dir) and not os.listdir(out_dir)):
        os.replace(tmp, out_dir)          # onto nothing, or onto an empty folder
    elif exchange(tmp, out_dir):
        remove_path(tmp)                  # tmp now holds the previous output
    else:                                 # no RENAME_EXCHANGE: two renames (next run repairs a kill between)
        old = os.path.join(parent, f".siftkit-old-{name}-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        remove_path(old)
    fsync_dir(parent)


def selection_path(out_dir: str, manifest: dict[str, Any] | None = None) -> str:
    """The per-record status file of an output folder (side folder, or the top level of older outputs)."""
    rel = ((manifest or {}).get("outputs") or {}).get("selection")
    for cand in ([rel] if rel else []) + [SELECTION_FILE, LEGACY_SELECTION_FILE]:
        p = fs.join(out_dir, cand)
        if fs.isfile(p):
            return p
    raise InputDataError(f"{fs.display(out_dir)} has no {SELECTION_FILE} (nor {LEGACY_SELECTION_FILE}): "
                         f"is it a complete siftkit output folder?")


def report_from_output(out_dir: str, path: str | None = None) -> str:
    """Rebuild report.html from an output folder. Pools read from files: re-read the inputs named in the
    manifest (checking their sha256) and reload signals from the cache. Pools passed from Python: from the
    columns stored in ``_siftkit/report.parquet``. The selection comes from ``_siftkit/selection.parquet``
    (``selection.parquet`` in older outputs)."""
    from .report import render_report

    mpath = fs.join(out_dir, "manifest.json")
    try:
        if not fs.isfile(mpath):
            raise InputDataError(f"{fs.display(out_dir)} has no manifest.json: is it a (complete) siftkit "
                                 f"output folder?")
        manifest = orjson.loads(fs.read_bytes(mpath))
        status = fs.read_table(selection_path(out_dir, manifest))
    except OSError as e:
        raise fs.fs_error(mpath, e, "cannot read", InputDataError) from None
    if fs.is_remote(out_dir) and (path is None or fs.is_remote(path)):
        with tempfile.TemporaryDirectory(prefix=".siftkit-report-") as tmp:
            local = report_from_output(out_dir, os.path.join(tmp, "report.html"))
            dest = path or fs.join(out_dir, "report.html")
            with open(local, "rb") as fh:
                fs.write_atomic(dest, fh.read())
        return dest
    st = np.asarray(status.column("status").to_pylist(), dtype=object)
    mask = st == "selected"
    out = path or os.path.join(out_dir, "report.html")
    origin = manifest.get("pool") or {}
    data_rel = (manifest.get("outputs") or {}).get("report_data")
    if data_rel:
        data = fs.read_table(fs.join(out_dir, data_rel))
        if data.num_rows != status.num_rows:
            raise InputDataError(f"{fs.join(out_dir, data_rel)} has {data.num_rows} rows but "
                                 f"{selection_path(out_dir, manifest)} has {status.num_rows}")
        pool = pa.table({"id": status.column("id"), "source": status.column("source"),
                         "messages": data.column("messages")})
        signals = data.drop_columns(["messages"])
    elif origin.get("report_from", "inputs") != "inputs" or _config_inputs_are_pool(manifest):
        raise InputDataError(f"{out_dir} was written from a pool passed from Python and holds no "
                             f"{REPORT_DATA_FILE}: its report cannot be rebuilt (rerun the selection with "
                             f"this version of siftkit, or from files)")
    else:
        pool, signals = _reread_pool(out_dir, manifest, mpath, status)
    with progress.stage("report", total=len(mask)) as stage, disk_guard(out, cleanup=[out + ".tmp"]):
        render_report(pool, signals, mask, manifest, out)
        stage.update(len(mask))
    return out


def _config_inputs_are_pool(manifest: dict[str, Any]) -> bool:
    inputs = (manifest.get("config") or {}).get("inputs") or []
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return any(_input_path(x) == "<pool>" for x in inputs)


def _reread_pool(out_dir: str, manifest: dict[str, Any], mpath: str,
                 status: pa.Table) -> tuple[pa.Table, pa.Table]:
    from .config import build_config
    from .io.pool import read_pool
    from .pipeline import make_selector, plan_signals, resolve_model_signals
    from .signals.compute import compute_signals

    cfg = build_config(manifest["config"], mpath)
    pool = read_pool(cfg.inputs, on_error=cfg.on_error, workers=cfg.workers)
    by_rel = {f.rel: f.sha256 for f in pool.files}
    for inp in manifest.get("inputs", []):
        if by_rel.get(inp["rel"]) not in (None, inp["sha256"]):
            raise InputDataError(f"input {inp['path']} changed since the selection was made (sha256 differs)")
    if status.column("id").to_pylist() != pool.table.column("id").to_pylist():
        raise InputDataError(f"the pool re-read from the manifest's inputs does not match "
                             f"{os.path.relpath(selection_path(out_dir, manifest), out_dir)}")
    cfg = resolve_model_signals(cfg, pool, cfg.workers or 1)
    sigs = plan_signals(cfg, [make_selector(s) for s in cfg.steps])
    signals = compute_signals(pool.table, sigs, cfg.cache_dir, workers=cfg.workers or 1)
    from types import SimpleNamespace

    # Lengths and special tokens as write_selection adds them for every report.
    return pool.table, _with_length_signals(SimpleNamespace(config=cfg, signals=signals, pool=pool))
