"""Named pipelines (the study's baselines and published methods): ``--preset NAME`` or ``preset: NAME``.

One registry, ``PRESETS``: each entry has its ``doc`` (one paragraph, shown by ``siftkit list presets``), its
``ref`` (the paper), its ``steps`` and, where it needs them, ``signals`` and an ``options`` function. A preset
fills in ``steps`` (and signals) when the recipe does not give its own. Parameters of a preset's select step
can be overridden in a recipe (``preset: {name: deita, threshold: 0.85}``); its signals are appended after the
recipe's own, so a recipe that lists e.g. its own ``lm_loss`` (another model) provides the columns first.
Presets whose signal needs *your* model (Cherry IFD scores with the base model you will fine-tune) list no
signal: the run then stops with a clear "no signal provides column ..." until you add one, or give the
preset its ``model`` option (``cherry-ifd``: ``preset: {name: cherry-ifd, model: ..., brief_experience:
{...}}``; a preset's ``options`` function takes such preset-level keys). See docs/published.md for what is
faithful in each.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ConfigError

CHERRY_OPTIONS = ("model", "template", "lm_loss", "brief_experience")
STUDY_OPTIONS = ("model", "template", "lm_loss")


def cherry_options(opts: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """``cherry-ifd`` options (removed from ``opts``): ``model`` (the base; adds the lm_loss signal),
    ``template`` (default ``cherry``: Cherry's prompt), ``lm_loss`` (more lm_loss parameters) and
    ``brief_experience`` (score IFD with Cherry's briefly fine-tuned model built from the pool; see
    ``siftkit.derive.cherry``)."""
    return _lm_options(opts, where, CHERRY_OPTIONS, "cherry")


def study_options(opts: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """``quality-kmeans`` options: ``model`` adds the study's cross-entropy (lm_loss with its prompt, the
    ``study`` template, unless ``template`` says otherwise); ``lm_loss``: more lm_loss parameters."""
    return _lm_options(opts, where, STUDY_OPTIONS, "study")


def _lm_options(opts: dict[str, Any], where: str, keys: tuple[str, ...], template: str) -> list[dict[str, Any]]:
    got = {k: opts.pop(k) for k in keys if k in opts}
    if not got:
        return []
    if not isinstance(got.get("model"), str) or not got["model"]:
        raise ConfigError(f"{where}: {', '.join(sorted(got))} need(s) model: <your base model> "
                          "(hub name, folder or .gguf file)")
    extra = got.get("lm_loss") or {}
    if not isinstance(extra, dict) or {"name", "model", "brief_experience"} & set(extra):
        raise ConfigError(f"{where}: lm_loss must be a mapping of further lm_loss parameters "
                          "(max_length, dtype, device, ...), without name, model or brief_experience")
    spec: dict[str, Any] = {"name": "lm_loss", **extra, "model": got["model"],
                            "template": got.get("template", extra.get("template", template))}
    if got.get("brief_experience") not in (None, False):
        spec["brief_experience"] = got["brief_experience"]
    return [spec]


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


# Superfiltering's scoring: GPT-2, its prompt ("{instruction}\n" + response) and its condition B (the response
# alone, first token unscored; A scores every response token): docs/published.md
SUPERFILTERING_LM: dict[str, Any] = {"name": "lm_loss", "model": "gpt2", "template": "superfiltering",
                                     "ifd_tokens": "reference"}

PRESETS: dict[str, dict[str, Any]] = {
    "random": {
        "ref": "Xia et al., 2024, Rethinking Data Selection at Scale (the random baseline)",
        "doc": "Uniform random sample (the study's baseline).",
        "steps": [{"select": "random"}],
    },
    "longest": {
        "ref": "Zhao et al., 2024, Long Is More for Alignment",
        "doc": "The longest responses in target-model tokens ('Long Is More for Alignment').",
        "steps": [{"dedup": "exact"}, {"select": "top", "by": "tokens_response"}],
    },
    "longest-per-source": {
        "ref": "Xia et al., 2024, Rethinking Data Selection at Scale",
        "doc": "Longest conversations within each source, proportional quotas (the study found this slightly "
               "better than global length).",
        "steps": [{"dedup": "exact"}, {"select": "stratified", "column": "source", "by": "tokens_total"}],
    },
    "cherry-ifd": {
        "ref": "Li et al., 2023, From Quantity to Quality (Cherry LLM, IFD)",
        "doc": "Cherry LLM: drop IFD > 1, then the highest IFD (loss ratio s(y|x)/s(y)). Give model: <your base "
               "model> (scored with Cherry's prompt, template 'cherry'; or list an lm_loss signal yourself); "
               "brief_experience: {clusters: 100, per_cluster: 10, "
               "train: {...}} first fine-tunes the base briefly on a cluster-balanced, mid-perplexity sample "
               "and scores IFD with that model (siftkit.cherry).",
        "options": cherry_options,
        "steps": [{"dedup": "exact"}, {"step": "ifd-filter", "column": "lm_ifd"},
                  {"select": "top", "by": "lm_ifd"}],
    },
    "superfiltering": {
        "ref": "Li et al., 2024, Superfiltering: Weak-to-Strong Data Filtering",
        "doc": "Superfiltering: IFD (perplexity ratio) from a small model (GPT-2 124M) with its prompt "
               "(template 'superfiltering', condition B = the response alone, ifd_tokens 'reference'), drop IFD > 1, "
               "take the highest.",
        "signals": [SUPERFILTERING_LM],
        "steps": [{"dedup": "exact"}, {"step": "ifd-filter", "column": "lm_ifd_ppl"},
                  {"select": "top", "by": "lm_ifd_ppl"}],
    },
    "superfiltering-d": {
        "ref": "Li et al., 2024, Superfiltering: Weak-to-Strong Data Filtering (diversity variant)",
        "doc": "Superfiltering-D: small-model IFD, drop IFD > 1, keep the top 20% IFD band, then facility "
               "location over MiniLM embeddings of the whole conversation with the reference's kernel "
               "exp(-||x - y|| / d): dense up to 10,000 candidates, above on a kNN graph whose k is measured "
               "on a sample to stay within 0.1% of the dense objective (the 20% band is siftkit's choice).",
        "signals": [SUPERFILTERING_LM],
        "steps": [{"dedup": "exact"}, {"step": "ifd-filter", "column": "lm_ifd_ppl"},
                  {"filter": "lm_ifd_ppl >= quantile(lm_ifd_ppl, 0.8)"},
                  {"select": "facility-location", "kernel": "euclidean",
                   "embedding": {"backend": "sentence-transformers", "segment": "conversation"}}],
    },
    "deita": {
        "ref": "Liu et al., 2024, What Makes Good Data for Alignment? (DEITA)",
        "doc": "DEITA: evol score (sum over turns of complexity x quality, DEITA's released scorers), then the "
               "score-first repr filter (cosine <= 0.9 to everything kept). DEITA embeds with its fine-tuned "
               "model; the default here is static embeddings: override 'embedding' to match.",
        "signals": [{"name": "deita"}],
        "steps": [{"dedup": "exact"}, {"select": "repr-filter", "by": "deita_evol", "threshold": 0.9}],
    },
    "quality-kmeans": {
        "ref": "Xia et al., 2024, Rethinking Data Selection at Scale",
        "doc": "The study's quality + diversity recipe: k-means (1,000 clusters), the top-scored in each "
               "cluster, quotas proportional to cluster size. Ranks by 'by' (default lm_loss, the study's "
               "cross-entropy, highest first): give model: <base model> (scored with the study's prompt, template "
               "'study'), or override 'by' with any score column and list its signal.",
        "options": study_options,
        "steps": [{"dedup": "exact"},
                  {"select": "kmeans", "by": "lm_loss", "within": "top", "quota": "proportional", "k": 1000}],
    },
    "instag": {
        "ref": "Lu et al., 2024, #InsTag: Instruction Tagging",
        "doc": "InsTag: tags per query from the InsTagger model, complexity-first coverage sampling (override "
               "'tags' to use your own column of JSON tag lists).",
        "signals": [{"name": "instag", "model": "OFA-Sys/InsTagger"}],
        "steps": [{"dedup": "exact"}, {"select": "instag-coverage"}],
    },
    "zip": {
        "ref": "Yin et al., 2024, Entropy Law: The Story Behind Data Compression and LLM Performance (ZIP)",
        "doc": "ZIP (Entropy Law): greedy minimisation of the selected set's zlib-9 compression ratio, "
               "k1/k2/k3 = 10,000/200/100, fast mode (same picks as recompressing; mode 'faithful' is the "
               "published code's rule, which discards k2 - k3 stage-2 winners per round).",
        "steps": [{"dedup": "exact"}, {"select": "zip", "mode": "fast"}],
    },
    "rds-plus": {
        "ref": "Ivison et al., 2025, Large-Scale Data Selection for Instruction Tuning (RDS+)",
        "doc": "RDS+: position-weighted mean hidden states of a causal LM, cosine to target-task examples, "
               "round-robin. Give 'targets' (file/folder of target conversations) and 'model'.",
        "steps": [{"dedup": "exact"}, {"select": "rds"}],
    },
    "less": {
        "ref": "Xia et al., 2024, LESS: Selecting Influential Data for Targeted Instruction Tuning",
        "doc": "LESS: LoRA warm-up on a random 5% (4 epochs, one checkpoint each), per-sample gradients as Adam "
               "directions, Rademacher projection to 8192-d, lr-weighted cosine to target-task gradients (mean "
               "within a task, max across tasks). Give 'targets' and 'model'.",
        "steps": [{"dedup": "exact"}, {"select": "less"}],
    },
    "length-kmeans": {
        "ref": "Xia et al., 2024, Rethinking Data Selection at Scale (the recommended recipe)",
        "doc": "The study's recommended recipe: k-means (1,000 clusters), then the longest conversations "
               "(tokens_total) in each cluster, quotas proportional to cluster size.",
        "steps": [{"dedup": "exact"},
                  {"select": "kmeans", "by": "tokens_total", "within": "top", "quota": "proportional", "k": 1000}],
    },
    "alpagasus": {
        "ref": "Chen et al., 2024, AlpaGasus: Training a Better Alpaca with Fewer Data",
        "doc": "AlpaGasus: an LLM judge rates each (request, answer) 0-5 (siftkit's alpagasus rubric), keep "
               "judge_overall >= 4.5 (min_value), then the budget by score. Give endpoint= (and model=, "
               "api_key_env=, prices...; see docs/judge.md).",
        "options": judge_options,
        "steps": [{"dedup": "exact"}, {"select": "top", "by": "judge_overall", "min_value": 4.5}],
    },
    "judge-kmeans": {
        "ref": "Xia et al., 2024, Rethinking Data Selection at Scale (quality + diversity; an LLM judge as the score)",
        "doc": "The study's quality + diversity recipe with an LLM judge: k-means (1,000 clusters) and the "
               "highest judge_overall in each cluster, quotas proportional to cluster size. Give endpoint=.",
        "options": judge_options,
        "steps": [{"dedup": "exact"},
                  {"select": "kmeans", "by": "judge_overall", "within": "top", "quota": "proportional", "k": 1000}],
    },
    "clean": {
        "ref": "Rae et al., 2021, Scaling Language Models: Methods, Analysis & Insights from Training Gopher "
               "(quality and repetition rules); Raffel et al., 2020 (C4 line rules)",
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
    return dict(PRESETS)


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
    own = _columns_of(data.get("signals") or [])
    for s in preset_signals:
        cols = _columns_of([s])
        if own and cols and cols <= own:   # the recipe's own signal (e.g. lm_loss on another model) gives them
            continue
        data.setdefault("signals", []).append(s)
    return data


def _columns_of(specs: list[Any]) -> set[str]:
    """The columns the signal specs produce (built, not computed: no model is loaded); a spec that does not
    build as a plain signal (an inline derived model, a typo preflight will name) adds none."""
    from .signals.compute import build_signal

    out: set[str] = set()
    for spec in specs:
        try:
            out |= set(build_signal(spec).columns())
        except ConfigError:
            continue
    return out
