"""Split a budget across groups (sources, clusters, ...) so the total is met exactly.

``allocate`` hands out quotas proportional to weights (largest-remainder rounding), caps each group at its
capacity, and redistributes what capped groups cannot use to the others, until the budget is met or every
group is full. Deterministic: remainder ties go to the group listed first.
"""

from __future__ import annotations

import numpy as np


def allocate(capacity: np.ndarray, budget: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Integer quotas q with q <= capacity and sum(q) == min(budget, sum(capacity)).

    ``weights`` default to the capacities (proportional split); pass ones for equal quotas.
    """
    cap = np.asarray(capacity, dtype=np.int64)
    w = cap.astype(np.float64) if weights is None else np.asarray(weights, dtype=np.float64).copy()
    if np.any(w < 0) or np.any(cap < 0):
        raise ValueError("capacities and weights must be non-negative")
    target = int(min(budget, cap.sum()))
    q = np.zeros(len(cap), dtype=np.int64)
    # Water-filling: groups whose proportional share exceeds their capacity are filled to capacity and
    # leave the split; the rest share what is left. Then one largest-remainder rounding.
    active = w > 0
    while active.any():
        left = target - int(cap[~active & (w > 0)].sum())
        share = np.where(active, w, 0.0)
        ideal = left * share / share.sum()
        over = active & (ideal >= cap)
        if not over.any():
            base = np.floor(ideal).astype(np.int64)
            rem = left - int(base.sum())
            frac = np.where(active, ideal - base, -1.0)
            base[np.argsort(-frac, kind="stable")[:rem]] += 1  # stable: earlier groups win ties
            q = np.where(active, base, np.where(w > 0, cap, 0))
            break
        active &= ~over
    else:
        q = np.where(w > 0, cap, 0)
    q = np.minimum(q, cap)
    if int(q.sum()) < target:  # groups with zero weight but spare capacity take the rest, in order
        for i in range(len(cap)):
            extra = min(cap[i] - q[i], target - int(q.sum()))
            if extra > 0:
                q[i] += extra
    return q
