"""Run configuration: one validated structure behind CLI flags, YAML recipes and the Python API.

Recipe (YAML) shape — every key is optional except ``inputs``::

    inputs:                         # paths, or dicts with path/source/format/mapping/header
      - data/pool
      - {path: data/flan_cot, mapping: {user: "{0}", assistant: "{2}"}}
    on_error: skip                  # raise (default) | skip
    tokenizer: default              # for the tokens signal (hub name, folder, tokenizer.json)
    signals: [text_stats, tokens]   # extra signals to compute; needed ones are added automatically
    steps:                          # run in order: filter -> dedup -> select
      - filter: "tokens_response >= 10"
      - dedup: exact                # or {dedup: exact, keep: longest}
      - select: stratified          # a selector name, with its params beside it
        by: tokens_total
    budget: 50000                   # count, fraction (0.05) or "5%"
    seed: 0
    output: {dir: out, format: original, file_format: jsonl, report: true, diversity: false}
    cache_dir: .siftkit
    workers: 2
    engine: local                   # or ray (signals computed on a Ray cluster)
    shard_size: 8192                # records per cache part (default: the signal's, else 65,536 locally;
                                    # with ray about 4 shards per actor, within [1,024, 65,536])
    ray:                            # the Ray engine's settings (engines.ray.RaySettings)
      address: ray://head:10001     # else RAY_ADDRESS, else a local instance on 127.0.0.1
      actors: {default: 8, lm_loss: 2}   # actors per pass (a number, or per signal name)
      cpus_per_actor: 1
      gpus_per_actor: {lm_loss: 0.5}     # model/embedding signals; fractional GPUs allowed
      runtime_env: {pip: [siftkit]}
      connect_timeout_s: 60
    preset: length-kmeans           # instead of a select step; or {name: length-kmeans, k: 200}
    models:                         # models built from the pool before scoring (siftkit.derive)
      experienced: {derive: cherry-brief-experience, base: Qwen/Qwen2.5-0.5B}   # a signal's model: experienced
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .fs import is_remote, is_url, local_path
from .yamlfile import load_yaml_mapping

TOP_KEYS = {"inputs", "on_error", "tokenizer", "signals", "steps", "budget", "seed", "output", "cache_dir",
            "workers", "engine", "preset", "models", "decontaminate", "shard_size", "ray"}
OUTPUT_KEYS = {"dir", "format", "file_format", "report", "rejects", "diversity", "escape_special_tokens", "order"}
OUTPUT_FORMATS = ("original", "messages", "sharegpt", "alpaca")
FILE_FORMATS = ("jsonl", "parquet")
STEP_ROLES = ("filter", "dedup", "select", "step")
# Short names used in steps: {dedup: exact} -> selector "dedup"; {dedup: minhash} -> "minhash-dedup".
DEDUP_ALIASES = {"exact": "dedup", "minhash": "minhash-dedup", "near": "minhash-dedup", "semantic": "semdedup"}


@dataclass
class StepSpec:
    role: str                 # filter | dedup | select
    selector: str             # registered selector name
    params: dict[str, Any]
    where: str                # "steps[2]" for error messages


@dataclass
class RunConfig:
    inputs: list[Any]
    on_error: str = "raise"
    tokenizer: str | None = None
    signals: list[Any] = field(default_factory=list)
    steps: list[StepSpec] = field(default_factory=list)
    budget: Any = None
    seed: int = 0
    output: dict[str, Any] = field(default_factory=dict)
    cache_dir: str = ".siftkit"
    workers: int | None = None
    engine: str = "local"
    raw: dict[str, Any] = field(default_factory=dict)   # the normalised dict (goes into the manifest)
    preset: str | None = None                  # the preset the steps came from, if any (for messages)
    preset_from: tuple[int, int] = (0, 0)      # index of its first step and first signal in steps / signals
    models: dict[str, Any] = field(default_factory=dict)   # derived models: name -> {derive: NAME, ...}
    shard_size: int | None = None              # records per cache part (None: the engine's default)
    ray: Any = None                            # engines.ray.RaySettings (the recipe's ``ray:`` section)


def decontaminate_step(spec: Any) -> dict[str, Any]:
    """``{decontaminate: PATHS | {against: PATHS, ...}}`` (a step, or the recipe's top-level key) as a step."""
    if isinstance(spec, (str, list)):
        spec = {"against": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"decontaminate: expected eval paths or a mapping with 'against', got {spec!r}")
    return {"step": "decontaminate", **spec}


def parse_step(step: Any, where: str) -> StepSpec:
    if isinstance(step, str):
        step = {"select": step}
    if isinstance(step, dict) and "decontaminate" in step and not any(k in STEP_ROLES for k in step):
        step = {**decontaminate_step(step["decontaminate"]), **{k: v for k, v in step.items() if k != "decontaminate"}}
    if not isinstance(step, dict):
        raise ConfigError(f"{where}: a step must be a mapping like {{select: random}}, got {step!r}")
    roles = [k for k in step if k in STEP_ROLES]
    if len(roles) != 1:
        raise ConfigError(f"{where}: a step needs exactly one of {', '.join(STEP_ROLES[:3])} "
                          f"(got keys {sorted(step)})")
    role = roles[0]
    head = step[role]
    params = {k: v for k, v in step.items() if k != role}
    if role == "filter":
        if isinstance(head, str):
            params = {"expr": head, **params}
        elif isinstance(head, dict):
            params = {**head, **params}
        else:
            raise ConfigError(f"{where}.filter: expected an expression string")
        return StepSpec("filter", "filter", params, where)
    if isinstance(head, dict):
        params = {**head, **params}
        head = params.pop("name", None) or params.pop("method", None)
        if head is None:
            raise ConfigError(f"{where}.{role}: give the method name, e.g. {{{role}: {{name: ...}}}}")
    if not isinstance(head, str):
        raise ConfigError(f"{where}.{role}: expected a method name, got {head!r}")
    name = DEDUP_ALIASES.get(head, head) if role == "dedup" else head
    from .registry import selector_class

    try:
        cls = selector_class(name)
    except ConfigError as e:
        raise ConfigError(f"{where}.{role}: {e}") from None
    actual_role = getattr(cls, "role", "select") if role == "step" else role
    from .registry import make

    make(cls, dict(params), f"{where}.{role}: {name}")  # validate the parameters now, before any work
    return StepSpec(actual_role, name, params, where)


def recipe_path(value: Any, base: str) -> Any:
    """A path written in a recipe, made relative to the recipe's folder ``base`` (the one rule for every
    path a recipe names: inputs, output, cache, eval files, prompt and rubric files). A relative local path
    is joined to ``base``; absolute paths, URLs (``s3://``, ``gs://``, ``file://``), ``hf:`` names and
    anything that is not a non-empty string are returned as they are. CLI flags are not recipe paths (they
    stay relative to the current folder)."""
    if isinstance(value, str) and value and not os.path.isabs(value) and not value.startswith("hf:") \
            and not is_url(value):
        return os.path.normpath(os.path.join(base, value))
    return value


# Parameters naming a file read by a signal or a preset (judge rubrics, SelectIT / generation prompts).
FILE_PARAMS = ("prompts_file", "rubrics_file")


def recipe_files(data: dict[str, Any], base: str) -> None:
    """Make the file parameters (:data:`FILE_PARAMS`) of a recipe's signals (``{name: judge, rubrics_file:
    ..}`` or ``{judge: {rubrics_file: ..}}``) and of its preset mapping (``preset: {name: alpagasus,
    rubrics_file: ..}``) relative to the recipe's folder ``base``, in place."""
    specs = [data.get("preset")]
    signals = data.get("signals")
    for s in signals if isinstance(signals, list) else []:
        if isinstance(s, dict) and "name" not in s and len(s) == 1:
            specs.append(next(iter(s.values())))
        specs.append(s)
    for spec in specs:
        if isinstance(spec, dict):
            for k in FILE_PARAMS:
                if k in spec:
                    spec[k] = recipe_path(spec[k], base)


def load_recipe(path: str) -> dict[str, Any]:
    if is_remote(path):
        raise ConfigError(f"recipe {path}: a recipe is read from local disk (copy it first); the paths in it "
                          f"may be URLs")
    path = local_path(path)
    data = load_yaml_mapping(path, "recipe")
    # Relative paths in a recipe are relative to the recipe file, not to the current folder: inputs,
    base = os.path.dirname(os.path.abspath(path))
    for i, inp in enumerate(data.get("inputs") or []):
        if isinstance(inp, str):
            data["inputs"][i] = recipe_path(inp, base)
        elif isinstance(inp, dict) and "path" in inp:
            inp["path"] = recipe_path(inp["path"], base)
    # the output folder and the cache,
    out = data.get("output")
    if isinstance(out, str):
        data["output"] = out = {"dir": out}
    if isinstance(out, dict) and "dir" in out:
        out["dir"] = recipe_path(out["dir"], base)
    if "cache_dir" in data:
        data["cache_dir"] = recipe_path(data["cache_dir"], base)
    # the files signals and presets read (prompts_file, rubrics_file),
    recipe_files(data, base)
    # and the eval files of decontaminate: the top-level key and decontaminate steps, in every spelling.
    if isinstance(data.get("decontaminate"), (str, list)):
        data["decontaminate"] = {"against": data["decontaminate"]}
    _against_from(data.get("decontaminate"), base)
    for st in data.get("steps") or []:
        if not isinstance(st, dict):
            continue
        if "decontaminate" in st and not any(k in STEP_ROLES for k in st):
            if isinstance(st["decontaminate"], (str, list)):
                st["decontaminate"] = {"against": st["decontaminate"]}
            _against_from(st["decontaminate"], base)
        for role in STEP_ROLES:
            head = st.get(role)
            if head == "decontaminate":
                _against_from(st, base)
            elif isinstance(head, dict) and "decontaminate" in (head.get("name"), head.get("method")):
                _against_from(head, base)
                _against_from(st, base)
    return data


def _against_from(spec: Any, base: str) -> None:
    """Make a decontaminate spec's relative ``against`` paths relative to the recipe's folder ``base``."""
    if not isinstance(spec, dict) or spec.get("against") is None:
        return
    ag = spec["against"] if isinstance(spec["against"], list) else [spec["against"]]
    spec["against"] = [recipe_path(a, base) for a in ag]


def build_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a recipe-shaped dict; errors name the offending key (``recipe.yaml: steps[1].select``)."""
    data = copy.deepcopy(data)
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(TOP_KEYS))}")
    preset, preset_from = None, (0, 0)
    if data.get("preset"):
        from .presets import expand_preset

        preset = data["preset"].get("name") if isinstance(data["preset"], dict) else data["preset"]
        preset_from = (len(data.get("steps") or []), len(data.get("signals") or []))
        data = expand_preset(data, source)
    inputs = data.get("inputs")
    if not inputs:
        raise ConfigError(f"{source}: 'inputs' is required (a list of files, folders or globs)")
    if not isinstance(inputs, list):
        inputs = [inputs]
    from .io.pool import InputSpec

    for i, inp in enumerate(inputs):
        try:
            InputSpec.coerce(inp)
        except ConfigError as e:
            raise ConfigError(f"{source}: inputs[{i}]: {e}") from None
    on_error = data.get("on_error", "raise")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"{source}: on_error must be 'raise' or 'skip', not {on_error!r}")
    steps_raw = data.get("steps") or []
    if not isinstance(steps_raw, list):
        raise ConfigError(f"{source}: 'steps' must be a list")
    if data.get("decontaminate") is not None:   # runs first, before every other step
        try:
            steps_raw = [decontaminate_step(data["decontaminate"])] + list(steps_raw)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        preset_from = (preset_from[0] + 1, preset_from[1]) if preset else preset_from
    steps = [parse_step(s, f"{source}: steps[{i}]") for i, s in enumerate(steps_raw)]
    n_select = sum(s.role == "select" for s in steps)
    if n_select > 1:
        raise ConfigError(f"{source}: only one budgeted 'select' step is allowed (found {n_select})")
    if n_select == 1 and steps[-1].role != "select":
        raise ConfigError(f"{source}: the 'select' step must come last")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{source}: seed must be an integer, not {seed!r}")
    if n_select and data.get("budget") is None:
        raise ConfigError(f"{source}: 'budget' is required with a select step (a count, 0.05 or '5%')")
    if data.get("budget") is not None:
        from .selectors.base import resolve_budget

        try:
            resolve_budget(data["budget"], 10**9)
        except ConfigError as e:
            raise ConfigError(f"{source}: budget: {e}") from None
    output = data.get("output") or {}
    if isinstance(output, str):
        output = {"dir": output}
    unknown = set(output) - OUTPUT_KEYS
    if unknown:
        raise ConfigError(f"{source}: output: unknown key(s) {sorted(unknown)}; allowed: {sorted(OUTPUT_KEYS)}")
    if output.get("format", "original") not in OUTPUT_FORMATS:
        raise ConfigError(f"{source}: output.format must be one of {OUTPUT_FORMATS}")
    if output.get("order", "pool") not in ("pool", "pick"):
        raise ConfigError(f"{source}: output.order must be 'pool' or 'pick', got {output.get('order')!r}")
    if output.get("file_format", "jsonl") not in FILE_FORMATS:
        raise ConfigError(f"{source}: output.file_format must be one of {FILE_FORMATS}")
    signals = data.get("signals") or []
    if not isinstance(signals, list):
        raise ConfigError(f"{source}: 'signals' must be a list")
    norm_signals = []
    for i, s in enumerate(signals):
        if isinstance(s, dict) and "name" not in s and len(s) == 1:
            (name, params), = s.items()
            s = {"name": name, **(params or {})}
        from .signals.base import Signal

        if not isinstance(s, (str, dict, Signal)):
            raise ConfigError(f"{source}: signals[{i}]: expected a name or a mapping")
        from .derive import check_signal

        norm_signals.append(check_signal(s, f"{source}: signals[{i}]"))   # an older inline derived-model spelling
    from .derive import check_models

    models = check_models(data.get("models"), norm_signals, source)
    workers = data.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"{source}: workers must be a positive integer")
    engine = data.get("engine", "local")
    if engine not in ("local", "ray"):
        raise ConfigError(f"{source}: engine must be 'local' or 'ray'")
    shard_size = data.get("shard_size")
    if shard_size is not None and (not isinstance(shard_size, int) or isinstance(shard_size, bool)
                                   or shard_size < 1):
        raise ConfigError(f"{source}: shard_size must be a positive integer (records per cache part), "
                          f"not {shard_size!r}")
    from .engines.ray import parse_ray_settings

    ray = parse_ray_settings(data.get("ray"), source)   # plain Python: ray itself is imported only to run
    env_vars = ((data.get("ray") or {}).get("runtime_env") or {}).get("env_vars")
    if isinstance(env_vars, dict):   # the manifest keeps the names, never the values (they may be secrets)
        data["ray"]["runtime_env"]["env_vars"] = {k: "<set>" for k in env_vars}
    data["signals"] = norm_signals
    return RunConfig(inputs=inputs, on_error=on_error, tokenizer=data.get("tokenizer"), signals=norm_signals,
                     steps=steps, budget=data.get("budget"), seed=seed, output=output,
                     cache_dir=data.get("cache_dir", ".siftkit"), workers=workers, engine=engine, raw=data,
                     preset=preset, preset_from=preset_from, models=models, shard_size=shard_size, ray=ray)
