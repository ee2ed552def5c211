"""``siftkit bench`` configuration: one YAML file, validated up front, errors naming the key.

Shape (every key but ``pool``, ``base_model`` and ``methods`` has a default)::

    pool: {inputs: [data/pool], on_error: skip, heldout: 50}
    budgets: [100]                 # or budget: 100 (counts, fractions or "5%", as in recipes)
    base_model: HuggingFaceTB/SmolLM2-135M-Instruct   # hub name, folder or .gguf file
    random_seeds: 5                # random baselines: the random selector with seeds 0..n-1
    methods:                       # name -> recipe fragment (steps | preset, signals, models, seeds)
      longest: {steps: [{select: top, by: tokens_response}]}
      per-source: {preset: longest-per-source, seeds: 1}
    train: {mode: lora, epochs: 1, lr: 2.0e-4, ...}   # see siftkit.training.settings.TRAIN_DEFAULTS
    eval: {tasks: [mmlu, gsm8k, bbh, ifeval, heldout], limit: 50, data_dir: ../shared/data/eval}
    # testset:PATH tasks are also rated against their ground truth by an LLM judge when eval.judge is set:
    #   eval: {tasks: ["testset:out/ts/testset.jsonl"], judge: {endpoint: "http://127.0.0.1:8080/v1"}}
    output: runs/bench
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..training.settings import LR_DEFAULTS, TRAIN_DEFAULTS, _int, train_settings  # noqa: F401 (re-exported)

TOP_KEYS = {"pool", "budget", "budgets", "base_model", "gguf_file", "template", "tokenizer", "random_seeds",
            "methods", "train", "eval", "output", "cache_dir", "device", "eval_base", "seed", "threads"}
POOL_KEYS = {"inputs", "on_error", "heldout", "heldout_seed", "decontaminate"}
METHOD_KEYS = {"steps", "preset", "signals", "models", "seeds"}
TASKS = ("mmlu", "gsm8k", "bbh", "ifeval", "heldout")
EVAL_DEFAULTS: dict[str, Any] = {
    "tasks": list(TASKS), "limit": 50, "data_dir": None, "paths": {}, "mmlu_shots": 0, "bbh_shots": 0,
    "max_new_tokens": {"gsm8k": 256, "bbh": 64, "ifeval": 384}, "batch_size": 8, "limits": {},
}


@dataclass
class MethodSpec:
    name: str
    recipe: dict[str, Any]    # steps / preset / signals / models for siftkit.config.build_config
    seeds: list[int]


@dataclass
class BenchConfig:
    inputs: list[Any]
    on_error: str
    heldout: int
    heldout_seed: int
    budgets: list[Any]
    base_model: str
    gguf_file: str | None
    template: str
    tokenizer: str | None
    random_seeds: list[int]
    methods: list[MethodSpec]
    train: dict[str, Any]
    eval: dict[str, Any]
    output: str
    cache_dir: str
    device: str
    eval_base: bool
    seed: int
    threads: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    # pool.decontaminate: drop pool records overlapping the eval tasks' items before selecting (default on);
    # False, or a mapping of decontaminate step parameters (ngram, threshold, ...; 'against' is the tasks').
    decontaminate: Any = True

    def all_methods(self) -> list[MethodSpec]:
        """The random baseline first, then the configured methods."""
        rnd = MethodSpec("random", {"steps": [{"select": "random"}]}, list(self.random_seeds))
        return [rnd] + self.methods


def _seeds(v: Any, where: str) -> list[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return list(range(_int(v, where, 1)))
    if isinstance(v, list) and v and all(isinstance(s, int) and not isinstance(s, bool) for s in v):
        if len(set(v)) != len(v):
            raise ConfigError(f"{where}: seeds repeat: {v}")
        return list(v)
    raise ConfigError(f"{where} must be a count (5) or a list of integer seeds ([0, 1, 2]), not {v!r}")


def _rel(path: Any, base: str) -> Any:
    from ..config import recipe_path

    return recipe_path(path, base) if base else path


def _resolve_paths(data: dict[str, Any], base: str) -> None:
    """Paths in a config file are relative to the file (hub names are left alone when no such path exists;
    URLs as they are), as in recipes (``config.recipe_path``): the pool's inputs, output, cache, model,
    eval files, and the ``prompts_file`` / ``rubrics_file`` of the methods' signals and presets and of
    ``eval.judge``."""
    from ..config import recipe_files

    for spec in (data.get("methods") or {}).values() if isinstance(data.get("methods"), dict) else []:
        if isinstance(spec, dict) and base:
            recipe_files(spec, base)
    pool = data.get("pool")
    if isinstance(pool, dict) and isinstance(pool.get("inputs"), list):
        for i, inp in enumerate(pool["inputs"]):
            if isinstance(inp, dict) and "path" in inp:
                inp["path"] = _rel(inp["path"], base)
            else:
                pool["inputs"][i] = _rel(inp, base)
    for key in ("output", "cache_dir"):
        data[key] = _rel(data.get(key), base)
    for key in ("base_model", "tokenizer"):
        cand = _rel(data.get(key), base)
        if isinstance(cand, str) and os.path.exists(cand):
            data[key] = cand
    ev = data.get("eval")
    if isinstance(ev, dict):
        ev["data_dir"] = _rel(ev.get("data_dir"), base)
        if isinstance(ev.get("paths"), dict):
            ev["paths"] = {k: _rel(v, base) for k, v in ev["paths"].items()}
        if isinstance(ev.get("judge"), dict) and "rubrics_file" in ev["judge"]:
            ev["judge"]["rubrics_file"] = _rel(ev["judge"]["rubrics_file"], base)
        if isinstance(ev.get("tasks"), list):   # testset:PATH names a file too
            ev["tasks"] = [f"testset:{_rel(t.split(':', 1)[1], base)}" if isinstance(t, str)
                           and t.startswith("testset:") else t for t in ev["tasks"]]


def load_bench_config(path: str) -> BenchConfig:
    from ..fs import is_remote, local_path
    from ..yamlfile import load_yaml_mapping

    if is_remote(path):
        raise ConfigError(f"bench config {path}: a bench config is read from local disk (copy it first); the "
                          f"pool's inputs in it may be URLs")
    path = local_path(path)
    data = load_yaml_mapping(path, "bench config")
    _resolve_paths(data, os.path.dirname(os.path.abspath(path)))
    return build_bench_config(data, path)


def _method(name: Any, spec: Any, src: str) -> MethodSpec:
    where = f"{src}: methods.{name}"
    if not isinstance(name, str) or not name or "/" in name or name == "random" or name == "base":
        raise ConfigError(f"{where}: a method name must be a non-empty string without '/', "
                          "other than 'random' and 'base' (reserved)")
    if isinstance(spec, str):
        spec = {"preset": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a recipe fragment like {{steps: [...]}} or {{preset: NAME}}")
    unknown = set(spec) - METHOD_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(METHOD_KEYS)}")
    if not spec.get("steps") and not spec.get("preset"):
        raise ConfigError(f"{where}: give 'steps' or 'preset'")
    seeds = _seeds(spec.get("seeds", 1), f"{where}.seeds")
    recipe = {k: copy.deepcopy(v) for k, v in spec.items() if k != "seeds"}
    from ..config import build_config

    build_config({"inputs": ["."], "budget": 1, **recipe}, where)   # validates steps, preset and params now
    return MethodSpec(name, recipe, seeds)


def build_bench_config(data: dict[str, Any], src: str = "bench config") -> BenchConfig:
    data = copy.deepcopy(data)
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{src}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(TOP_KEYS))}")
    pool = data.get("pool")
    if isinstance(pool, (str, list)):
        pool = {"inputs": pool if isinstance(pool, list) else [pool]}
    if not isinstance(pool, dict) or not pool.get("inputs"):
        raise ConfigError(f"{src}: 'pool' is required: {{inputs: [files or folders], heldout: 50}}")
    unknown = set(pool) - POOL_KEYS
    if unknown:
        raise ConfigError(f"{src}: pool: unknown key(s) {sorted(unknown)}; allowed: {sorted(POOL_KEYS)}")
    inputs = pool["inputs"] if isinstance(pool["inputs"], list) else [pool["inputs"]]
    on_error = pool.get("on_error", "raise")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"{src}: pool.on_error must be 'raise' or 'skip', not {on_error!r}")
    heldout = _int(pool.get("heldout", 0), f"{src}: pool.heldout")
    heldout_seed = _int(pool.get("heldout_seed", 0), f"{src}: pool.heldout_seed")
    if "budget" in data and "budgets" in data:
        raise ConfigError(f"{src}: give 'budget' or 'budgets', not both")
    budgets = data.get("budgets", data.get("budget"))
    if budgets is None:
        raise ConfigError(f"{src}: 'budget' is required (a count, 0.05 or '5%'), or 'budgets: [..]'")
    budgets = budgets if isinstance(budgets, list) else [budgets]
    from ..selectors.base import resolve_budget

    for i, b in enumerate(budgets):
        try:
            resolve_budget(b, 10**9)
        except ConfigError as e:
            raise ConfigError(f"{src}: budgets[{i}]: {e}") from None
    if len({str(b) for b in budgets}) != len(budgets):
        raise ConfigError(f"{src}: budgets repeat: {budgets}")
    base = data.get("base_model")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{src}: 'base_model' is required (hub name, local folder or .gguf file)")
    from ..scoring.templates import check_template

    template = data.get("template", "auto")
    try:
        check_template(template)
    except ConfigError as e:
        raise ConfigError(f"{src}: template: {e}") from None
    methods_raw = data.get("methods")
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise ConfigError(f"{src}: 'methods' is required: a mapping of name -> {{steps: [...]}} or {{preset: ..}}")
    methods = [_method(k, v, src) for k, v in methods_raw.items()]
    train = train_settings(data.get("train") or {}, src)
    ev = _eval(data.get("eval") or {}, src)
    device = data.get("device", "auto")
    if not isinstance(device, str):
        raise ConfigError(f"{src}: device must be a string ('auto', 'cpu', 'cuda', 'cuda:1')")
    output = data.get("output") or "bench_out"
    if not isinstance(output, str):
        raise ConfigError(f"{src}: output must be a folder path")
    cache_dir = data.get("cache_dir") or os.path.join(output, "cache")
    return BenchConfig(inputs=inputs, on_error=on_error, heldout=heldout, heldout_seed=heldout_seed,
                       budgets=budgets, base_model=base, gguf_file=data.get("gguf_file"), template=template,
                       tokenizer=data.get("tokenizer"),
                       random_seeds=_seeds(data.get("random_seeds", 5), f"{src}: random_seeds"),
                       methods=methods, train=train, eval=ev, output=output, cache_dir=cache_dir, device=device,
                       eval_base=bool(data.get("eval_base", True)), seed=_int(data.get("seed", 0), f"{src}: seed"),
                       threads=None if data.get("threads") is None else _int(data["threads"], f"{src}: threads", 1),
                       raw=data, decontaminate=_decontaminate(pool.get("decontaminate", True), src))


def _decontaminate(v: Any, src: str) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, dict) and "against" not in v:
        from ..registry import make, selector_class

        make(selector_class("decontaminate"), {"against": ["."], **v}, f"{src}: pool.decontaminate")
        return v
    raise ConfigError(f"{src}: pool.decontaminate must be true, false or a mapping of decontaminate settings "
                      f"(without 'against': the eval tasks' files are used), not {v!r}")


def _eval(e: Any, src: str) -> dict[str, Any]:
    if not isinstance(e, dict):
        raise ConfigError(f"{src}: eval must be a mapping")
    allowed = set(EVAL_DEFAULTS) | {"judge"}    # judge: no default (absent, old cells keep their fingerprint)
    unknown = set(e) - allowed
    if unknown:
        raise ConfigError(f"{src}: eval: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    out = copy.deepcopy(EVAL_DEFAULTS)
    mnt = {**out["max_new_tokens"], **(e.get("max_new_tokens") or {})}
    out.update(e)
    out["max_new_tokens"] = mnt
    tasks = out["tasks"]
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"{src}: eval.tasks must be a non-empty list of {', '.join(TASKS)} or lm_eval:NAME")
    for t in tasks:
        if not isinstance(t, str) or (t not in TASKS and not t.startswith(("lm_eval:", "testset:"))):
            raise ConfigError(f"{src}: eval.tasks: unknown task {t!r}; known: {', '.join(TASKS)}, lm_eval:NAME, "
                              "testset:PATH")
        if t.startswith("testset:") and not os.path.isfile(t.split(":", 1)[1]):
            raise ConfigError(f"{src}: eval.tasks: {t}: no such file (a testset.jsonl made by siftkit testset)")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"{src}: eval.tasks repeat: {tasks}")
    if out.get("judge") is not None:
        from .evals.testset import check_judge

        if not any(t.startswith("testset:") for t in tasks):
            raise ConfigError(f"{src}: eval.judge rates the answers of testset:PATH tasks; eval.tasks has none")
        out["judge"] = check_judge(out["judge"], f"{src}: eval.judge")
    else:
        out.pop("judge", None)
    if out["limit"] is not None:
        _int(out["limit"], f"{src}: eval.limit", 1)
    if not isinstance(out["limits"], dict):
        raise ConfigError(f"{src}: eval.limits maps task names to item counts ({{gsm8k: 20}})")
    for k, v in out["limits"].items():
        if k not in tasks:
            raise ConfigError(f"{src}: eval.limits.{k}: {k!r} is not in eval.tasks")
        if v is not None:
            _int(v, f"{src}: eval.limits.{k}", 1)
    for k in ("mmlu_shots", "bbh_shots"):
        _int(out[k], f"{src}: eval.{k}")
    _int(out["batch_size"], f"{src}: eval.batch_size", 1)
    for k, v in mnt.items():
        _int(v, f"{src}: eval.max_new_tokens.{k}", 1)
    if not isinstance(out["paths"], dict) or set(out["paths"]) - set(TASKS):
        raise ConfigError(f"{src}: eval.paths maps task names ({', '.join(TASKS[:4])}) to files or folders")
    return out
