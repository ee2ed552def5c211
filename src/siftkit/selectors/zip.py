"""``zip``: ZIP (Entropy Law, Yin et al., 2024), greedy minimisation of the selected set's compression ratio.

Compression ratio ``r(S) = raw bytes / zlib-9 bytes`` of the selected texts joined with ``sep`` (higher =
more redundant). Each round has three stages (published defaults k1 = 10,000, k2 = 200, k3 = 100):

1. global: the ``k1`` not-yet-selected candidates with the lowest *stored* score (initially each sample's
   own ratio; scores are stale for samples not re-scored since);
2. local coarse: re-score those ``k1`` as ``r(selected + x)`` (and store it), keep the ``k2`` lowest;
3. local fine: build a group of ``k3`` from the ``k2`` greedily, each time adding the x minimising
   ``r(group + x)``; append the group to the selection.

Modes:

- ``fast`` (the default; the ``zip`` preset): the rounds above. Scores come from one streaming zlib-9
  compressor fed with the selected set (no flush): per candidate, compress x with a *copy* of it
  (``compressobj.copy()``, ~256 KB of state). DEFLATE output does not depend on how its input is chunked
  when nothing is flushed, so ``bytes emitted + copy's output`` equals ``len(zlib.compress(selected + x,
  9))`` byte for byte, and a score costs O(len(x)) instead of O(len(selected)).
- ``recompress``: the same rounds and picks, each score recomputing ``zlib.compress(selected + x, 9)``
  (siftkit's ``faithful`` until issue 18; the cost of a round grows with the selected set).
- ``faithful``: the published code's rule: stage 2 marks all ``k2`` winners as used, stage 3 keeps ``k3``
  of them, so every round discards ``k2 - k3`` candidates for good (they are never selected; when the pool
  runs out the selection stops short of the budget, with a warning). Scores as in ``fast`` (identical to
  recompressing). With ``render="str"`` the text is the published one: each record is the Python ``str()``
  of its ShareGPT turn list (``[{'from': 'human', 'value': ...}, ...]``) and the set is ``str()`` of the
  list of those (``[a, b, ...]``). Scores are float64 and ties go to the lower row (the published code
  ranks float32 values with ``torch.topk``, whose order among ties is unspecified).

What both measure: DEFLATE only matches against the last 32 KB of input, so ``r(selected + x)`` sees x's
redundancy with the last ~10-30 selected samples only; a duplicate of a sample selected earlier is not
recognised. See docs/published.md.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pyarrow as pa

from .. import progress
from ..errors import ConfigError
from ..registry import register_selector
from ..signals.segments import flatten
from .base import SelectionContext, Selector, StepResult

DEFLATE_WINDOW = 32 * 1024
MODES = ("fast", "recompress", "faithful")
RENDERS = ("text", "str")


def _texts(ctx: SelectionContext, candidates: np.ndarray, segment: str, chunk: int = 65536) -> list[bytes]:
    out: list[bytes] = []
    for s in range(0, len(candidates), chunk):
        batch = ctx.pool.select(["messages"]).take(candidates[s:s + chunk])
        out += [t.encode("utf-8", "surrogatepass") for t in flatten(batch).texts(segment)]
    return out


def _sharegpt_str(ctx: SelectionContext, candidates: np.ndarray, chunk: int = 65536) -> list[bytes]:
    """Each record as the Python ``str()`` of its ShareGPT turn list (the published ZIP code's text)."""
    from ..io.writers import SHAREGPT_ROLES

    out: list[bytes] = []
    for s in range(0, len(candidates), chunk):
        for msgs in ctx.pool.column("messages").take(pa.array(candidates[s:s + chunk], pa.int64())).to_pylist():
            turns = [{"from": SHAREGPT_ROLES.get(m["role"], m["role"]), "value": m.get("content") or ""}
                     for m in msgs or []]
            out.append(str(turns).encode("utf-8", "surrogatepass"))
    return out


class _Faithful:
    """Scores by recompressing the whole joined set each time: ``prefix + sep.join(set + [x]) + suffix``."""

    def __init__(self, level: int, sep: bytes, prefix: bytes = b"", suffix: bytes = b""):
        self.level, self.sep, self.suffix = level, sep, suffix
        self.buf = bytearray(prefix)
        self.empty = True

    def add(self, x: bytes) -> None:
        if not self.empty:
            self.buf += self.sep
        self.buf += x
        self.empty = False

    def ratio_with(self, x: bytes) -> float:
        data = bytes(self.buf) + (b"" if self.empty else self.sep) + x + self.suffix
        return len(data) / max(len(zlib.compress(data, self.level)), 1)


class _Fast:
    """Scores with a copy of a streaming compressor primed with the set (same numbers as _Faithful)."""

    def __init__(self, level: int, sep: bytes, prefix: bytes = b"", suffix: bytes = b""):
        self.level, self.sep, self.suffix = level, sep, suffix
        self.comp = zlib.compressobj(level)
        self.emitted = len(self.comp.compress(prefix))
        self.raw = len(prefix)
        self.empty = True

    def add(self, x: bytes) -> None:
        data = (b"" if self.empty else self.sep) + x
        self.emitted += len(self.comp.compress(data))
        self.raw += len(data)
        self.empty = False

    def ratio_with(self, x: bytes) -> float:
        c = self.comp.copy()
        data = (b"" if self.empty else self.sep) + x + self.suffix
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
               show_progress: bool = False, prefix: bytes = b"",
               suffix: bytes = b"") -> tuple[np.ndarray, dict[str, Any]]:
    """Positions into ``texts`` in selection order (round by round, each group in greedy order). The set
    is scored as ``prefix + sep.join(texts) + suffix``; ``mode`` as in the module docstring."""
    if mode not in MODES:
        raise ConfigError(f"zip: mode must be one of {MODES}, got {mode!r}")
    n = len(texts)
    budget = min(budget, n)
    cls = _Faithful if mode == "recompress" else _Fast
    discard = mode == "faithful"

    def make(level: int, sep: bytes) -> Any:
        return cls(level, sep, prefix, suffix)
    # stage-1 scores start as each sample's own ratio
    score = np.empty(n, dtype=np.float64)
    with progress.stage("zip: own ratios", total=n, show=show_progress) as st:
        for s in range(0, n, 4096):
            score[s:s + 4096] = [len(t) / max(len(zlib.compress(t, level)), 1) for t in texts[s:s + 4096]]
            st.update(min(4096, n - s))
    available = np.ones(n, dtype=bool)
    selected = make(level, sep)
    picks: list[int] = []
    rounds = scored = discarded = 0
    with progress.bar("zip", total=budget, show=show_progress) as bar:
        while len(picks) < budget:
            avail = np.flatnonzero(available)
            if len(avail) == 0:          # only with discard: the pool ran out before the budget
                break
            cand = _lowest(avail, score[avail], k1)                                 # stage 1
            for i in cand.tolist():                                                 # stage 2
                score[i] = selected.ratio_with(texts[i])
            scored += len(cand)
            pool2 = cand[np.argsort(score[cand], kind="stable")[:k2]].tolist()
            if discard:                  # the published code marks every stage-2 winner as used
                available[pool2] = False
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
            if discard:
                discarded += len(pool2)   # the k2 - k3 winners stage 3 did not keep: never selected
            rounds += 1
    details: dict[str, Any] = {"rounds": rounds, "compressions": scored}
    if discard:
        details["discarded"] = discarded
    return np.asarray(picks, dtype=np.int64), details


@register_selector("zip")
class ZipSelect(Selector):
    role = "select"

    def __init__(self, mode: str = "fast", k1: int = 10_000, k2: int = 200, k3: int = 100,
                 segment: str = "conversation", level: int = 9, sep: str = "\n", render: str = "text"):
        if mode not in MODES:
            raise ConfigError(f"zip: mode must be one of {MODES}, got {mode!r}")
        if render not in RENDERS:
            raise ConfigError(f"zip: render must be one of {RENDERS}, got {render!r}")
        if render == "str" and segment != "conversation":
            raise ConfigError("zip: render='str' renders the whole conversation (segment must be 'conversation')")
        self.render = render
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
        cfg = {"mode": self.mode, "k1": self.k1, "k2": self.k2, "k3": self.k3, "segment": self.segment,
               "level": self.level, "sep": self.sep}
        if self.render != "text":       # the default stays out: existing fingerprints unchanged
            cfg["render"] = self.render
        return cfg

    def run(self, ctx: SelectionContext, candidates: np.ndarray, budget: int | None) -> StepResult:
        if budget is None:
            raise ConfigError("zip is a budgeted selector: give it a budget")
        candidates = np.asarray(candidates, dtype=np.int64)
        if self.render == "str":        # str() of the list of ShareGPT turn lists: "[a, b, ...]"
            texts = _sharegpt_str(ctx, candidates)
            sep, prefix, suffix = b", ", b"[", b"]"
        else:
            texts, sep, prefix, suffix = _texts(ctx, candidates, self.segment), self.sep.encode("utf-8"), b"", b""
        pos, details = zip_select(texts, budget, self.k1, self.k2, self.k3, self.mode, self.level,
                                  sep, show_progress=True, prefix=prefix, suffix=suffix)
        if len(pos) < min(budget, len(candidates)):
            progress.warn(f"zip: the faithful rule discarded {details.get('discarded', 0):,} candidates and the "
                          f"pool ran out at {len(pos):,} of the budget {budget:,}")
        kept = candidates[pos]
        dropped = {"over_budget": int(len(candidates) - len(kept) - details.get("discarded", 0))}
        if "discarded" in details:
            dropped["zip_discarded"] = int(details["discarded"])
        return StepResult(kept=kept, dropped=dropped,
                          details=details)
