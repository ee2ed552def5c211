"""Named pipelines from the literature, usable as ``--preset NAME`` or ``preset: NAME`` in a recipe.

A preset fills in ``steps`` (and signals) when the recipe does not give its own.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ConfigError

# Parameters of the judge signal that the LLM-judge presets take (``--param endpoint=URL``): see docs/judge.md.
JUDGE_OPTIONS = ("endpoint", "model", "rubric", "rubrics_file", "turns", "api", "backend", "structured",
                 "temperature", "seed", "max_tokens", "top_logprobs", "rationale_chars", "max_chars", "repair",
                 "api_key_env", "timeout", "max_retries", "backoff", "backoff_max", "concurrency", "rpm", "tpm",
                 "price_input", "price_output", "response_cache", "extra_body")


def judge_options(opts: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The judge signal of an LLM-judge preset, from its options (removed from ``opts``); it needs an
    ``endpoint`` (or ``backend: vllm`` and a ``model``)."""
    got = {k: opts.pop(k) for k in JUDGE_OPTIONS if k in opts}
    if not got.get("endpoint") and got.get("backend") != "vllm":
        raise ConfigError(f"{where}: give the judge's endpoint (--param endpoint=http://HOST:PORT/v1, or "
                          "endpoint: in the preset mapping), or backend: vllm with a model")
    return [{"name": "judge", **got}]


PRESETS: dict[str, dict[str, Any]] = {
    "random": {
        "doc": "Uniform random sample (the study's baseline).",
        "steps": [{"select": "random"}],
    },
    "longest": {
        "doc": "The longest responses in target-model tokens ('Long Is More for Alignment').",
        "steps": [{"dedup": "exact"}, {"select": "top", "by": "tokens_response"}],
    },
    "longest-per-source": {
        "doc": "Longest conversations within each source, proportional quotas (the study found this slightly "
               "better than global length).",
        "steps": [{"dedup": "exact"}, {"select": "stratified", "column": "source", "by": "tokens_total"}],
    },
    "alpagasus": {
        "doc": "AlpaGasus: an LLM judge rates each (request, answer) 0-5 (siftkit's alpagasus rubric), keep "
               "judge_overall >= 4.5 (min_value), then the budget by score. Give endpoint= (and model=, "
               "api_key_env=, prices...; see docs/judge.md).",
        "options": judge_options,
        "steps": [{"dedup": "exact"}, {"select": "top", "by": "judge_overall", "min_value": 4.5}],
    },
    "judge-kmeans": {
        "doc": "The study's quality + diversity recipe with an LLM judge: k-means (1,000 clusters) and the "
               "highest judge_overall in each cluster, quotas proportional to cluster size. Give endpoint=.",
        "options": judge_options,
        "steps": [{"dedup": "exact"},
                  {"select": "kmeans", "by": "judge_overall", "within": "top", "quota": "proportional", "k": 1000}],
    },
}


def _all_presets() -> dict[str, dict[str, Any]]:
    from .presets_published import PRESETS as PUBLISHED

    out = dict(PRESETS)
    out.update(PUBLISHED)
    try:  # presets contributed by optional selector modules (e.g. length + k-means)
        from .selectors.kmeans import PRESETS as KMEANS_PRESETS  # type: ignore[attr-defined]

        for name, steps in KMEANS_PRESETS.items():
            out.setdefault(name, steps if isinstance(steps, dict) else {"steps": steps})
    except Exception:  # noqa: BLE001 - optional module missing or its deps absent
        pass
    return out


def preset_names() -> list[str]:
    return sorted(_all_presets())


def expand_preset(data: dict[str, Any], source: str) -> dict[str, Any]:
    presets = _all_presets()
    name = data.pop("preset")
    overrides: dict[str, Any] = {}
    # {name: length-kmeans, k: 200}: parameters for the preset's select step, except those a preset takes
    # itself through its "options" function (which removes them from the mapping and returns signals)
    if isinstance(name, dict):
        overrides = {k: v for k, v in name.items() if k != "name"}
        name = name.get("name")
    if name not in presets:
        raise ConfigError(f"{source}: unknown preset {name!r}; known: {', '.join(sorted(presets))}")
    p = copy.deepcopy(presets[name])
    preset_signals = list(p.get("signals", []))
    if p.get("options") is not None:   # preset-level options (e.g. cherry-ifd's model): consumed here
        preset_signals += p["options"](overrides, f"{source}: preset {name}")
    user_steps = data.get("steps") or []
    # User filters/dedups run before the preset's own steps; a user select step replaces the preset's.
    if any(isinstance(s, dict) and ("select" in s) for s in user_steps):
        raise ConfigError(f"{source}: preset {name!r} already has a select step; drop yours or the preset")
    data["steps"] = list(user_steps) + [s for s in p["steps"]
                                        if not (any("dedup" in u for u in user_steps if isinstance(u, dict))
                                                and "dedup" in s)]
    for s in data["steps"]:
        if isinstance(s, dict) and "select" in s:
            s.update(overrides)
            overrides = {}
    if overrides:
        raise ConfigError(f"{source}: preset {name!r} has no select step to take {sorted(overrides)}")
    for s in preset_signals:
        data.setdefault("signals", []).append(s)
    return data
