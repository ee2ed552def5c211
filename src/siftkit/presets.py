"""Named pipelines from the literature, usable as ``--preset NAME`` or ``preset: NAME`` in a recipe.

A preset fills in ``steps`` (and signals) when the recipe does not give its own.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ConfigError

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
    "clean": {
        "doc": "Cleaning rules before selection (docs/cleaning.md): Gopher quality and repetition bounds on the "
               "response (relaxed where they drop math and code), placeholders, refusals and 'as an AI' "
               "replies; one filter step per rule, so every drop is counted by rule; then a seeded random "
               "sample of the budget (--budget 100% keeps every clean record).",
        "steps": [
            {"filter": "words_response >= 1"},
            {"filter": "words_response <= 100000"},
            {"filter": "words_response < 50 or cjk_frac_response > 0.3 or 2 <= mean_word_len_response <= 12"},
            {"filter": "words_response < 50 or symbol_ratio_response <= 0.1"},
            {"filter": "ellipsis_frac_response <= 0.3"},
            {"filter": "words_response < 50 or alpha_frac_response >= 0.25"},
            {"filter": "dup_line_frac_response <= 0.3 and dup_para_frac_response <= 0.3 and "
                       "dup_line_char_frac_response <= 0.2 and dup_para_char_frac_response <= 0.2"},
            {"filter": "words_response < 50 or (top_2gram_frac_response <= 0.4 and top_3gram_frac_response <= 0.36"
                       " and top_4gram_frac_response <= 0.32)"},
            {"filter": "words_response < 50 or (dup_5gram_frac_response <= 0.3 and dup_6gram_frac_response <= 0.28"
                       " and dup_7gram_frac_response <= 0.26 and dup_8gram_frac_response <= 0.24 and "
                       "dup_9gram_frac_response <= 0.22 and dup_10gram_frac_response <= 0.2)"},
            {"filter": "placeholder_query == 0"},
            {"filter": "placeholder_response == 0"},
            {"filter": "refusal_response == 0"},
            {"filter": "as_ai_response == 0"},
            {"select": "random"},
        ],
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
