"""Summaries the report embeds: shared-bin histograms, source mix, capped scatter, a record sample.

Everything here is aggregated (bin counts, per-source counts) so the page stays small for any pool
size; only the sample table and the scatter carry per-record values, both capped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..signals.segments import flatten

HIST_BINS = 40
MAX_SOURCES = 20
SCATTER_CAP_POOL = 3000
SCATTER_CAP_SELECTED = 1500
SAMPLE_ROWS = 20
SAMPLE_CHARS = 400        # per turn
SAMPLE_LINES = 14         # per turn
SAMPLE_TURNS = 6          # query turns shown per record (the first and the last ones)
LENGTH_PREFIXES = ("chars_", "tokens_")
LENGTH_NAMES = ("chars", "tokens", "turns")


NOT_LENGTHS = ("special_tokens",)   # counts of literal control tokens, not a length


def is_length_signal(name: str) -> bool:
    """Length signals get their own section; token/char counts are shown on a log-x axis."""
    if name in NOT_LENGTHS:
        return False
    return name.startswith(LENGTH_PREFIXES) or name in LENGTH_NAMES or name.endswith(("_chars", "_tokens"))


def wants_log_x(name: str) -> bool:
    """Lengths are heavy-tailed: log-x (small integer ranges still get one bin per value)."""
    return is_length_signal(name)


def numeric_columns(signals: pa.Table) -> list[str]:
    """Numeric (int, float, bool) columns worth a histogram; hashes and ids are skipped."""
    out = []
    for f in signals.schema:
        t = f.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            continue
        low = f.name.lower()
        if "hash" in low or low == "id" or low.endswith("_id"):
            continue
        out.append(f.name)
    return out


def column_values(signals: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    col = signals.column(name)
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int8())
    col = pc.cast(col, pa.float64(), safe=False)
    return np.asarray(pc.fill_null(col, float("nan")).to_numpy(), dtype=np.float64)


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


def _stats(v: np.ndarray) -> dict[str, float] | None:
    if v.size == 0:
        return None
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return {"p10": _sig(p10), "median": _sig(p50), "p90": _sig(p90), "mean": _sig(float(v.mean()))}


def histogram(name: str, values: np.ndarray, selected: np.ndarray, *, log: bool | None = None,
              bins: int = HIST_BINS) -> dict[str, Any]:
    """Pool and selection histograms over the same bins (computed on the pool).

    ``log`` (default: for token/char lengths) bins ``log10(1 + v)`` uniformly; integer columns with a
    small range get one bin per integer. ``edges`` are always in value space.
    """
    if log is None:
        log = wants_log_x(name)
    finite = np.isfinite(values)
    pool_v = values[finite]
    sel_v = values[finite & selected]
    out: dict[str, Any] = {
        "name": name, "log": False, "integer": False, "edges": [], "pool": [], "sel": [],
        "n_pool": int(pool_v.size), "n_sel": int(sel_v.size),
        "missing_pool": int(values.size - pool_v.size),
        "missing_sel": int(int(selected.sum()) - sel_v.size),
        "stats_pool": _stats(pool_v), "stats_sel": _stats(sel_v),
    }
    if pool_v.size == 0:
        return out
    lo, hi = float(pool_v.min()), float(pool_v.max())
    integer = bool(np.array_equal(pool_v, np.round(pool_v)))
    out["integer"] = integer
    if log and lo < 0:
        log = False
    if integer and hi - lo < bins:
        edges = np.arange(lo - 0.5, hi + 1.0, 1.0)
        log = False
        t_pool, t_sel, t_edges = pool_v, sel_v, edges
    elif log:
        t_pool, t_sel = np.log10(1.0 + pool_v), np.log10(1.0 + sel_v)
        tlo, thi = float(t_pool.min()), float(t_pool.max())
        t_edges = np.linspace(tlo, thi, bins + 1) if thi > tlo else np.array([tlo - 0.05, tlo + 0.05])
        edges = 10.0 ** t_edges - 1.0
    else:
        t_pool, t_sel = pool_v, sel_v
        span = hi - lo
        t_edges = np.linspace(lo, hi, bins + 1) if span > 0 else np.array([lo - 0.5, lo + 0.5])
        edges = t_edges
    pool_counts = np.histogram(t_pool, t_edges)[0]
    sel_counts = np.histogram(t_sel, t_edges)[0]
    out.update(log=bool(log), edges=[_sig(e) for e in edges], pool=pool_counts.tolist(),
               sel=sel_counts.tolist())
    return out


def source_mix(sources: pa.ChunkedArray | pa.Array, selected: np.ndarray,
               top: int = MAX_SOURCES) -> dict[str, Any]:
    """Per-source record counts in the pool and in the selection (largest sources first)."""
    arr = sources.combine_chunks() if isinstance(sources, pa.ChunkedArray) else sources
    arr = pc.fill_null(arr, "(none)").dictionary_encode()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    names = arr.dictionary.to_pylist()
    idx = np.asarray(arr.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    pool = np.bincount(idx, minlength=len(names))
    sel = np.bincount(idx[selected], minlength=len(names))
    order = sorted(range(len(names)), key=lambda i: (-int(pool[i]), names[i]))
    rows = [(names[i], int(pool[i]), int(sel[i])) for i in order]
    if len(rows) > top:
        rest = rows[top - 1:]
        rows = rows[:top - 1] + [(f"other ({len(rest)} sources)", sum(r[1] for r in rest),
                                  sum(r[2] for r in rest))]
    return {"sources": [r[0] for r in rows], "pool": [r[1] for r in rows], "sel": [r[2] for r in rows],
            "n_pool": int(idx.size), "n_sel": int(selected.sum())}


def counts_by_source(sources: pa.ChunkedArray | pa.Array, selected: np.ndarray) -> dict[str, dict[str, int]]:
    mix = source_mix(sources, selected, top=10**9)
    return {s: {"read": p, "selected": k} for s, p, k in zip(mix["sources"], mix["pool"], mix["sel"])}


def scatter(x: Any, y: Any, selected: Any, *, seed: int = 0, cap_pool: int = SCATTER_CAP_POOL,
            cap_sel: int = SCATTER_CAP_SELECTED, in_pool: Any = None, n_pool: int | None = None,
            n_sel: int | None = None) -> dict[str, Any]:
    """A 2-D scatter of pool points with the selected ones overlaid, each capped by a seeded subsample.

    ``in_pool`` (default: every point) marks the points drawn as pool points, for callers that pass a pool
    sample and a selection sample as one list. ``n_pool`` / ``n_sel``: the record counts the points stand
    for (default: the number of points), shown in the caption as "k of n".
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    sa = np.zeros(xa.shape, dtype=bool) if selected is None else np.asarray(selected, dtype=bool)
    pa_ = np.ones(xa.shape, dtype=bool) if in_pool is None else np.asarray(in_pool, dtype=bool)
    if not (xa.ndim == ya.ndim == sa.ndim == pa_.ndim == 1 and xa.size == ya.size == sa.size == pa_.size):
        raise ValueError(f"scatter needs 1-D x, y and selected of the same length; got {xa.shape}, "
                         f"{ya.shape} and {sa.shape}")
    ok = np.isfinite(xa) & np.isfinite(ya)
    rng = np.random.default_rng(seed)

    def cap(mask: np.ndarray, k: int) -> dict[str, list[float]]:
        idx = np.flatnonzero(mask)
        if idx.size > k:
            idx = np.sort(rng.choice(idx, k, replace=False))
        return {"x": [_sig(v) for v in xa[idx]], "y": [_sig(v) for v in ya[idx]]}

    return {"pool": cap(ok & pa_, cap_pool), "sel": cap(ok & sa, cap_sel),
            "n_pool": int((ok & pa_).sum()) if n_pool is None else int(n_pool),
            "n_sel": int((ok & sa).sum()) if n_sel is None else int(n_sel)}


def _truncate(text: str, n: int = SAMPLE_CHARS, lines: int = SAMPLE_LINES) -> str:
    """Shorten a turn for the sample, keeping its line breaks and indentation (code stays readable):
    trailing spaces and runs of blank lines are squeezed; at most ``lines`` lines and ``n`` characters."""
    rows = [ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")]
    out: list[str] = []
    for ln in rows:
        if ln or (out and out[-1]):
            out.append(ln)
    cut = len(out) > lines
    text = "\n".join(out[:lines])
    if len(text) > n:
        text, cut = text[: n - 1], True
    return text + "…" if cut else text


def _turns(roles: list[str], contents: list[str]) -> list[dict[str, str]]:
    """Every turn as {role, text} (truncated); long conversations keep the first and last turns and say
    how many were left out between them."""
    turns = [{"role": r, "text": _truncate(c)} for r, c in zip(roles, contents)]
    if len(turns) > SAMPLE_TURNS:
        head, tail = turns[:2], turns[-(SAMPLE_TURNS - 2):]
        turns = [*head, {"role": "…", "text": f"{len(turns) - len(head) - len(tail)} more turns"}, *tail]
    return turns


def sample_indices(selected: np.ndarray, *, seed: int = 0, k: int = SAMPLE_ROWS) -> np.ndarray:
    """The pool rows of the report's record sample: ``k`` selected rows, seeded, in pool order."""
    idx = np.flatnonzero(selected)
    if idx.size > k:
        idx = np.sort(np.random.default_rng(seed).choice(idx, k, replace=False))
    return idx


def sample_selected(pool: pa.Table, selected: np.ndarray, *, seed: int = 0, k: int = SAMPLE_ROWS,
                    extra: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """A seeded sample of selected records (in pool order) with truncated query and response text."""
    idx = sample_indices(selected, seed=seed, k=k)
    if idx.size == 0:
        return []
    sub = pool.select(["id", "source", "messages"]).take(pa.array(idx, pa.int64()))
    flat = flatten(sub)
    roles, contents, off, last = flat.roles, flat.contents, flat.offsets.tolist(), flat.last_assistant.tolist()
    turns = np.diff(flat.offsets)
    ids, srcs = sub.column("id").to_pylist(), sub.column("source").to_pylist()
    rows = []
    for j, i in enumerate(idx.tolist()):
        s, e, la = off[j], off[j + 1], last[j]
        q_end = la if la >= 0 else e
        query = _turns(roles[s:q_end], contents[s:q_end])
        response = _turns(roles[la:la + 1], contents[la:la + 1]) if la >= 0 else []
        row: dict[str, Any] = {"row": i, "id": ids[j], "source": srcs[j], "turns": int(turns[j]),
                               "query": query, "response": response}
        for name, vals in (extra or {}).items():
            v = float(vals[i])
            row[name] = int(v) if np.isfinite(v) and v == int(v) else (_sig(v) if np.isfinite(v) else None)
        rows.append(row)
    return rows
