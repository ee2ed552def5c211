"""The Python API. Each function mirrors a CLI subcommand and builds the same validated config.

Inputs are paths (files, folders, globs, ``hf:NAME``), input specs (``InputSpec`` or a dict with ``path``),
or in-memory data: a HF ``datasets.Dataset`` / ``DatasetDict`` (with ``split=``), a pandas or polars
DataFrame, a ``pyarrow.Table`` / ``RecordBatch``, a list of dicts or of conversations (lists of strings), or
a dict ``{"data": <any of those>, "source": ..., "format": ..., "mapping": ..., "split": ...}``; or a list
mixing them. In-memory data goes through the same adaptation, validation and rejects as files
(``siftkit.io.memory``; docs/api.md). Every function checks the run's needs first (``siftkit.preflight``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .config import RunConfig, build_config, load_recipe
from .errors import ConfigError
from .io.pool import InputSpec, Pool, memory_spec, read_pool

# A path, an input spec, in-memory data (a Dataset, DataFrame, Arrow table, list of records), or a list of them
Inputs = Any


def _input_list(inputs: Inputs, *, format: str | None = None, mapping: dict | None = None,
                source: str | None = None, header: bool | None = None,
                split: str | None = None) -> list[dict[str, Any] | InputSpec]:
    """Inputs as recipe-style dicts (paths) and ``InputSpec`` objects carrying ``data`` (in-memory inputs);
    ``format``/``mapping``/``source``/``header``/``split`` apply to each input that does not set its own."""
    from collections.abc import Iterator

    from .io import memory

    if isinstance(inputs, Iterator) and not memory.is_memory(inputs):   # a generator: of records or of inputs
        inputs = list(inputs)
    if memory.is_memory(inputs) or isinstance(inputs, (str, os.PathLike, InputSpec, Mapping)):
        inputs = [inputs]
    out: list[dict[str, Any] | InputSpec] = []
    for x in inputs:
        if memory.is_memory(x) or (isinstance(x, Mapping) and "data" in x):
            opts = {"source": source, "format": format, "mapping": mapping, "split": split}
            if isinstance(x, Mapping) and "data" in x:
                unknown = set(x) - {"data", "source", "format", "mapping", "split"}
                if unknown:
                    raise ConfigError(f"unknown in-memory input keys {sorted(unknown)}; allowed: data, source, "
                                      f"format, mapping, split")
                opts.update({k: v for k, v in x.items() if k != "data" and v is not None})
                x = x["data"]
                if not memory.is_memory(x):
                    raise ConfigError(f"'data' must be in-memory records (a Dataset, DataFrame, Arrow table or "
                                      f"list of dicts), not {type(x).__name__}")
            out.append(memory_spec(x, **opts))
            continue
        spec = InputSpec.coerce(x)
        d = {k: v for k, v in vars(spec).items() if v is not None}
        for k, v in (("format", format), ("mapping", mapping), ("source", source), ("header", header)):
            if v is not None and k not in d:
                d[k] = v
        out.append(d)
    memory.unique_labels(out)
    return out


def _config_inputs(specs: Sequence[dict[str, Any] | InputSpec]) -> list[Any]:
    """What goes into the config (and the manifest) for each input: in-memory ones by their label."""
    return [s.path if isinstance(s, InputSpec) else s for s in specs]


def _has_memory(specs: Sequence[Any]) -> bool:
    return any(isinstance(s, InputSpec) and s.data is not None for s in specs)


def _any_memory(inputs: Any) -> bool:
    from .io import memory

    if inputs is None:
        return False
    items = inputs if isinstance(inputs, (list, tuple)) and not memory.is_memory(inputs) else [inputs]
    return any(memory.is_memory(x) or (isinstance(x, Mapping) and "data" in x) for x in items)


def read(inputs: Inputs, *, on_error: str = "raise", format: str | None = None, mapping: dict | None = None,
         source: str | None = None, header: bool | None = None, split: str | None = None,
         workers: int | None = None, _run_tasks: Any = None) -> Pool:
    """Read files/folders/globs or in-memory data into a canonical pool (``siftkit read``).
    ``_run_tasks``: ``read_pool``'s file-task runner (the Ray engine's workers, from ``score``)."""
    specs = _input_list(inputs, format=format, mapping=mapping, source=source, header=header, split=split)
    from .preflight import check_inputs

    check_inputs(specs)   # hf: inputs need datasets
    return read_pool(specs, on_error=on_error, workers=workers, run_tasks=_run_tasks)


def signal_specs(signals: Sequence[str | dict], tokenizer: str | None = None) -> list[Any]:
    """Signal specs with a bare ``"tokens"`` given the run's tokenizer."""
    return [({"name": "tokens", "tokenizer": tokenizer} if s == "tokens" else s) for s in signals]


def score(pool: Pool | Inputs, signals: Sequence[str | dict] = ("text_stats", "tokens"), *,
          tokenizer: str | None = None, cache_dir: str = ".siftkit", workers: int | None = None,
          engine: str = "local", refresh: bool = False, on_error: str = "raise", format: str | None = None,
          mapping: dict | None = None, source: str | None = None, split: str | None = None,
          shard_size: int | None = None, ray_address: str | None = None, ray: dict | None = None) -> pa.Table:
    """Compute (or reuse from the cache) signals; returns a table aligned with the pool (``siftkit score``).
    The signals' extras and files are checked before the pool is read; ``format``, ``mapping``, ``source``
    and ``split`` apply to the inputs as in ``read``. ``engine="ray"``: ``ray`` is a recipe-style ``ray:``
    mapping (address, actors, cpus_per_actor, gpus_per_actor, runtime_env), ``ray_address`` its address."""
    from .engines.ray import parse_ray_settings
    from .preflight import check_signals
    from .signals.compute import compute_signals

    built = check_signals(signal_specs(signals, tokenizer), engine=engine)
    settings = parse_ray_settings({**(ray or {}), **({"address": ray_address} if ray_address else {})}, "score")
    if shard_size is not None and (isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1):
        raise ConfigError(f"shard_size must be a positive integer, not {shard_size!r}")
    reader = None
    if not isinstance(pool, Pool):
        reader = _task_reader(engine, cache_dir, settings, () if refresh else built)
        pool = read(pool, on_error=on_error, workers=workers, format=format, mapping=mapping, source=source,
                    split=split, _run_tasks=reader)
    return compute_signals(pool.table, built, cache_dir, workers=workers or 1, engine=engine, refresh=refresh,
                           shard_size=shard_size, ray=settings, spill=pool.spill,
                           read_scored=getattr(reader, "scored", ()))


def _task_reader(engine: str, cache_dir: str, settings: Any, signals: Sequence[Any] = ()) -> Any:
    """With the Ray engine, files are read on the workers (``engines.ray.ray_task_reader``), which also
    compute the cheap ``signals`` the cache lacks as they read."""
    if engine != "ray":
        return None
    from .engines.ray import ray_task_reader

    return ray_task_reader(cache_dir, settings, signals)


def selection_config(inputs: Any, *, budget: Any = None, method: str | None = None, by: str | None = None,
                     filters: Sequence[str] = (), dedup: str | None = None, stratify: str | None = None,
                     quota: str = "proportional", seed: int = 0, tokenizer: str | None = None,
                     steps: list | None = None, preset: str | None = None, signals: Sequence[Any] = (),
                     on_error: str = "raise", cache_dir: str = ".siftkit", workers: int | None = None,
                     engine: str = "local", output: dict | None = None,
                     method_params: dict[str, Any] | None = None,
                     decontaminate: Sequence[str] | None = None, shard_size: int | None = None,
                     ray_address: str | None = None) -> dict[str, Any]:
    """Turn CLI-style options into a recipe-shaped dict (what ``siftkit run`` reads from YAML).
    ``decontaminate``: eval files/folders; a decontaminate step runs first (recipe key ``decontaminate``)."""
    data: dict[str, Any] = {"inputs": inputs, "on_error": on_error, "seed": seed, "cache_dir": cache_dir,
                            "engine": engine}
    if decontaminate:
        data["decontaminate"] = {"against": list(decontaminate)}
    if shard_size is not None:
        data["shard_size"] = shard_size
    if ray_address:
        data["ray"] = {"address": ray_address}
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


def select(inputs: Pool | Inputs, budget: Any, *, format: str | None = None, mapping: dict | None = None,
           source: str | None = None, split: str | None = None, **options: Any) -> Selection:
    """Select ``budget`` records (``siftkit select``); options as in ``selection_config``; ``format``,
    ``mapping``, ``source`` and ``split`` apply to the inputs as in ``read``."""
    if isinstance(inputs, Pool):
        cfg = build_config(selection_config(["<pool>"], budget=budget, **options), "select")
        return _run(cfg, None, inputs)
    specs = _input_list(inputs, format=format, mapping=mapping, source=source, split=split)
    cfg = build_config(selection_config(_config_inputs(specs), budget=budget, **options), "select")
    return _run(cfg, specs)


def _run(cfg: RunConfig, specs: Sequence[Any] | None, pool: Pool | None = None) -> Selection:
    """run_selection; in-memory inputs are read here (after the pre-flight checks) instead of from the config,
    which holds their labels only."""
    from .pipeline import run_selection
    from .preflight import preflight

    if pool is None and specs is not None and _has_memory(specs):
        preflight(cfg)
        pool = read_pool(list(specs), on_error=cfg.on_error, workers=cfg.workers)
    return run_selection(cfg, pool=pool)


def run(recipe: str | dict[str, Any], overrides: dict[str, Any] | None = None,
        write: bool = True, overwrite: bool = False) -> tuple[Selection, dict[str, Any] | None]:
    """Run a YAML recipe (path) or a recipe dict (``siftkit run``). Returns (selection, manifest).
    ``overwrite`` as in :func:`write`."""
    from .output import write_selection
    from .pipeline import run_selection

    specs = None
    if isinstance(recipe, dict):
        data, where = dict(recipe), "recipe"
        if _any_memory(data.get("inputs")):   # read after the checks; the config holds their labels
            specs = _input_list(data["inputs"])
            data["inputs"] = _config_inputs(specs)
    else:
        data, where = load_recipe(str(recipe)), str(recipe)
    for k, v in (overrides or {}).items():
        _set_path(data, k, v)
    cfg = build_config(data, where)
    sel = _run(cfg, specs) if specs is not None else run_selection(cfg)
    manifest = None
    if write:
        out = cfg.output
        manifest = write_selection(sel, out.get("dir", "siftkit-out"), out.get("format", "original"),
                                   out.get("file_format", "jsonl"), bool(out.get("report", False)),
                                   bool(out.get("diversity", False)), overwrite=overwrite)
    return sel, manifest


def write(selection: Selection, out_dir: str, *, format: str = "original", file_format: str = "jsonl",
          report: bool = False, diversity: bool = False, overwrite: bool = False,
          order: str | None = None) -> dict[str, Any]:
    """Write selected records, manifest.json, README.md, ``_siftkit/`` (per-record status, rejects) and
    report.html to ``out_dir``, atomically (docs/outputs.md). A non-empty folder that is not a siftkit
    output is refused unless ``overwrite``. ``order``: the records file's order, ``pool`` or ``pick``
    (default: the run's ``output.order``, else ``pool``)."""
    from .output import write_selection

    return write_selection(selection, out_dir, format, file_format, report or diversity, diversity,
                           overwrite=overwrite, order=order)


def evolve(inputs: Inputs | None = None, out_dir: str | None = None, *, recipe: str | None = None,
           format: str = "messages", file_format: str = "jsonl", cache_dir: str = ".siftkit",
           on_error: str = "raise", **params: Any) -> dict[str, Any]:
    """Evolve instructions or responses with an LLM endpoint (``siftkit evolve``, docs/generate.md): give
    ``inputs`` and ``out_dir`` with ``siftkit.generate.EvolveConfig`` fields as keywords (``endpoint``,
    ``rounds``, ``target``, ``operations``, ...), or a ``recipe`` path (``params`` then override its
    ``evolve`` keys). Writes ``out_dir/evolved.*`` and a manifest; returns the manifest."""
    from .generate.evolve import evolve as _evolve
    from .generate.evolve import run_recipe

    if recipe is not None:
        return run_recipe(recipe, params)
    if inputs is None or out_dir is None:
        raise ConfigError("evolve: give inputs and out_dir, or recipe=PATH")
    return _evolve(inputs, out_dir, format=format, file_format=file_format, cache_dir=cache_dir,
                   on_error=on_error, **params)


def testset(inputs: str | Sequence[str] | None = None, out_dir: str | None = None, *, recipe: str | None = None,
            **params: Any) -> dict[str, Any]:
    """Ragas-style evaluation questions from documents (``siftkit testset``, docs/generate.md): give inputs,
    out_dir and ``endpoint=`` (``params`` as :func:`siftkit.generate.testset.testset`), or a ``recipe`` path
    (``params`` then override its ``testset`` keys). Returns the manifest."""
    from .generate.testset import run_recipe
    from .generate.testset import testset as _testset

    if recipe is not None:
        if inputs is not None or out_dir is not None:
            raise ConfigError("testset: give inputs and out_dir, or recipe=PATH, not both")
        return run_recipe(recipe, params)
    if inputs is None or out_dir is None or not params.get("endpoint"):
        raise ConfigError("testset: give inputs, out_dir and endpoint=URL, or recipe=PATH")
    return _testset([inputs] if isinstance(inputs, str) else list(inputs), out_dir, **params)


def report(out_dir: str, path: str | None = None) -> str:
    """Re-create ``report.html`` for an output folder from its manifest (``siftkit report``)."""
    from .output import report_from_output

    return report_from_output(out_dir, path)


def inspect(pool: Pool | Inputs, *, signals: Sequence[str | dict] = ("text_stats", "tokens"),
            tokenizer: str | None = None, cache_dir: str = ".siftkit", workers: int | None = None,
            on_error: str = "raise", by: str = "source", format: str | None = None, mapping: dict | None = None,
            source: str | None = None, split: str | None = None) -> dict[str, Any]:
    """Counts and signal percentiles, overall and per source (``siftkit inspect``); ``format``, ``mapping``,
    ``source`` and ``split`` apply to the inputs as in ``read``."""
    from .pipeline import POOL_COLUMNS
    from .preflight import check_signals

    if by not in POOL_COLUMNS:
        raise ConfigError(f"inspect: --by must be a pool column ({', '.join(POOL_COLUMNS)}), not {by!r}")
    check_signals(signal_specs(signals, tokenizer))
    if not isinstance(pool, Pool):
        pool = read(pool, on_error=on_error, workers=workers, format=format, mapping=mapping, source=source,
                    split=split)
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
