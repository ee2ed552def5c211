"""``zip``: ZIP (Entropy Law, Yin et al., 2024), greedy minimisation of the selected set's compression ratio.

Compression ratio ``r(S) = raw bytes / zlib-9 bytes`` of the selected texts joined with ``sep`` (higher =
more redundant). Each round has three stages (published defaults k1 = 10,000, k2 = 200, k3 = 100):

1. global: the ``k1`` not-yet-selected candidates with the lowest *stored* score (initially each sample's
   own ratio; scores are stale for samples not re-scored since);
2. local coarse: re-score those ``k1`` as ``r(selected + x)`` (and store it), keep the ``k2`` lowest;
3. local fine: build a group of ``k3`` from the ``k2`` greedily, each time adding the x minimising
   ``r(group + x)``; append the group to the selection.

Modes (same picks, different cost):

- ``faithful``: recompute ``zlib.compress(selected + x, 9)`` for every scored x, as the published code does.
  The cost of one round grows with the selected set (the study reports ~7 days for 50K).
- ``fast``: keep one streaming zlib-9 compressor fed with the selected set (no flush) and, per candidate,
  compress x with a *copy* of it (``compressobj.copy()``, ~256 KB of state). DEFLATE output does not
  depend on how its input is chunked when nothing is flushed, so ``bytes emitted + copy's output`` equals
  ``len(zlib.compress(selected + x, 9))`` byte for byte: the selection is identical, and a score costs
  O(len(x)) instead of O(len(selected)).

What both measure: DEFLATE only matches against the last 32 KB of input, so ``r(selected + x)`` sees x's
redundancy with the last ~10-30 selected samples only; a duplicate of a sample selected earlier is not
recognised. See docs/published.md.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.segments import flatten
from .base import SelectionContext, Selector, StepResult

DEFLATE_WINDOW = 32 * 1024


def _texts(ctx: SelectionContext, candidates: np.ndarray, segment: str, chunk: int = 65536) -> list[bytes]:
    out: list[bytes] = []
    for s in range(0, len(candidates), chunk):
        batch = ctx.pool.select(["messages"]).take(candidates[s:s + chunk])
        out += [t.encode("utf-8", "surrogatepass") for t in flatten(batch).texts(segment)]
    return out


class _Faithful:
    """Scores by recompressing the whole joined set each time."""

    def __init__(self, level: int, sep: bytes):
        self.level, self.sep = level, sep
        self.buf = bytearray()

    def add(self, x: bytes) -> None:
        if self.buf:
            self.buf += self.sep
        self.buf += x

    def ratio_with(self, x: bytes) -> float:
        data = bytes(self.buf) + (self.sep if self.buf else b"") + x
        return len(data) / max(len(zlib.compress(data, self.level)), 1)


class _Fast:
    """Scores with a copy of a streaming compressor primed with the set (same numbers as _Faithful)."""

    def __init__(self, level: int, sep: bytes):
        self.level, self.sep = level, sep
        self.comp = zlib.compressobj(level)
        self.emitted = self.raw = 0

    def add(self, x: bytes) -> None:
        data = (self.sep if self.raw else b"") + x
        self.emitted += len(self.comp.compress(data))
        self.raw += len(data)

    def ratio_with(self, x: bytes) -> float:
        c = self.comp.copy()
        data = (self.sep if self.raw else b"") + x
        n = self.emitted + len(c.compress(data)) + len(c.flush())
        return (self.raw + len(data)) / max(n, 1)


def _lowest(rows: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows with the lowest values, ascending, ties by row order (argpartition, then sort k)."""
    if k < len(rows):
        kth = np.partition(values, k - 1)[k - 1]
        pick = np.flatnonzero(values <= kth)          # every row tied with the k-th value, in row order
        rows, values = rows[pick], values[pick]
    return rows[np.argsort(values, kind="stable")[:k]]


def zip_select(texts: list[bytes], budget: int, k1: int = 10_000, k2: int = 200, k3: int = 100,
               mode: str = "fast", level: int = 9, sep: bytes = b"\n",
               show_progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Positions into ``texts`` in selection order (round by round, each group in greedy order)."""
    n = len(texts)
    budget = min(budget, n)
    make = {"faithful": _Faithful, "fast": _Fast}[mode]
    # stage-1 scores start as each sample's own ratio
    score = np.empty(n, dtype=np.float64)
    with progress.stage("zip: own ratios", total=n, show=show_progress) as st:
        for s in range(0, n, 4096):
            score[s:s + 4096] = [len(t) / max(len(zlib.compress(t, level)), 1) for t in texts[s:s + 4096]]
            st.update(min(4096, n - s))
    available = np.ones(n, dtype=bool)
    selected = make(level, sep)
    picks: list[int] = []
    rounds = scored = 0
    with progress.bar("zip", total=budget, show=show_progress) as bar:
        while len(picks) < budget:
            avail = np.flatnonzero(available)
            cand = _lowest(avail, score[avail], k1)                                 # stage 1
            for i in cand.tolist():                                                 # stage 2
                score[i] = selected.ratio_with(texts[i])
            scored += len(cand)
            pool2 = cand[np.argsort(score[cand], kind="stable")[:k2]].tolist()
            group = make(level, sep)                                                # stage 3
            need = min(k3, budget - len(picks), len(pool2))
            for _ in range(need):
                vals = [group.ratio_with(texts[i]) for i in pool2]
                scored += len(vals)
                j = int(np.argmin(vals))
                g = pool2.pop(j)
                group.add(texts[g])
                selected.add(texts[g])
                picks.append(g)
                available[g] = False
                bar.update(1)
            rounds += 1
    return np.asarray(picks, dtype=np.int64), {"rounds": rounds, "compressions": scored}


@register_selector("zip")
class ZipSelect(Selector):
    role = "select"

    def __init__(self, mode: str = "fast", k1: int = 10_000, k2: int = 200, k3: int = 100,
                 segment: str = "conversation", level: int = 9, sep: str = "\n"):
        if mode not in ("faithful", "fast"):
            raise ConfigError(f"zip: mode must be 'faithful' or 'fast', got {mode!r}")
        if segment not in ("conversation", "query", "response"):
            raise ConfigError(f"zip: segment must be conversation, query or response, got {segment!r}")
        k1, k2, k3 = int(k1), int(k2), int(k3)
        if not (k1 >= k2 >= k3 >= 1):
            raise ConfigError(f"zip: need k1 >= k2 >= k3 >= 1, got k1={k1}, k2={k2}, k3={k3}")
        if not 1 <= int(level) <= 9:
            raise ConfigError(f"zip: level must be 1..9, got {level}")
        self.mode, self.k1, self.k2, self.k3 = mode, k1, k2, k3
        self.segment, self.level, self.sep = segment, int(level), str(sep)

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "k1": self.k1, "k2": self.k2, "k3": self.k3, "segment": self.segment,
                "level": self.level, "sep": self.sep}

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("zip is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        texts = _texts(ctx, candidates, self.segment)
        pos, details = zip_select(texts, budget, self.k1, self.k2, self.k3, self.mode, self.level,
                                  self.sep.encode("utf-8"), show_progress=True)
        kept = candidates[pos]
        return StepResult(kept=kept, dropped={"over_budget": int(len(candidates) - len(kept))},
                          details=details)
