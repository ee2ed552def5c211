"""Published pipelines as presets, in the ``{"doc", "steps", "signals"}`` shape of ``siftkit.presets``.

Parameters of a preset's select step can be overridden in a recipe (``preset: {name: deita, threshold:
0.85}``); its signals are appended after the recipe's own, so a recipe that lists e.g. its own ``lm_loss``
(another model) provides the columns first. Presets whose signal needs *your* model (Cherry IFD scores
with the base model you will fine-tune) list no signal: the run then stops with a clear "no signal
provides column ..." until you add one. See docs/published.md for what is faithful in each.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "cherry-ifd": {
        "doc": "Cherry LLM: drop IFD > 1, then the highest IFD (loss ratio s(y|x)/s(y)). List an lm_loss signal "
               "with your base model under 'signals'. The optional brief-experience model is not built here: "
               "score with an already briefly fine-tuned model to reproduce it.",
        "steps": [{"dedup": "exact"}, {"step": "ifd-filter", "column": "lm_ifd"},
                  {"select": "top", "by": "lm_ifd"}],
    },
    "superfiltering": {
        "doc": "Superfiltering: IFD (perplexity ratio) from a small model (GPT-2 124M), drop IFD > 1, take the "
               "highest.",
        "signals": [{"name": "lm_loss", "model": "gpt2"}],
        "steps": [{"dedup": "exact"}, {"step": "ifd-filter", "column": "lm_ifd_ppl"},
                  {"select": "top", "by": "lm_ifd_ppl"}],
    },
    "superfiltering-d": {
        "doc": "Superfiltering-D: small-model IFD, drop IFD > 1, keep the top 20% IFD band, then facility "
               "location over MiniLM embeddings of that band (the 20% band is siftkit's choice).",
        "signals": [{"name": "lm_loss", "model": "gpt2"}],
        "steps": [{"dedup": "exact"}, {"step": "ifd-filter", "column": "lm_ifd_ppl"},
                  {"filter": "lm_ifd_ppl >= quantile(lm_ifd_ppl, 0.8)"},
                  {"select": "facility-location",
                   "embedding": {"backend": "sentence-transformers", "segment": "query"}}],
    },
    "deita": {
        "doc": "DEITA: evol score (sum over turns of complexity x quality, DEITA's released scorers), then the "
               "score-first repr filter (cosine <= 0.9 to everything kept). DEITA embeds with its fine-tuned "
               "model; the default here is static embeddings: override 'embedding' to match.",
        "signals": [{"name": "deita"}],
        "steps": [{"dedup": "exact"}, {"select": "repr-filter", "by": "deita_evol", "threshold": 0.9}],
    },
    "quality-kmeans": {
        "doc": "The study's quality + diversity recipe: k-means (1,000 clusters), the top-scored in each "
               "cluster, quotas proportional to cluster size. Ranks by 'by' (default lm_loss, the study's "
               "cross-entropy, highest first): override with any score column and list its signal.",
        "steps": [{"dedup": "exact"},
                  {"select": "kmeans", "by": "lm_loss", "within": "top", "quota": "proportional", "k": 1000}],
    },
    "instag": {
        "doc": "InsTag: tags per query from the InsTagger model, complexity-first coverage sampling (override "
               "'tags' to use your own column of JSON tag lists).",
        "signals": [{"name": "instag", "model": "OFA-Sys/InsTagger"}],
        "steps": [{"dedup": "exact"}, {"select": "instag-coverage"}],
    },
    "zip": {
        "doc": "ZIP (Entropy Law): greedy minimisation of the selected set's zlib-9 compression ratio, "
               "k1/k2/k3 = 10,000/200/100, fast mode (same picks as the faithful one).",
        "steps": [{"dedup": "exact"}, {"select": "zip", "mode": "fast"}],
    },
    "rds-plus": {
        "doc": "RDS+: position-weighted mean hidden states of a causal LM, cosine to target-task examples, "
               "round-robin. Give 'targets' (file/folder of target conversations) and 'model'.",
        "steps": [{"dedup": "exact"}, {"select": "rds"}],
    },
}
