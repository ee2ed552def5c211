"""The Python API. Each function mirrors a CLI subcommand and builds the same validated config."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .config import RunConfig, build_config, load_recipe
from .errors import ConfigError
from .io.pool import InputSpec, Pool, read_pool

Inputs = str | os.PathLike | InputSpec | dict | Sequence[str | os.PathLike | InputSpec | dict]


def _input_list(inputs: Inputs, *, format: str | None = None, mapping: dict | None = None,
                source: str | None = None, header: bool | None = None) -> list[dict[str, Any]]:
    if isinstance(inputs, (str, os.PathLike, InputSpec, dict)):
        inputs = [inputs]
    out = []
    for x in inputs:
        spec = InputSpec.coerce(x)
        d = {k: v for k, v in vars(spec).items() if v is not None}
        for k, v in (("format", format), ("mapping", mapping), ("source", source), ("header", header)):
            if v is not None and k not in d:
                d[k] = v
        out.append(d)
    return out


def read(inputs: Inputs, *, on_error: str = "raise", format: str | None = None, mapping: dict | None = None,
         source: str | None = None, header: bool | None = None, workers: int | None = None) -> Pool:
    """Read files/folders/globs into a canonical pool (``siftkit read``)."""
    return read_pool(_input_list(inputs, format=format, mapping=mapping, source=source, header=header),
                     on_error=on_error, workers=workers)


def score(pool: Pool | Inputs, signals: Sequence[str | dict] = ("text_stats", "tokens"), *,
          tokenizer: str | None = None, cache_dir: str = ".siftkit", workers: int | None = None,
          engine: str = "local", refresh: bool = False, on_error: str = "raise") -> pa.Table:
    """Compute (or reuse from the cache) signals; returns a table aligned with the pool (``siftkit score``)."""
    from .signals.compute import compute_signals

    if not isinstance(pool, Pool):
        pool = read(pool, on_error=on_error, workers=workers)
    specs = [({"name": "tokens", "tokenizer": tokenizer} if s == "tokens" else s) for s in signals]
    return compute_signals(pool.table, specs, cache_dir, workers=workers or 1, engine=engine, refresh=refresh)


def selection_config(inputs: Any, *, budget: Any = None, method: str | None = None, by: str | None = None,
                     filters: Sequence[str] = (), dedup: str | None = None, stratify: str | None = None,
                     quota: str = "proportional", seed: int = 0, tokenizer: str | None = None,
                     steps: list | None = None, preset: str | None = None, signals: Sequence[Any] = (),
                     on_error: str = "raise", cache_dir: str = ".siftkit", workers: int | None = None,
                     engine: str = "local", output: dict | None = None,
                     method_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn CLI-style options into a recipe-shaped dict (what ``siftkit run`` reads from YAML)."""
    data: dict[str, Any] = {"inputs": inputs, "on_error": on_error, "seed": seed, "cache_dir": cache_dir,
                            "engine": engine}
    if tokenizer is not None:
        data["tokenizer"] = tokenizer
    if workers is not None:
        data["workers"] = workers
    if budget is not None:
        data["budget"] = budget
    if signals:
        data["signals"] = list(signals)
    if output:
        data["output"] = output
    if steps is not None:
        if filters or dedup or method or stratify:
            raise ConfigError("give either steps or the method/filter/dedup/stratify options, not both")
        data["steps"] = steps
        return data
    st: list[dict[str, Any]] = [{"filter": f} for f in filters]
    if dedup:
        st.append({"dedup": "exact", "keep": dedup} if dedup in ("first", "longest") else {"dedup": dedup})
    params = dict(method_params or {})
    if stratify:
        if method not in (None, "random", "top"):
            raise ConfigError("--stratify works with --method random (default) or top (with --by)")
        step = {"select": "stratified", "column": stratify, "quota": quota, **params}
        if by or method == "top":
            if not by:
                raise ConfigError("--method top needs --by COLUMN")
            step["by"] = by
        st.append(step)
    elif preset:
        data["preset"] = {"name": preset, **params} if params else preset
    else:
        m = method or "random"
        step = {"select": m, **params}
        if by:
            step["by"] = by
        elif m in ("top", "bottom"):
            raise ConfigError(f"--method {m} needs --by COLUMN (e.g. tokens_response)")
        st.append(step)
    data["steps"] = st
    return data


def select(inputs: Pool | Inputs, budget: Any, **options: Any) -> Selection:
    """Select ``budget`` records (``siftkit select``); options as in ``selection_config``."""
    from .pipeline import run_selection

    pool = inputs if isinstance(inputs, Pool) else None
    data = selection_config(["<pool>"] if pool is not None else _input_list(inputs), budget=budget, **options)
    cfg = build_config(data, "select")
    return run_selection(cfg, pool=pool)


def run(recipe: str | dict[str, Any], overrides: dict[str, Any] | None = None,
        write: bool = True, overwrite: bool = False) -> tuple[Selection, dict[str, Any] | None]:
    """Run a YAML recipe (path) or a recipe dict (``siftkit run``). Returns (selection, manifest).
    ``overwrite`` as in :func:`write`."""
    from .output import write_selection
    from .pipeline import run_selection

    if isinstance(recipe, dict):
        data, where = dict(recipe), "recipe"
    else:
        data, where = load_recipe(str(recipe)), str(recipe)
    for k, v in (overrides or {}).items():
        _set_path(data, k, v)
    cfg = build_config(data, where)
    sel = run_selection(cfg)
    manifest = None
    if write:
        out = cfg.output
        manifest = write_selection(sel, out.get("dir", "siftkit-out"), out.get("format", "original"),
                                   out.get("file_format", "jsonl"), bool(out.get("report", False)),
                                   bool(out.get("diversity", False)), overwrite=overwrite)
    return sel, manifest


def write(selection: Selection, out_dir: str, *, format: str = "original", file_format: str = "jsonl",
          report: bool = False, diversity: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Write selected records, manifest.json, README.md, ``_siftkit/`` (per-record status, rejects) and
    report.html to ``out_dir``, atomically (docs/outputs.md). A non-empty folder that is not a siftkit
    output is refused unless ``overwrite``."""
    from .output import write_selection

    return write_selection(selection, out_dir, format, file_format, report or diversity, diversity,
                           overwrite=overwrite)


def report(out_dir: str, path: str | None = None) -> str:
    """Re-create ``report.html`` for an output folder from its manifest (``siftkit report``)."""
    from .output import report_from_output

    return report_from_output(out_dir, path)


def inspect(pool: Pool | Inputs, *, signals: Sequence[str | dict] = ("text_stats", "tokens"),
            tokenizer: str | None = None, cache_dir: str = ".siftkit", workers: int | None = None,
            on_error: str = "raise", by: str = "source") -> dict[str, Any]:
    """Counts and signal percentiles, overall and per source (``siftkit inspect``)."""
    if not isinstance(pool, Pool):
        pool = read(pool, on_error=on_error, workers=workers)
    table = score(pool, signals, tokenizer=tokenizer, cache_dir=cache_dir, workers=workers)
    groups = np.asarray(pool.table.column(by).to_pylist(), dtype=object)
    qs = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]
    summary: dict[str, Any] = {"counts": pool.counts(), "percentiles": qs, "signals": {}}
    for name in table.column_names:
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            continue
        v = col.to_numpy(zero_copy_only=False).astype(np.float64)
        entry = {"all": _pct(v, qs)}
        for g in sorted(set(groups.tolist())):
            entry[g] = _pct(v[groups == g], qs)
        summary["signals"][name] = entry
    return summary


def _pct(v: np.ndarray, qs: list[float]) -> dict[str, Any]:
    ok = v[~np.isnan(v)]
    out: dict[str, Any] = {"n": len(v), "missing": int(len(v) - len(ok))}
    if len(ok):
        out["mean"] = float(ok.mean())
        out["q"] = [float(x) for x in np.quantile(ok, qs)]
    return out


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    d = data
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a mapping")
    d[keys[-1]] = value


from .pipeline import Selection

__all__ = [
    "RunConfig",
    "Selection",
    "inspect",
    "read",
    "report",
    "run",
    "score",
    "select",
    "selection_config",
    "write",
]
