"""``diverseevol``: DiverseEvol's iterative schedule (Wu et al., 2023) on k-center greedy.

An initial random set (``initial_size``, 1,000 in the paper), then rounds that each add ``round_size``
(3,000 in the paper) points by k-center greedy (farthest from everything selected so far) until the
budget. In the paper the pool is re-embedded after every round with a model fine-tuned on the current
selection; here that is the ``reembed`` hook (Python API only): a callable receiving the pool rows selected
so far and returning new embeddings for the candidates (len(candidates) x d), e.g. by fine-tuning with
``siftkit.bench.train`` and embedding with the result.

Without ``reembed`` (recipes, CLI) the embeddings are fixed: the no-retraining mode. Since k-center greedy
depends only on the selected set, the rounds are then exactly one k-center run started from the random
initial set (tested); the schedule matters only when the representation changes between rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.vectors import normalize_spec, rows_f32
from .base import SelectionContext, Selector, StepResult
from .kcenter import k_center_greedy

Reembed = Callable[[np.ndarray], np.ndarray]


def diverse_evol(x: np.ndarray, budget: int, initial: np.ndarray, round_size: int,
                 reembed: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, int]:
    """Positions into ``x`` in selection order (``initial`` first) and the number of rounds run.
    ``reembed(selected_positions)`` returns the new ``x`` after each round (before the next one)."""
    n = len(x)
    budget = min(budget, n)
    selected = [int(i) for i in initial[:budget]]
    rounds = 0
    while len(selected) < budget:
        if rounds and reembed is not None:
            x = np.asarray(reembed(np.asarray(selected, dtype=np.int64)), dtype=np.float32)
            if x.shape[0] != n:
                raise ConfigError(f"diverseevol: reembed returned {x.shape[0]} rows, expected {n}")
        rest = np.setdiff1d(np.arange(n), np.asarray(selected, dtype=np.int64))
        init = x[selected] if selected else None
        take = min(round_size, budget - len(selected))
        picks = k_center_greedy(x[rest], take, first=0 if init is None else None, initial=init)
        selected += rest[picks].tolist()
        rounds += 1
    return np.asarray(selected, dtype=np.int64), rounds


@register_selector("diverseevol")
class DiverseEvolSelect(Selector):
    role = "select"

    def __init__(self, initial_size: int = 1000, round_size: int = 3000,
                 embedding: dict[str, Any] | str | None = None, normalize: bool = True,
                 reembed: Reembed | None = None):
        if int(initial_size) < 0 or int(round_size) < 1:
            raise ConfigError(f"diverseevol: need initial_size >= 0 and round_size >= 1, got "
                              f"{initial_size}, {round_size}")
        if reembed is not None and not callable(reembed):
            raise ConfigError("diverseevol: reembed must be a callable (Python API)")
        self.initial_size, self.round_size = int(initial_size), int(round_size)
        self.embedding, self.normalize, self.reembed = normalize_spec(embedding), bool(normalize), reembed

    def config(self) -> dict[str, Any]:
        return {"initial_size": self.initial_size, "round_size": self.round_size, "embedding": self.embedding,
                "normalize": self.normalize, "reembed": getattr(self.reembed, "__name__", None)}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("diverseevol is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        x = rows_f32(ctx.embeddings(self.embedding), candidates, normalize=self.normalize)
        rng = ctx.rng("diverseevol")
        init = rng.choice(len(candidates), min(self.initial_size, budget, len(candidates)), replace=False)
        hook = None
        if self.reembed is not None:
            user_hook = self.reembed

            def hook(sel: np.ndarray) -> np.ndarray:
                progress.info(f"diverseevol: re-embedding after {len(sel):,} selected")
                return rows_f32(np.asarray(user_hook(candidates[sel])), np.arange(len(candidates)),
                                normalize=self.normalize)

        pos, rounds = diverse_evol(x, budget, init, self.round_size, hook)
        kept = candidates[pos]
        return StepResult(kept=kept, dropped={"over_budget": int(len(candidates) - len(kept))},
                          details={"initial": len(init), "rounds": rounds,
                                   "retrained": self.reembed is not None})
