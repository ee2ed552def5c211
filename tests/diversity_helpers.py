"""Small builders for the diversity tests: a pool table and a SelectionContext with given vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from siftkit.selectors.base import SelectionContext

MSG = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def pool_table(convos: list[list[tuple[str, str]]]) -> pa.Table:
    msgs = [[{"role": r, "content": c} for r, c in turns] for turns in convos]
    n = len(msgs)
    return pa.table({"id": pa.array([f"r{i}" for i in range(n)]), "source": pa.array(["s"] * n),
                     "messages": pa.array(msgs, type=MSG)})


def qa_pool(queries: list[str], answers: list[str] | None = None) -> pa.Table:
    answers = answers or [f"answer {i}" for i in range(len(queries))]
    return pool_table([[("user", q), ("assistant", a)] for q, a in zip(queries, answers)])


def context(vectors: np.ndarray, columns: dict[str, Any] | None = None, seed: int = 0,
            pool: pa.Table | None = None) -> SelectionContext:
    n = len(vectors)
    pool = pool if pool is not None else qa_pool([f"q{i}" for i in range(n)])
    signals = pa.table({k: pa.array(v) for k, v in (columns or {}).items()}) if columns else \
        pa.table({"_": pa.nulls(n)}).drop(["_"])
    return SelectionContext(pool=pool, signals=signals, seed=seed, vector_loader=lambda spec: vectors)


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(rng: np.random.Generator, sizes: list[int], d: int = 16, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters on the unit sphere: (vectors, true labels)."""
    centers = unit(rng, len(sizes), d) * 1.0
    xs, labels = [], []
    for c, s in enumerate(sizes):
        xs.append(centers[c] + spread * rng.normal(size=(s, d)))
        labels += [c] * s
    x = np.vstack(xs)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.asarray(labels)
