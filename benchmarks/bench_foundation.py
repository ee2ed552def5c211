"""Foundation benchmark: read+normalise, token counting, selection and end to end on a 1M-record pool.

Every stage runs in its own subprocess, so each gets its own memory figures: the peak of the whole
process tree (psutil, PSS summed over the stage's processes every 0.1 s: pages that forked workers share
with their parent are counted once, as the machine sees them; this is the "peak RSS" in the table) and
the largest single process's peak RSS (``wait4`` rusage, in the JSON). Wall time is measured inside the stage around the timed call only
(imports and untimed setup such as reading the pool for a later stage are excluded); CPU seconds are the
stage process tree's user+sys time (including setup), which is less sensitive to other load on the box.

Stages (siftkit, through its public API) and the naive baseline measured in the same run:

================  =========================================  ===========================================
stage             siftkit                                    naive baseline
================  =========================================  ===========================================
read+normalise    ``siftkit.read(pool, workers=W)``          ``json.loads`` per line + Python loops
                                                             building ``{"role", "content"}`` dicts
token counting    ``compute_signals(table, [{"name":          ``tokenizer.encode_batch`` over the same turn
                  "tokens"}], fresh cache, workers=W)``      texts (same default tokenizer), ``len(ids)``
                                                             summed per record in Python
(+ text_stats)    ``compute_signals(..., ["text_stats"])``   (none)
tokens, distinct  as above, on copy 0 only (the ~192K         as above, on the same rows
                  distinct conversations: no repeats)
top-50K by        ``TopSelector(by="tokens_total")``         ``sorted(list_of_dicts, key=...)[:50K]``
length
random 50K        ``RandomSelector()``                       ``random.sample(list_of_dicts, 50K)``
stratified 50K    ``StratifiedSelector(column="source",      dict grouping + per-source ``sorted`` +
                  by="tokens_total")``                       proportional quotas
end to end        ``siftkit select POOL --budget 50000       (sum of the naive stages)
                  --stratify source --by tokens_total``
                  as a subprocess (fresh cache)
================  =========================================  ===========================================

The naive results are checked against siftkit's (same record count and text, identical token counts,
same top-50K set) so the comparison is between equal work. Results: a table on stdout and
``benchmarks/results/foundation.json``.

Usage::

    .venv/bin/python benchmarks/bench_foundation.py            # 1,000,000 records (builds the pool once)
    .venv/bin/python benchmarks/bench_foundation.py --quick    # 100,000 records
    .venv/bin/python benchmarks/bench_foundation.py --records 300000 --stages read,tokens
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

BUDGET = 50_000
GIB = 1 << 30
STAGES = ("read", "naive_read", "tokens", "naive_tokens", "tokens_distinct", "naive_tokens_distinct",
          "select", "naive_select", "e2e")


# ---------------------------------------------------------------- helpers used inside stage processes

def _quiet() -> None:
    from siftkit import progress

    progress.set_quiet(True)


def _load_pool(pool_dir: str, workers: int) -> Any:
    import siftkit

    _quiet()
    return siftkit.read(pool_dir, workers=workers)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _distinct_rows(pool: Any) -> Any:
    """Pool rows of copy 0 (files ``<source>/c00.jsonl``): each distinct conversation once."""
    import numpy as np
    import pyarrow.compute as pc

    mask = pc.match_substring(pool.table.column("file"), "/c00.jsonl")
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False))


def _token_signal_tables(pool_table: Any, cache: str, workers: int, with_stats: bool,
                         rows: Any = None) -> dict[str, Any]:
    """Time ``tokens`` on the pool (or on ``rows`` of it, e.g. the distinct ones) with a fresh cache."""
    import pyarrow as pa

    from siftkit.signals.compute import compute_signals

    table = pool_table if rows is None else pool_table.take(pa.array(rows))
    res: dict[str, Any] = {}
    _, dt = _timed(lambda: compute_signals(table, [{"name": "tokens"}], cache_dir=cache, workers=workers))
    res["seconds"] = dt
    res["records"] = table.num_rows
    if with_stats:
        _, dt2 = _timed(lambda: compute_signals(table, ["text_stats"], cache_dir=cache, workers=workers))
        res["text_stats_seconds"] = dt2
    return res


def _naive_token_counts(pool_table: Any, rows: Any) -> tuple[list[int], float]:
    """Plain ``encode_batch`` loop over the turn texts of ``rows``; per-record totals summed in Python."""
    import pyarrow as pa

    from siftkit.signals.tokenizer import load_tokenizer

    msgs = pool_table.column("messages").take(pa.array(rows)).to_pylist()  # untimed: the texts siftkit counts
    tok = load_tokenizer(None)
    tok.no_truncation()
    tok.no_padding()

    def run() -> list[int]:
        texts = [m["content"] for conv in msgs for m in conv]
        counts: list[int] = []
        for s in range(0, len(texts), 16384):
            counts.extend(len(e.ids) for e in tok.encode_batch(texts[s:s + 16384], add_special_tokens=False))
        totals, pos = [], 0
        for conv in msgs:
            totals.append(sum(counts[pos:pos + len(conv)]))
            pos += len(conv)
        return totals

    totals, dt = _timed(run)
    return totals, dt


def _naive_tokens_stage(a: argparse.Namespace, distinct: bool) -> dict[str, Any]:
    """Baseline on every k-th record (k = 1 / --baseline-sample) of the pool (or of its distinct rows), its
    time scaled to all of them, and a check that siftkit's cached counts (from the siftkit stage run just
    before with the same cache) equal the baseline's on those records."""
    import numpy as np
    import pyarrow as pa

    from siftkit.signals.compute import compute_signals

    pool = _load_pool(a.pool, a.workers)
    rows = _distinct_rows(pool) if distinct else np.arange(len(pool))
    step = max(1, round(1 / a.baseline_sample))
    sample = rows[::step]
    totals, dt = _naive_token_counts(pool.table, sample)
    ours = compute_signals(pool.table.take(pa.array(sample)), [{"name": "tokens"}], cache_dir=a.cache,
                           workers=a.workers)
    same = ours.column("tokens_total").to_pylist() == totals
    return {"seconds": dt * len(rows) / len(sample), "measured_seconds": dt, "sampled_records": len(sample),
            "records": len(rows), "extrapolated": step > 1, "counts_identical": same}


# ---------------------------------------------------------------- stages

def stage_read(a: argparse.Namespace) -> dict[str, Any]:
    import siftkit

    _quiet()
    pool, dt = _timed(lambda: siftkit.read(a.pool, workers=a.workers))
    import pyarrow.compute as pc

    content = pool.table.column("messages").combine_chunks().flatten().field("content")
    return {"seconds": dt, "records": len(pool), "rejected": len(pool.rejects),
            "chars": int(pc.sum(pc.utf8_length(content)).as_py()), "table_gb": pool.table.nbytes / GIB}


def _alpaca_user(instruction: str, inp: str) -> str:
    if not inp.strip():
        return instruction
    return f"{instruction}\n\n{inp}" if instruction else inp


_NAIVE_ADAPT: dict[str, Callable[[dict], list[dict[str, str]]]] = {
    "alpaca": lambda r: [{"role": "user", "content": _alpaca_user(r["instruction"], r.get("input") or "")},
                         {"role": "assistant", "content": r["output"] if "output" in r else r["response"]}],
    "prompt_completion": lambda r: [{"role": "user", "content": r["prompt"]},
                                    {"role": "assistant", "content": r["completion"]}],
    "qa": lambda r: [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}],
    "sharegpt": lambda r: [{"role": {"human": "user", "gpt": "assistant"}.get(t["from"], t["from"]),
                            "content": t["value"]} for t in r["conversations"]],
    "alternating": lambda r: [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                              for i, t in enumerate(r["conversations"])],
}


def _naive_format(rec: dict) -> str:
    if "instruction" in rec:
        return "alpaca"
    if "prompt" in rec:
        return "prompt_completion"
    if "question" in rec:
        return "qa"
    conv = rec["conversations"]
    return "alternating" if isinstance(conv[0], str) else "sharegpt"


def stage_naive_read(a: argparse.Namespace) -> dict[str, Any]:
    def run() -> list[dict[str, Any]]:
        records = []
        root = Path(a.pool)
        for path in sorted(root.rglob("*.jsonl")):
            source = path.relative_to(root).parts[0]
            adapt = None
            with open(path, encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    rec = json.loads(line)
                    if adapt is None:
                        adapt = _NAIVE_ADAPT[_naive_format(rec)]
                    records.append({"id": f"{path.name}:{i}", "source": source, "messages": adapt(rec),
                                    "original": line})
        return records

    records, dt = _timed(run)
    chars = sum(len(m["content"]) for r in records for m in r["messages"])
    return {"seconds": dt, "records": len(records), "chars": chars}


def stage_tokens(a: argparse.Namespace) -> dict[str, Any]:
    pool = _load_pool(a.pool, a.workers)
    return _token_signal_tables(pool.table, a.cache, a.workers, with_stats=True)


def stage_naive_tokens(a: argparse.Namespace) -> dict[str, Any]:
    return _naive_tokens_stage(a, distinct=False)


def stage_tokens_distinct(a: argparse.Namespace) -> dict[str, Any]:
    pool = _load_pool(a.pool, a.workers)
    return _token_signal_tables(pool.table, a.cache, a.workers, with_stats=False, rows=_distinct_rows(pool))


def stage_naive_tokens_distinct(a: argparse.Namespace) -> dict[str, Any]:
    return _naive_tokens_stage(a, distinct=True)


def _selectors() -> dict[str, Any]:
    from siftkit.selectors.random import RandomSelector
    from siftkit.selectors.stratified import StratifiedSelector
    from siftkit.selectors.top import TopSelector

    return {"top": TopSelector(by="tokens_total"), "random": RandomSelector(),
            "stratified": StratifiedSelector(column="source", by="tokens_total")}


def stage_select(a: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from siftkit.selectors.base import SelectionContext
    from siftkit.signals.compute import compute_signals

    pool = _load_pool(a.pool, a.workers)
    signals, load_s = _timed(lambda: compute_signals(pool.table, [{"name": "tokens"}], cache_dir=a.cache,
                                                     workers=a.workers))
    out: dict[str, Any] = {"records": len(pool), "signal_cache_load_seconds": load_s}
    cand = np.arange(len(pool), dtype=np.int64)
    for name, sel in _selectors().items():
        ctx = SelectionContext(pool=pool.table, signals=signals, seed=0)  # fresh: no column caching across runs
        res, dt = _timed(lambda sel=sel, ctx=ctx: sel.run(ctx, cand, BUDGET))
        out[name] = {"seconds": dt, "kept": len(res.kept), "kept_sum": res.kept.sum().item()}
    return out


def stage_naive_select(a: argparse.Namespace) -> dict[str, Any]:
    from siftkit.signals.compute import compute_signals

    pool = _load_pool(a.pool, a.workers)
    sig = compute_signals(pool.table, [{"name": "tokens"}], cache_dir=a.cache, workers=a.workers)
    recs = [{"row": i, "source": s, "tokens_total": t} for i, (s, t) in
            enumerate(zip(pool.table.column("source").to_pylist(), sig.column("tokens_total").to_pylist()))]
    out: dict[str, Any] = {"records": len(recs)}

    def top() -> list[dict]:
        return sorted(recs, key=lambda r: r["tokens_total"], reverse=True)[:BUDGET]

    def rand() -> list[dict]:
        return random.Random(0).sample(recs, BUDGET)

    def strat() -> list[dict]:
        groups: dict[str, list[dict]] = {}
        for r in recs:
            groups.setdefault(r["source"], []).append(r)
        n = len(recs)
        quotas = {s: int(BUDGET * len(g) / n) for s, g in groups.items()}
        left = BUDGET - sum(quotas.values())
        for s in sorted(groups, key=lambda s: -(BUDGET * len(groups[s]) / n - quotas[s]))[:left]:
            quotas[s] += 1
        chosen = []
        for s, g in groups.items():
            chosen.extend(sorted(g, key=lambda r: r["tokens_total"], reverse=True)[:quotas[s]])
        return chosen

    for name, fn in (("top", top), ("random", rand), ("stratified", strat)):
        res, dt = _timed(fn)
        out[name] = {"seconds": dt, "kept": len(res), "kept_sum": sum(r["row"] for r in res)}
    return out


def stage_e2e(a: argparse.Namespace) -> dict[str, Any]:
    exe = shutil.which("siftkit", path=str(Path(sys.executable).parent)) or "siftkit"
    out_dir = os.path.join(a.cache, "out")
    cmd = [exe, "-q", "select", a.pool, "--budget", str(BUDGET), "--stratify", "source", "--by", "tokens_total",
           "--out", out_dir, "--cache-dir", a.cache]
    proc, dt = _timed(lambda: subprocess.run(cmd, check=False, capture_output=True, text=True))
    if proc.returncode != 0:
        raise SystemExit(f"siftkit select failed ({proc.returncode}): {proc.stderr[-2000:]}")
    manifest = json.loads(Path(out_dir, "manifest.json").read_text())
    return {"seconds": dt, "command": " ".join(cmd), "selected": manifest.get("counts", {}).get("selected"),
            "records": manifest.get("counts", {}).get("records"), "timings": manifest.get("timings")}


STAGE_FUNCS = {name: globals()[f"stage_{name}"] for name in STAGES}


# ---------------------------------------------------------------- driver (parent process)

def _pss(p: Any) -> int:
    """Proportional set size (pages shared between forked workers counted once overall); RSS if unknown."""
    try:
        return p.memory_full_info().pss
    except (AttributeError, OSError):
        return p.memory_info().rss


def run_stage(name: str, a: argparse.Namespace, cache: str) -> dict[str, Any]:
    """Run one stage in a subprocess; add its peak RSS (rusage and sampled tree) and CPU time."""
    import psutil

    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tf:
        result_path = tf.name
    cmd = [sys.executable, __file__, "--_stage", name, "--_result", result_path, "--_pool", str(a.pool_dir),
           "--_cache", cache, "--workers", str(a.workers), "--baseline-sample", str(a.baseline_sample)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    tree_peak = 0
    ps = psutil.Process(proc.pid)
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        rss = 0
        try:
            for p in [ps] + ps.children(recursive=True):
                try:
                    rss += _pss(p)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        tree_peak = max(tree_peak, rss)
        time.sleep(0.1)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"stage {name} failed with exit code {code}")
    res = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    res["process_wall_seconds"] = wall
    # wait4 rusage covers the stage process and the workers it waited for: CPU is their sum, maxrss the
    # largest single process among them.
    res["cpu_seconds"] = ru.ru_utime + ru.ru_stime
    res["max_process_rss_gb"] = ru.ru_maxrss * 1024 / GIB
    res["tree_peak_rss_gb"] = tree_peak / GIB  # sampled sum of PSS over the stage's processes
    return res


def run_all(a: argparse.Namespace) -> dict[str, Any]:
    from make_pool_1m import build, default_out

    a.pool_dir = Path(a.pool) if a.pool else default_out(a.records)
    meta = build(a.records, a.pool_dir)
    stages = [s for s in STAGES if s in a.stages]
    results: dict[str, Any] = {}
    tmp_root = tempfile.mkdtemp(prefix="siftkit-bench-")
    caches = {"tokens": "sig", "naive_tokens": "sig", "select": "sig", "naive_select": "sig",
              "tokens_distinct": "distinct", "naive_tokens_distinct": "distinct", "e2e": "e2e",
              "read": "none", "naive_read": "none"}
    try:
        for name in stages:
            if name in ("select", "naive_select") and not os.path.isdir(os.path.join(tmp_root, "sig", "signals")):
                results.update({"tokens": run_stage("tokens", a, os.path.join(tmp_root, "sig"))})
            load0 = os.getloadavg()[0]
            r = run_stage(name, a, os.path.join(tmp_root, caches[name]))
            r["loadavg_1m_before"] = load0
            r["loadavg_1m_after"] = os.getloadavg()[0]
            results[name] = r
            print(f"  {name:24s} {r.get('seconds', 0):8.2f} s  (process {r['process_wall_seconds']:.1f} s, "
                  f"tree peak {r['tree_peak_rss_gb']:.2f} GiB, load {load0:.1f})", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return {"pool": {"dir": str(a.pool_dir), **{k: meta[k] for k in ("records", "base_records", "copies", "bytes")}},
            "workers": a.workers, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                              "platform": platform.platform()},
            "stages": results}


def _token_note(b: dict[str, Any] | None) -> str:
    if not b:
        return ""
    note = "counts identical to baseline" if b["counts_identical"] else "COUNTS DIFFER FROM BASELINE"
    if b["extrapolated"]:
        note += f"; baseline timed on {b['sampled_records']:,} records, scaled"
    return note


def summarise(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows: stage, siftkit s, rec/s, baseline s, ratio, target, pass."""
    st = res["stages"]
    n = res["pool"]["records"]
    rows: list[dict[str, Any]] = []

    def row(stage: str, s: float | None, recs: int | None, base: float | None, target: str,
            ok: bool | None, rss: float | None, note: str = "") -> None:
        rows.append({"stage": stage, "siftkit_s": s, "rec_per_s": (recs / s) if s and recs else None,
                     "baseline_s": base, "speedup": (base / s) if s and base else None, "target": target,
                     "pass": ok, "peak_rss_gb": rss, "note": note})

    if "read" in st:
        r, b = st["read"], st.get("naive_read")
        rate = r["records"] / r["seconds"]
        row("read + normalise", r["seconds"], r["records"], b and b["seconds"], ">= 100K rec/s", rate >= 100_000,
            r["tree_peak_rss_gb"])
    if "tokens" in st:
        r, b = st["tokens"], st.get("naive_tokens")
        rate = r["records"] / r["seconds"]
        ok = rate >= 30_000 and (b is None or b["seconds"] / r["seconds"] >= 2)
        row("token counting", r["seconds"], r["records"], b and b["seconds"], ">= 30K rec/s, >= 2x baseline", ok,
            r["tree_peak_rss_gb"], _token_note(b))
        if "text_stats_seconds" in r:
            row("text_stats (chars, turns)", r["text_stats_seconds"], r["records"], None, "", None, None)
    if "tokens_distinct" in st:
        r, b = st["tokens_distinct"], st.get("naive_tokens_distinct")
        rate = r["records"] / r["seconds"]
        ok = rate >= 30_000 and (b is None or b["seconds"] / r["seconds"] >= 2)
        row("token counting, distinct records only", r["seconds"], r["records"], b and b["seconds"],
            ">= 30K rec/s, >= 2x baseline", ok, r["tree_peak_rss_gb"], _token_note(b))
    if "select" in st:
        r, b = st["select"], st.get("naive_select", {})
        for name, label in (("top", "select top-50K by tokens_total"), ("random", "select random 50K"),
                            ("stratified", "select stratified 50K (source, longest)")):
            s = r[name]["seconds"]
            same = b.get(name) and name != "random" and b[name]["kept_sum"] == r[name]["kept_sum"]
            row(label, s, r["records"], b.get(name, {}).get("seconds"), "< 5 s", s < 5, r["tree_peak_rss_gb"],
                "same rows as baseline" if same else "")
    if "e2e" in st:
        r = st["e2e"]
        base = sum(st[k]["seconds"] for k in ("naive_read", "naive_tokens") if k in st) + sum(
            st["naive_select"][k]["seconds"] for k in ("stratified",) if "naive_select" in st)
        rss = r["tree_peak_rss_gb"]
        row("end to end (siftkit select CLI)", r["seconds"], n, base or None, "peak RSS < 4 GB", rss < 4, rss,
            "baseline = naive read + tokens + stratified")
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]], res: dict[str, Any]) -> str:
    head = "| stage | siftkit (s) | records/s | naive (s) | speedup | peak RSS (GiB) | target | pass | note |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['stage']} | {_fmt(r['siftkit_s'], '.2f')} | {_fmt(r['rec_per_s'], ',.0f')} | "
                     f"{_fmt(r['baseline_s'], '.2f')} | {_fmt(r['speedup'], '.1f') + ('x' if r['speedup'] else '')} | "
                     f"{_fmt(r['peak_rss_gb'], '.2f')} | {r['target']} | "
                     f"{'' if r['pass'] is None else ('yes' if r['pass'] else 'NO')} | {r['note']} |")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 records")
    ap.add_argument("--pool", help="use this pool folder (default: built by make_pool_1m.py)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline-sample", type=float, default=None,
                    help="fraction of records the naive token baseline encodes; its time is scaled to all "
                         "(default: all up to 100K records, else 100K / records)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--json", default=str(HERE / "results" / "foundation.json"))
    ap.add_argument("--_stage", help=argparse.SUPPRESS)
    ap.add_argument("--_result", help=argparse.SUPPRESS)
    ap.add_argument("--_pool", help=argparse.SUPPRESS)
    ap.add_argument("--_cache", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._stage:  # inside a stage subprocess
        a.pool, a.cache = a._pool, a._cache
        a.baseline_sample = a.baseline_sample or 1.0
        os.makedirs(a.cache, exist_ok=True)
        res = STAGE_FUNCS[a._stage](a)
        Path(a._result).write_text(json.dumps(res))
        return 0
    if a.quick:
        a.records = 100_000
    if a.baseline_sample is None:
        a.baseline_sample = min(1.0, 100_000 / a.records)
    if not 0 < a.baseline_sample <= 1:
        ap.error("--baseline-sample must be in (0, 1]")
    a.stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    bad = set(a.stages) - set(STAGES)
    if bad:
        ap.error(f"unknown stages {sorted(bad)}; known: {', '.join(STAGES)}")
    t0 = time.perf_counter()
    res = run_all(a)
    res["total_seconds"] = time.perf_counter() - t0
    rows = summarise(res)
    res["table"] = rows
    res["command"] = " ".join([".venv/bin/python", "benchmarks/bench_foundation.py"] + (argv or sys.argv[1:]))
    res["table_markdown"] = print_table(rows, res)
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2))
    print(f"\nwrote {a.json} ({res['total_seconds']:.0f} s in all)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
