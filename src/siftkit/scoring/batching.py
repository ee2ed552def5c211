"""Token-budget batching with length bucketing.

Sequences are sorted by length (longest first, ties by index, so the plan is deterministic) and cut into
batches whose padded size ``len(longest) * n`` stays within ``token_budget``. Sorting keeps padding small;
longest-first makes an out-of-memory error show up on the first batch rather than after hours.
"""

from __future__ import annotations

import numpy as np


def plan_batches(lengths: np.ndarray, token_budget: int, max_batch: int = 256) -> list[np.ndarray]:
    """Index arrays into ``lengths``; every index appears in exactly one batch."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if token_budget < 1 or max_batch < 1:
        raise ValueError("token_budget and max_batch must be positive")
    order = np.lexsort((np.arange(len(lengths)), -lengths))
    out: list[np.ndarray] = []
    i = 0
    while i < len(order):
        longest = max(1, int(lengths[order[i]]))
        k = max(1, min(max_batch, token_budget // longest))
        out.append(order[i:i + k])
        i += k
    return out


def padding_ratio(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Real tokens / padded tokens over a plan (1.0 = no padding)."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches if len(b))
    return real / padded if padded else 1.0
