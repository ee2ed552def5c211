"""Built-in evaluators, one file per task: ``load(ev, seed) -> items`` and ``run(em, items, ev) -> (score,
per-item records)``. Scoring functions are pure and unit-tested on hand-made items."""

from __future__ import annotations

HIGHER_IS_BETTER = {"mmlu": True, "gsm8k": True, "bbh": True, "ifeval": True, "heldout": False}
