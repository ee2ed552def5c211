"""The Selector interface: a pure, global function from signals to chosen records.

A selector sees the candidate rows (pool row indices still in play after earlier steps) and the signal
table aligned with the pool, and returns the rows it keeps, in rank order. Selectors do not read files or
compute signals; they declare the signal columns they need (``needs``) so the pipeline can compute them.

Three roles share the interface:
- ``filter``-like steps (budget is None): keep a subset, report why the rest were dropped;
- ``dedup`` steps: keep one record per duplicate group;
- budgeted selectors: choose exactly ``budget`` rows (or all candidates when fewer).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from ..errors import ConfigError


@dataclass
class SelectionContext:
    """What a selector may look at. ``signals`` is aligned row-for-row with ``pool``."""

    pool: pa.Table                       # canonical pool table (id, source, messages, ...)
    signals: pa.Table                    # signal columns, same row order as pool
    seed: int = 0
    # Vector signals (embeddings): ``vector_loader(spec)`` returns an N x d array aligned with the pool,
    # ``vector_loader(spec, rows)`` the rows given only; computed through the cache when needed. Set by the
    # pipeline; see ``embeddings()`` and ``vectors()``.
    vector_loader: Callable[..., np.ndarray] | None = None
    # The run's cache folder, for selectors that keep their own artefacts (e.g. LESS warm-up checkpoints).
    cache_dir: str | None = None
    _vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def embeddings(self, spec: dict[str, Any] | str | None = None) -> np.ndarray:
        """The pool's embeddings for ``spec`` (a vector signal spec, e.g. {"name": "embedding",
        "backend": "static", "segment": "query"}); computed once per run and cached on disk."""
        import orjson

        spec = {"name": "embedding"} if spec is None else ({"name": spec} if isinstance(spec, str) else spec)
        key = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS).decode()
        if key not in self._vectors:
            if self.vector_loader is None:
                raise ConfigError("this selector needs embeddings, but no vector loader is configured")
            self._vectors[key] = self.vector_loader(spec)
        return self._vectors[key]

    def vectors(self, spec: dict[str, Any], rows: np.ndarray) -> np.ndarray:
        """Vectors of ``spec`` for pool rows ``rows`` only (len(rows) x d, in that order), computed through the
        cache. For costly per-record features (LESS gradients) of the candidates still in play; unlike
        ``embeddings()`` they are not kept for the report's diversity map."""
        if self.vector_loader is None:
            raise ConfigError("this selector needs vector features, but no vector loader is configured")
        return self.vector_loader(spec, np.asarray(rows, dtype=np.int64))

    def column(self, name: str) -> np.ndarray:
        """A signal or pool column as a numpy array (strings as object arrays)."""
        if name in self.signals.column_names:
            col = self.signals.column(name)
        elif name in self.pool.column_names and name not in ("messages",):
            col = self.pool.column(name)
        else:
            known = sorted(set(self.signals.column_names) | {"source", "file", "row", "id"})
            raise ConfigError(f"unknown column {name!r}; available: {', '.join(known)}")
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return np.asarray(col.to_pylist(), dtype=object)
        return col.to_numpy(zero_copy_only=False)

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator determined by the seed and the step (so steps do not share a stream)."""
        import xxhash

        return np.random.default_rng([self.seed, xxhash.xxh32_intdigest(salt.encode())])


@dataclass
class StepResult:
    kept: np.ndarray                          # pool row indices kept, in rank order
    dropped: dict[str, int] = field(default_factory=dict)   # reason -> count
    details: dict[str, Any] = field(default_factory=dict)   # e.g. duplicate groups, quotas


class Selector(ABC):
    name: ClassVar[str]
    role: ClassVar[str] = "select"      # "filter", "dedup" or "select"
    requires: ClassVar[tuple[str, ...]] = ()  # optional packages (import names) this step imports when it runs
    requires_for: ClassVar[str] = ""          # what they are for (shown when one is missing)

    def requirements(self) -> dict[str, str]:
        """Optional packages this step needs (import name -> what for), checked by ``siftkit.preflight``
        before any reading. Default: the class's ``requires``; override when they depend on parameters."""
        return {m: self.requires_for for m in self.requires}

    def needs(self) -> list[str]:
        """Signal columns this selector reads (the pipeline computes the signals that provide them)."""
        return []

    def check_columns(self, kinds: dict[str, str]) -> None:
        """Check the columns this selector reads against their kinds (``"num"``, ``"str"``, ``"bool"``,
        ``"other"``) before any signal is computed; raise ConfigError on a mismatch."""

    def config(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        """``candidates``: int64 pool row indices in pool order. Must be deterministic given ctx.seed."""


def read_targets(targets: list[str], task_by: str, who: str) -> tuple[pa.Table, np.ndarray]:
    """Target-task examples of a targeted selector (RDS+, LESS): the conversations read from ``targets`` and
    each one's task (the ``task_by`` column as strings; ``source``: one task per input)."""
    from ..io.pool import read_pool

    table = read_pool(targets).table
    if len(table) == 0:
        raise ConfigError(f"{who}: no target examples in {targets}")
    if task_by not in table.column_names:
        raise ConfigError(f"{who}: target column {task_by!r} not found; have {table.column_names}")
    return table, np.asarray([str(v) for v in table.column(task_by).to_pylist()], dtype=object)


def resolve_budget(budget: float | str | None, n_candidates: int) -> int | None:
    """The number of records a budget asks for, out of ``n_candidates``.

    An integer is a count (``50000``, ``"50k"``); a float in (0, 1] is a fraction of the candidates
    (``0.05``; ``1.0`` = all of them); a percentage string is the same fraction (``"5%"``, ``"100%"``).
    A fraction never rounds down to zero records. Floats above 1 must be whole counts (``2000.0``).
    """
    if budget is None:
        return None
    what = budget
    if isinstance(budget, str):
        b = budget.strip().replace("_", "")
        try:
            if b.endswith("%"):
                budget = float(b[:-1]) / 100.0
                if not 0 < budget <= 1:
                    raise ValueError
            elif b.lower().endswith("k") and b[:-1].replace(".", "", 1).isdigit():
                budget = int(float(b[:-1]) * 1000)
            else:
                budget = float(b) if any(c in b for c in ".eE") else int(b)
        except ValueError:
            raise ConfigError(f"budget {what!r} is not a count (50000, 50k), a fraction in (0, 1] (0.05) "
                              f"or a percentage (5%)") from None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise ConfigError(f"budget must be a count, a fraction or a percentage, not {what!r}")
    if isinstance(budget, float):
        if not (0 < budget < float("inf")):   # also refuses NaN
            raise ConfigError(f"budget must be positive and finite, got {what!r}")
        if budget <= 1:
            return min(n_candidates, max(1, round(budget * n_candidates))) if n_candidates else 0
        if budget != int(budget):
            raise ConfigError(f"budget {what!r} is neither a fraction in (0, 1] nor a whole count")
        budget = int(budget)
    if budget <= 0:
        raise ConfigError(f"budget must be positive, got {what!r}")
    return int(budget)

