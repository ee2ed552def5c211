"""The Signal interface: a per-record computation run in batches and cached by record id.

A signal declares its registry ``name``, a ``version`` (bump when its numbers change), the parameters
that affect its output (``config()``), the columns it produces, and the resources it needs. The same
``compute`` runs on every engine (local process pool or Ray), one batch at a time.

Scalar signals return one value per record per column and are cached as Parquet. Vector signals
(``kind = "vector"``, e.g. embeddings) return a 2-D float array and are cached as ``.npy``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import orjson
import pyarrow as pa
import xxhash


class Signal(ABC):
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    kind: ClassVar[str] = "scalar"       # "scalar" (Parquet columns) or "vector" (.npy matrix)
    batch_size: ClassVar[int] = 8192     # records per compute() call
    resources: ClassVar[dict[str, float]] = {"cpus": 1}  # e.g. {"gpus": 1} for model signals
    parallel: ClassVar[bool] = True      # False when compute() already uses all cores (threads, GPU)
    shard_size: ClassVar[int | None] = None  # records per cached part (None: the driver's default); small for
                                             # slow signals so a killed run loses little work
    requires: ClassVar[tuple[str, ...]] = ()  # optional packages (import names) this signal imports when it runs
    requires_for: ClassVar[str] = ""          # what they are for (shown when one is missing)

    def requirements(self) -> dict[str, str]:
        """Optional packages this signal needs (import name -> what for), checked by ``siftkit.preflight``
        before any reading. Default: the class's ``requires``; override when they depend on parameters."""
        return {m: self.requires_for for m in self.requires}

    def config(self) -> dict[str, Any]:
        """Everything that changes this signal's output (used for the cache fingerprint)."""
        return {}

    def fingerprint(self) -> str:
        blob = orjson.dumps({"name": self.name, "version": self.version, "config": self.config()},
                            option=orjson.OPT_SORT_KEYS, default=str)
        return xxhash.xxh3_64_hexdigest(blob)

    @abstractmethod
    def columns(self) -> dict[str, pa.DataType]:
        """Output columns (scalar signals) -> Arrow type. Vector signals return {name: float16}."""

    def setup(self) -> None:
        """Load models/tokenizers. Called once per worker before the first compute()."""

    @abstractmethod
    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        """Compute the signal for ``batch`` (rows of the pool table, all pool columns present).

        Returns one array per column, aligned with the batch rows. Missing values are NaN (float
        columns); a ``<name>_reason`` string column may explain them. Never reorder or drop rows.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{self.name}({args})"


def reason_counts(signals: pa.Table) -> dict[str, dict[str, int]]:
    """Per ``*_reason`` column of a signal table, how many records failed for each reason (for manifests)."""
    out: dict[str, dict[str, int]] = {}
    for name in signals.column_names:
        if not name.endswith("_reason"):
            continue
        vals = signals.column(name).to_pylist()
        counts: dict[str, int] = {}
        for v in vals:
            if v:
                counts[v] = counts.get(v, 0) + 1
        out[name] = dict(sorted(counts.items()))
    return out
