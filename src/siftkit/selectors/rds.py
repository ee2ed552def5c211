"""``rds``: RDS+ (Ivison et al., 2025), targeted selection by representation similarity, round-robin.

Representations: by default the position-weighted mean of a causal LM's last hidden states over the whole
conversation (the ``embedding`` signal, ``backend="causal-lm"``, ``pooling="weighted-mean"``,
``segment="conversation"``; give ``model=``, or a full ``embedding`` spec). Target examples are
conversations read with ``siftkit.io.read_pool`` from ``targets`` (a file or folder, or a list); their task
is the ``source`` of each target input (one task per file by default) or the column named by ``task_by``.

Scores: cosine similarity between every candidate and every target example, computed in chunks of
``chunk`` candidates (chunk x Q float32 at a time); only each target example's best ``k`` candidates are
kept (numpy arrays of Q x k merged chunk by chunk: no dense N x Q matrix is stored). ``k`` starts at
``2 * ceil(budget / Q) + 16`` and doubles if a target example runs out of unselected candidates.

Selection, ``rule="balanced"`` (the default, siftkit's): tasks take turns; inside a task its target
examples take turns; at its turn an example takes its most similar not-yet-selected candidate. Stops at
exactly ``budget`` (every task gets the same share, +-1).

``rule="reference"`` reproduces the released scripts. One task: the examples take turns, each taking its
next-ranked candidate, and an example whose next candidate is already taken loses its turn (its pointer
still moves on). Several tasks (the aggregated script): each candidate is scored per task by its max
cosine over that task's examples, each task ranks the candidates by that score, and the tasks take turns
in the same way (a task whose next candidate is already taken loses its turn). Ties: lower row first.
Output order is the pick order in both rules.

Memory: the candidates' rows are one float32 copy when it fits ``SIFTKIT_VECTOR_MEMORY`` (4 GiB); beyond,
each ``chunk`` of candidates is read from the float16 memory-map and converted as the scores reach it
(``signals.vectors.candidate_rows``; a retry with a larger k reads them again), with the same picks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..registry import make, register_selector, signal_class
from ..signals.segments import flatten
from ..signals.vectors import RowsF32, candidate_rows, normalize_spec, rows_f32
from .base import SelectionContext, Selector, StepResult, read_targets


def topk_per_target(x: np.ndarray | RowsF32, t: np.ndarray, k: int,
                    chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``t`` (Q x d), the ``k`` rows of ``x`` (N x d: an array, or a ``RowsF32`` view read
    ``chunk`` rows at a time) with the highest inner product:
    (indices Q x k, values Q x k), best first, ties broken by the lower row index."""
    n, q = len(x), len(t)
    k = min(k, n)
    best_v = np.full((q, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((q, 0), dtype=np.int64)
    for s in range(0, n, chunk):
        sims = np.asarray(t @ np.asarray(x[s:s + chunk], dtype=np.float32).T, dtype=np.float32)   # q x c
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < sims.shape[1] else \
            np.broadcast_to(np.arange(sims.shape[1]), (q, sims.shape[1]))
        v = np.take_along_axis(sims, part, axis=1)
        cat_v = np.concatenate([best_v, v], axis=1)
        cat_i = np.concatenate([best_i, part + s], axis=1)
        # sort by (-value, index) and keep k
        order = np.lexsort((cat_i, -cat_v), axis=1)[:, :k] if cat_v.shape[1] else cat_i
        best_v = np.take_along_axis(cat_v, order, axis=1)
        best_i = np.take_along_axis(cat_i, order, axis=1)
    return best_i, best_v


def round_robin(ranked: np.ndarray, task_of: np.ndarray, budget: int, n: int) -> np.ndarray | None:
    """Round-robin picks from per-target ranked lists (Q x k row indices into 0..n-1). ``None`` when some
    example exhausts its list before the budget is met (the caller retries with a larger k)."""
    budget = min(budget, n)
    tasks = list(dict.fromkeys(task_of.tolist()))
    members = {tk: np.flatnonzero(task_of == tk).tolist() for tk in tasks}
    turn = {tk: 0 for tk in tasks}
    ptr = np.zeros(len(ranked), dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    picks: list[int] = []
    k = ranked.shape[1]
    while len(picks) < budget:
        for tk in tasks:
            if len(picks) == budget:
                break
            ex = members[tk][turn[tk] % len(members[tk])]
            turn[tk] += 1
            p = ptr[ex]
            while p < k and taken[ranked[ex, p]]:
                p += 1
            if p == k:
                return None
            ptr[ex] = p + 1
            taken[ranked[ex, p]] = True
            picks.append(int(ranked[ex, p]))
    return np.asarray(picks, dtype=np.int64)


RULES = ("balanced", "reference")


def turns_losing(ranked: np.ndarray, budget: int, n: int) -> np.ndarray | None:
    """The reference's round-robin over ranked lists (P x k rows into 0..n-1, one list per participant: a
    target example or a task): in round r each participant takes its rank-r row unless that row is already
    taken (then its turn is lost). ``None`` when the lists end before the budget is met."""
    budget = min(budget, n)
    taken = np.zeros(n, dtype=bool)
    picks: list[int] = []
    for r in range(ranked.shape[1]):
        for row in ranked[:, r].tolist():
            if not taken[row]:
                taken[row] = True
                picks.append(row)
                if len(picks) == budget:
                    return np.asarray(picks, dtype=np.int64)
    return None


def task_max_ranking(ranked: np.ndarray, values: np.ndarray, task_of: np.ndarray, k: int) -> np.ndarray:
    """Per task, its ``k`` best rows by the max similarity over the task's examples (ties: lower row), from
    the examples' own top-k lists: a row in a task's true top-k is in the top-k of the example reaching its
    max, so the merge is exact. Returns T x k, tasks in first-seen order."""
    tasks = list(dict.fromkeys(task_of.tolist()))
    out = np.zeros((len(tasks), k), dtype=np.int64)
    for ti, tk in enumerate(tasks):
        ex = np.flatnonzero(task_of == tk)
        rows, vals = ranked[ex].ravel(), values[ex].ravel()
        order = np.lexsort((rows, -vals))            # best first; for each row its first hit is its max
        rows = rows[order]
        _, first = np.unique(rows, return_index=True)
        out[ti] = rows[np.sort(first)][:k]
    return out


def rds_select(x: np.ndarray | RowsF32, t: np.ndarray, task_of: np.ndarray, budget: int,
               chunk: int = 65536, rule: str = "balanced") -> np.ndarray:
    """Positions into ``x`` (L2-normalised candidate vectors) chosen by RDS+ round-robin for targets ``t``
    (``rule``: ``balanced`` or ``reference``, see the module docstring)."""
    if rule not in RULES:
        raise ConfigError(f"rds: rule must be one of {RULES}, got {rule!r}")
    n, q = len(x), len(t)
    budget = min(budget, n)
    n_tasks = len(set(task_of.tolist()))
    turns = n_tasks if rule == "reference" and n_tasks > 1 else q    # lists that take turns
    k = min(n, 2 * -(-budget // max(turns, 1)) + 16)
    while True:
        ranked, values = topk_per_target(x, t, k, chunk)
        if rule == "balanced":
            picks = round_robin(ranked, task_of, budget, n)
        elif n_tasks == 1:
            picks = turns_losing(ranked, budget, n)
        else:       # full-length lists: the union of a task's examples' top-k holds >= k rows
            picks = turns_losing(task_max_ranking(ranked, values, task_of, ranked.shape[1]), budget, n)
        if picks is not None:
            return picks
        if k >= n:                    # cannot happen: with k = n every example sees every candidate
            raise AssertionError("rds: ran out of candidates with k = n")
        k = min(n, 2 * k)


@register_selector("rds")
class RDSSelect(Selector):
    role = "select"

    def __init__(self, targets: str | list[str] | None = None, model: str | None = None,
                 embedding: dict[str, Any] | str | None = None, task_by: str = "source",
                 chunk: int = 65536, rule: str = "balanced"):
        if rule not in RULES:
            raise ConfigError(f"rds: rule must be one of {RULES}, got {rule!r}")
        self.rule = rule
        if not targets:
            raise ConfigError("rds: 'targets' must name a file or folder of target-task conversations")
        if embedding is None:
            if not model:
                raise ConfigError("rds: give model= (a causal LM for RDS+ representations) or an embedding spec")
            embedding = {"backend": "causal-lm", "model": model, "pooling": "weighted-mean",
                         "segment": "conversation"}
        elif model:
            raise ConfigError("rds: give either model= or embedding=, not both")
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.embedding = normalize_spec(embedding)
        if self.embedding.get("name", "embedding") != "embedding":
            raise ConfigError("rds: the embedding spec must be an 'embedding' signal (targets are encoded "
                              "with the same encoder)")
        self.task_by, self.chunk = task_by, int(chunk)

    def config(self) -> dict[str, Any]:
        cfg = {"targets": self.targets, "embedding": self.embedding, "task_by": self.task_by}
        if self.rule != "balanced":      # the default stays out of the config: fingerprints unchanged
            cfg["rule"] = self.rule
        return cfg

    def target_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(Q x d normalised target vectors, task label per target), encoded like the pool."""
        table, tasks = read_targets(self.targets, self.task_by, "rds")
        params = {k: v for k, v in self.embedding.items() if k != "name"}
        enc = make(signal_class("embedding"), params, "rds embedding")
        segment = params.get("segment", "query")
        vecs = enc.encode(flatten(table).texts(segment))
        return rows_f32(vecs, np.arange(len(vecs)), normalize=True), tasks

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("rds is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        t, tasks = self.target_vectors()
        x = candidate_rows(ctx.embeddings(self.embedding), candidates, normalize=True)
        if x.shape[1] != t.shape[1]:
            raise ConfigError(f"rds: pool vectors are {x.shape[1]}-d but targets are {t.shape[1]}-d")
        picks = rds_select(x, t, tasks, budget, self.chunk, self.rule)
        kept = candidates[picks]
        uniq, counts = np.unique(tasks, return_counts=True)
        return StepResult(kept=kept, dropped={"over_budget": int(len(candidates) - len(kept))},
                          details={"targets": len(t),
                                   "tasks": {str(u): int(c) for u, c in zip(uniq, counts)}})
