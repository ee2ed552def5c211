"""Statistics of a bench: mean and std over seeds, one-sided Mann-Whitney U of each method vs random.

``p`` answers "is this method better than random?" (alternative "greater" for accuracies, "less" for
losses). With m method runs and n random runs no test can give p below 1 / C(m+n, m): with one method run
and 5 random runs the smallest attainable p is 1/6 = 0.167, so "significant at 0.05" is impossible by design
and a p of 1/(n+1) means only "better than every random run". ``min_p`` is stored beside each p.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def summary(values: list[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return {"n": len(v), "mean": float(v.mean()) if len(v) else None,
            "std": float(v.std(ddof=1)) if len(v) > 1 else None, "values": [None if x is None else float(x) for x in values]}


def min_attainable_p(m: int, n: int) -> float:
    return 1.0 / math.comb(m + n, m) if m and n else 1.0


def mann_whitney(method: list[float], random: list[float], higher_is_better: bool = True) -> dict[str, Any]:
    """One-sided U test of ``method`` vs ``random``; exact distribution when there are no ties."""
    from scipy.stats import mannwhitneyu

    a = [float(x) for x in method if x is not None and math.isfinite(x)]
    b = [float(x) for x in random if x is not None and math.isfinite(x)]
    out: dict[str, Any] = {"n_method": len(a), "n_random": len(b), "min_p": min_attainable_p(len(a), len(b)),
                           "alternative": "greater" if higher_is_better else "less"}
    if not a or not b:
        return {**out, "u": None, "p": None}
    ties = len(set(a + b)) < len(a + b)
    res = mannwhitneyu(a, b, alternative=out["alternative"], method="asymptotic" if ties else "exact")
    return {**out, "u": float(res.statistic), "p": float(res.pvalue), "exact": not ties}


def average(per_task: dict[str, float | None], tasks: list[str]) -> float | None:
    vals = [per_task.get(t) for t in tasks]
    if not tasks or any(v is None or not math.isfinite(v) for v in vals):
        return None
    return float(np.mean(vals))


def compare(cells: dict[str, dict[int, dict[str, float]]], tasks: list[str],
            higher: dict[str, bool], average_of: list[str] | None = None) -> dict[str, Any]:
    """``cells[method][seed][task] = score`` -> per method and task: summary and U test vs ``random``.

    The "average" column is the mean of the higher-is-better tasks of each run (held-out loss is left out),
    or of ``average_of`` when given (``[]``: no average column).
    """
    avg_tasks = [t for t in tasks if higher.get(t, True)] if average_of is None else list(average_of)
    cols = tasks + (["average"] if avg_tasks else [])
    scores: dict[str, dict[str, list[float]]] = {}
    for m, seeds in cells.items():
        scores[m] = {t: [s.get(t) for s in seeds.values()] for t in tasks}
        if avg_tasks:
            scores[m]["average"] = [average(s, avg_tasks) for s in seeds.values()]
    table: dict[str, Any] = {}
    rnd = scores.get("random", {})
    for m, per in scores.items():
        row = {}
        for t in cols:
            row[t] = summary(per[t])
            if m not in ("random", "base") and rnd:
                row[t]["test"] = mann_whitney(per[t], rnd.get(t, []), higher.get(t, True))
        table[m] = row
    return {"columns": cols, "average_of": avg_tasks, "methods": table}
