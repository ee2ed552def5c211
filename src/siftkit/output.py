"""Write a selection to an output folder: records, per-record status, rejects and the manifest.

Files::

    selected.jsonl | selected.parquet   the chosen records (pool order), original or converted
    selection.parquet                   every pool record: id, source, file, row, status, rank
    rejects.jsonl                       records that could not be used, with file/line/field/reason
    manifest.json                       inputs (paths, sizes, sha256), config, seed, versions, counts,
                                        steps, timings
    report.html                         (with --report)

Everything but the ``created``, ``timings`` and ``cache`` (records computed vs reused) fields of the manifest
is byte-identical for the same inputs, config and seed.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .io.writers import dataset_info_entry, write_jsonl, write_records
from .pipeline import Selection

MANIFEST_VERSION = 1


def versions() -> dict[str, str]:
    out = {"siftkit": __version__, "python": platform.python_version(), "platform": sys.platform}
    for mod in ("numpy", "pyarrow", "tokenizers", "orjson", "xxhash"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    for mod in ("torch", "transformers", "faiss"):
        if mod in sys.modules:
            out[mod] = getattr(sys.modules[mod], "__version__", "?")
    return out


def build_manifest(sel: Selection, outputs: dict[str, Any]) -> dict[str, Any]:
    cfg = sel.config
    return {
        "manifest_version": MANIFEST_VERSION,
        "siftkit_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": cfg.seed,
        "budget": cfg.budget,
        "budget_resolved": sel.budget_resolved,
        "config": cfg.raw,
        "inputs": [{"path": os.path.abspath(f.path), "rel": f.rel, "source": f.source, "format": f.format,
                    "size": f.size, "sha256": f.sha256, "records": f.records, "rejected": f.rejected,
                    "defects": f.defects} for f in sel.pool.files],
        "skipped_files": sel.pool.skipped_files,
        "signals": sel.signal_stats_public(),
        "counts": sel.counts(),
        "steps": [s.as_dict() for s in sel.steps],
        "outputs": outputs,
        "versions": versions(),
        "timings": sel.timings,
        "cache": sel.cache_hits(),
    }


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
    return [{"title": "Diversity", "text": f"Embeddings: {spec_key}", "table": rows},
            {"title": "Pool vs selection, 2-D PCA map",
             "scatter": {"x": m["pool"]["x"] + m["selected"]["x"], "y": m["pool"]["y"] + m["selected"]["y"],
                         "selected": [False] * n_pool + [True] * n_sel, "xlabel": "PC1", "ylabel": "PC2"}}]


def _with_length_signals(sel: Selection) -> pa.Table:
    """The selection's signals plus character and token lengths (cached), so every report shows lengths."""
    from .signals.compute import compute_signals

    cfg = sel.config
    want = [("text_stats", "chars_total"), ({"name": "tokens", "tokenizer": cfg.tokenizer}, "tokens_total")]
    missing = [spec for spec, col in want if col not in sel.signals.column_names]
    if not missing:
        return sel.signals
    more = compute_signals(sel.pool.table, missing, cfg.cache_dir, workers=cfg.workers or 1, engine=cfg.engine)
    if sel.signals.num_columns == 0:
        return more
    table = sel.signals
    for name in more.column_names:
        if name not in table.column_names:
            table = table.append_column(name, more.column(name))
    return table


def write_selection(sel: Selection, out_dir: str, fmt: str = "original", file_format: str = "jsonl",
                    report: bool = False, diversity: bool = False) -> dict[str, Any]:
    import time

    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    ext = "jsonl" if file_format == "jsonl" else "parquet"
    sel_path = os.path.join(out_dir, f"selected.{ext}")
    chosen = sel.pool.table.take(pa.array(sel.selected, pa.int64()))
    unwritable: list[dict[str, Any]] = []  # selected records the output format cannot represent
    written = write_records(chosen, sel_path, fmt, file_format, rejects=unwritable)
    outputs: dict[str, Any] = {"selected": os.path.basename(sel_path), "format": fmt, "file_format": file_format,
                               "records": int(written)}
    if unwritable:
        outputs["unrepresentable"] = len(unwritable)  # selected = records + unrepresentable
    info_path = os.path.join(out_dir, "dataset_info.json")
    try:  # LLaMA-Factory entry, keyed by the output folder's name
        kept = chosen
        if unwritable:
            import pyarrow.compute as pc

            kept = chosen.filter(pc.invert(pc.is_in(chosen.column("id"), pa.array([r["id"] for r in unwritable]))))
        entry = dataset_info_entry(fmt, os.path.basename(sel_path), kept)
    except ValueError:
        entry = None
    if entry is not None:
        with open(info_path, "wb") as fh:
            fh.write(orjson.dumps({os.path.basename(os.path.abspath(out_dir)): entry}, option=orjson.OPT_INDENT_2))
        outputs["dataset_info"] = "dataset_info.json"
    elif os.path.exists(info_path):
        os.remove(info_path)
    rank = np.full(len(sel.pool), -1, dtype=np.int64)
    rank[sel.selected] = np.arange(len(sel.selected))
    status_tbl = pa.table({
        "id": sel.pool.table.column("id"), "source": sel.pool.table.column("source"),
        "file": sel.pool.table.column("file"), "row": sel.pool.table.column("row"),
        "status": pa.array(sel.status.tolist(), pa.string()), "rank": pa.array(rank),
    })
    status_path = os.path.join(out_dir, "selection.parquet")
    pq.write_table(status_tbl, status_path + ".tmp", compression="zstd")
    os.replace(status_path + ".tmp", status_path)
    outputs["selection"] = "selection.parquet"
    rej_path = os.path.join(out_dir, "rejects.jsonl")
    if sel.pool.rejects or unwritable:
        write_jsonl(sel.pool.rejects + unwritable, rej_path)
        outputs["rejects"] = "rejects.jsonl"
    elif os.path.exists(rej_path):
        os.remove(rej_path)
    sel.timings["write"] = round(time.perf_counter() - t0, 3)
    if report:
        from .report import render_report

        t1 = time.perf_counter()
        outputs["report"] = "report.html"
        extra = diversity_sections(sel, force=diversity)
        report_signals = _with_length_signals(sel)
        if extra:
            outputs["diversity"] = extra[0]["table"]
        manifest = build_manifest(sel, outputs)
        render_report(sel.pool.table, report_signals, sel.mask, manifest, os.path.join(out_dir, "report.html"),
                      extra_sections=extra)
        sel.timings["report"] = round(time.perf_counter() - t1, 3)
    manifest = build_manifest(sel, outputs)
    with open(os.path.join(out_dir, "manifest.json"), "wb") as fh:
        fh.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2, default=str))
    return manifest


def report_from_output(out_dir: str, path: str | None = None) -> str:
    """Rebuild report.html from an output folder: re-read the inputs named in its manifest (checking their
    sha256), reload signals from the cache and the selection from selection.parquet."""
    from .config import build_config
    from .errors import InputDataError
    from .io.pool import read_pool
    from .pipeline import Selection, StepReport, make_selector, plan_signals, resolve_model_signals
    from .signals.compute import compute_signals

    mpath = os.path.join(out_dir, "manifest.json")
    if not os.path.isfile(mpath):
        raise InputDataError(f"{out_dir} has no manifest.json: is it a siftkit output folder?")
    with open(mpath, "rb") as fh:
        manifest = orjson.loads(fh.read())
    cfg = build_config(manifest["config"], mpath)
    pool = read_pool(cfg.inputs, on_error=cfg.on_error, workers=cfg.workers)
    by_rel = {f.rel: f.sha256 for f in pool.files}
    for inp in manifest.get("inputs", []):
        if by_rel.get(inp["rel"]) not in (None, inp["sha256"]):
            raise InputDataError(f"input {inp['path']} changed since the selection was made (sha256 differs)")
    cfg = resolve_model_signals(cfg, pool, cfg.workers or 1)
    sigs = plan_signals(cfg, [make_selector(s) for s in cfg.steps])
    signals = compute_signals(pool.table, sigs, cfg.cache_dir, workers=cfg.workers or 1)
    status = pq.read_table(os.path.join(out_dir, "selection.parquet"))
    if status.column("id").to_pylist() != pool.table.column("id").to_pylist():
        raise InputDataError("the pool re-read from the manifest's inputs does not match selection.parquet")
    st = np.asarray(status.column("status").to_pylist(), dtype=object)
    selected = np.flatnonzero(st == "selected")
    steps = [StepReport(s["step"], s["name"], s.get("params", {}), s["in"], s["out"], s.get("dropped", {}),
                        s.get("details", {}), s.get("seconds", 0.0)) for s in manifest.get("steps", [])]
    sel = Selection(pool, signals, selected, steps, cfg, st, manifest.get("timings", {}))
    from .report import render_report

    out = path or os.path.join(out_dir, "report.html")
    render_report(pool.table, signals, sel.mask, manifest, out)
    return out
