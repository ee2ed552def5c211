"""Recipes of the generation commands (``siftkit evolve --recipe``, ``siftkit testset --recipe``): one YAML
file, checked before any request is sent; an error names the file and the key (``r.yaml: testset.max_tokens
must be an integer >= 1, not 'many'``), exit 2.

Shape (relative paths are relative to the recipe file, ``config.recipe_path``; ``prompts_file`` too, and
it may be a URL; flags given on the command line stay relative to the current folder)::

    inputs: [docs/]                      # seeds (evolve) or documents (testset)
    output: out/testset                  # or {dir: out/testset}; evolve also takes format, file_format
    cache_dir: .siftkit                  # default: .siftkit beside the recipe
    on_error: skip                       # evolve only (how unreadable seed records are handled)
    testset: {endpoint: "http://127.0.0.1:8080/v1", max_chunks: 50}      # or evolve: {...}
"""

from __future__ import annotations

import os
from typing import Any

from ..config import load_recipe, recipe_path
from ..errors import ConfigError
from ..fs import local_path

# value kinds: "int" (>= 0), "int1" (>= 1), "num" (>= 0), "pos" (> 0), "unit" (0..1), "str", "bool",
# "map" (a mapping), "weights" (a mapping of names to numbers >= 0), "strs" (a list of strings),
# "path" (a string, relative to the recipe); a trailing "?" also allows null
EVOLVE_PARAMS = {"endpoint": "str", "model": "str", "api_key_env": "str?", "target": "str", "rounds": "int1",
                 "operations": "strs?", "temperature": "num", "seed": "int", "max_tokens": "int1",
                 "min_chars": "int", "max_chars": "int", "prompts_file": "path?", "concurrency": "int1",
                 "timeout": "pos", "max_retries": "int", "include_seeds": "bool", "extra": "map"}
TESTSET_PARAMS = {"endpoint": "str", "model": "str", "api_key_env": "str?", "mix": "weights?",
                  "embedding": "map?", "chunk_chars": "int1", "min_chunk_chars": "int", "max_chunks": "int1?",
                  "text_field": "str", "max_tokens": "int1", "max_question_words": "int1",
                  "dedup_threshold": "unit", "seed": "int", "temperature": "num", "prompts_file": "path?",
                  "concurrency": "int1", "max_retries": "int", "timeout": "pos"}
COMMANDS = {"evolve": (EVOLVE_PARAMS, ("dir", "format", "file_format"), True),
            "testset": (TESTSET_PARAMS, ("dir",), False)}


def _bad(where: str, what: str, v: Any) -> ConfigError:
    return ConfigError(f"{where} must be {what}, not {v!r}")


def check_value(v: Any, kind: str, where: str) -> Any:
    if kind.endswith("?"):
        if v is None:
            return None
        kind = kind[:-1]
    is_int = isinstance(v, int) and not isinstance(v, bool)
    is_num = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind in ("int", "int1"):
        lo = 1 if kind == "int1" else 0
        if not is_int or v < lo:
            raise _bad(where, f"an integer >= {lo}", v)
    elif kind == "num" and not (is_num and v >= 0):
        raise _bad(where, "a number >= 0", v)
    elif kind == "pos" and not (is_num and v > 0):
        raise _bad(where, "a number > 0", v)
    elif kind == "unit" and not (is_num and 0 <= v <= 1):
        raise _bad(where, "a number from 0 to 1", v)
    elif kind in ("str", "path") and not (isinstance(v, str) and v):
        raise _bad(where, "a non-empty string", v)
    elif kind == "bool" and not isinstance(v, bool):
        raise _bad(where, "true or false", v)
    elif kind == "map" and not isinstance(v, dict):
        raise _bad(where, "a mapping", v)
    elif kind == "weights":
        if not isinstance(v, dict) or not v:
            raise _bad(where, "a mapping of names to weights", v)
        for k, w in v.items():
            check_value(w, "num", f"{where}.{k}")
    elif kind == "strs" and not (isinstance(v, list) and all(isinstance(x, str) and x for x in v)):
        raise _bad(where, "a list of strings", v)
    return v


def check_params(params: dict[str, Any], spec: dict[str, str], where: str) -> dict[str, Any]:
    """Known keys with values of the right kind; errors name ``where.key``."""
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(spec))}")
    for k, v in params.items():
        check_value(v, spec[k], f"{where}.{k}")
    return params


def load_generate_recipe(path: str, command: str, overrides: dict[str, Any] | None = None
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the recipe's top-level settings: inputs, output dir and keys, cache_dir, on_error; the command's
    parameters with ``overrides`` applied), checked."""
    spec, out_keys, has_on_error = COMMANDS[command]
    data = load_recipe(path)
    top = ("inputs", "output", "cache_dir") + (("on_error",) if has_on_error else ()) + (command,)
    unknown = sorted(set(data) - set(top))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} in a {command} recipe; known: "
                          f"{', '.join(top)}")
    inputs = data.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs or not isinstance(inputs, list):
        raise ConfigError(f"{path}: inputs: a {command} recipe needs a list of files or folders")
    out = data.get("output")
    if not isinstance(out, dict) or not isinstance(out.get("dir"), str) or not out["dir"]:
        raise ConfigError(f"{path}: output: a {command} recipe needs output: FOLDER (or {{dir: FOLDER}})")
    bad = sorted(set(out) - set(out_keys))
    if bad:
        raise ConfigError(f"{path}: output: unknown key(s) {', '.join(bad)}; known: {', '.join(out_keys)}")
    params = data.get(command)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: {command} must be a mapping of parameters")
    base = os.path.dirname(os.path.abspath(local_path(path)))
    if "prompts_file" in params:    # the recipe's own is relative to the recipe; an override (a CLI flag) is not
        params = {**params, "prompts_file": recipe_path(params["prompts_file"], base)}
    params = check_params({**params, **(overrides or {})}, spec, f"{path}: {command}")
    if data.get("on_error", "raise") not in ("raise", "skip"):
        raise _bad(f"{path}: on_error", "'raise' or 'skip'", data["on_error"])
    if data.get("cache_dir") is not None and not isinstance(data["cache_dir"], str):
        raise _bad(f"{path}: cache_dir", "a folder path", data["cache_dir"])
    top_out = {"inputs": inputs, "output": out, "on_error": data.get("on_error", "raise"),
               "cache_dir": data.get("cache_dir") or os.path.join(base, ".siftkit")}
    return top_out, params
