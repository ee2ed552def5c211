"""Decontamination, cleaning signals and language identification: counts and speed, measured side by side.

Sections (each prints a table; everything goes to ``benchmarks/results/cleaning.json``):

1. ``shared``: the whole shared pool (``../shared/data/pool``) decontaminated against all of
   ``../shared/data/eval`` with the default settings (exact + 13-gram / 8-gram overlap >= 0.5): drops per
   source and benchmark, and the ``clean`` preset's drops per rule.
2. ``speed``: decontamination of the ``--records`` pool (default 1M, built by ``make_pool_1m.py``) with
   siftkit's step, and a plain-Python n-gram-set baseline (a dict from each eval n-gram to its items, a
   set of each record's n-grams, the same normalisation, boilerplate rule and threshold) on the first
   ``--baseline-records`` of the same pool; the two must drop the same records there.
   Then the cheap signals (quality, repetition, lang) on ``--signal-records`` records.
3. ``lang``: py3langid vs lingua on the shared pool's zh and en sources (the query of up to
   ``--lang-records`` records per source; a record is correct when the code is its source's language).

Usage::

    .venv/bin/python benchmarks/bench_cleaning.py                       # all sections
    .venv/bin/python benchmarks/bench_cleaning.py --sections lang --lang-records 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHARED = HERE.parents[1] / "shared" / "data"
RESULTS = HERE / "results" / "cleaning.json"
ZH = ("alpaca_zh", "sharegpt_zh_1k")
EN = ("alpaca_en", "lima_train", "gsm8k_train", "chatdoctor_5k", "codealpaca_2k", "gpteacher", "t0_50k")


def load_shared():
    from make_pool_1m import base_inputs

    import siftkit

    return siftkit.read(base_inputs(SHARED / "pool"), on_error="skip")


def section_shared(out: dict) -> None:
    import siftkit
    from siftkit.config import build_config
    from siftkit.pipeline import run_selection

    pool = load_shared()
    t0 = time.perf_counter()
    cfg = build_config({"inputs": ["<pool>"], "decontaminate": {"against": [str(SHARED / "eval")]},
                        "preset": "clean", "budget": "100%", "cache_dir": str(HERE / "data" / "cache_clean")},
                       "bench")
    sel = run_selection(cfg, pool=pool)
    secs = time.perf_counter() - t0
    dec = sel.steps[0]
    rules = {k: v for s in sel.steps[1:] for k, v in s.dropped.items()}
    out["shared"] = {"records": len(pool), "seconds": round(secs, 1), "decontaminate": {
        "dropped": dec.dropped, "by_source": dec.details["by_source"], "by_benchmark": dec.details["by_benchmark"],
        "with_overlap": dec.details["with_overlap"], "eval_items": dec.details["eval_items"],
        "sample": dec.details["sample"], "seconds": round(dec.seconds, 1)},
        "clean_rules": rules, "selected": len(sel.selected),
        "by_source_filtered": {s: v.get("filtered", 0) for s, v in sel.counts()["by_source"].items()}}
    print(f"\n== shared pool: {len(pool):,} records, decontaminate + clean in {secs:.0f} s")
    print(f"{'source':<18}" + "".join(f"{b:>12}" for b in dec.details["eval_items"]))
    for s, per in dec.details["by_source"].items():
        print(f"{s:<18}" + "".join(f"{per.get(b, 0):>12}" for b in dec.details["eval_items"]))
    for k, v in rules.items():
        print(f"  {v:>6}  {k}")
    del siftkit


def baseline_decontaminate(texts_by_record: list[str], items, opts) -> np.ndarray:
    """Plain Python: per record the set of its word n-grams; an item's overlap = shared n-grams / its n-grams."""
    from siftkit.selectors.eval_index import exact_key, normalize

    norm_ngram = [normalize(t).split() for t in items.ngram_text]
    gram_items: dict[tuple, set] = {}
    sizes: dict[int, tuple[int, dict[int, int]]] = {}
    for n_of in (opts.ngram, opts.min_ngram):
        sub: dict[tuple, set] = {}
        for i, w in enumerate(norm_ngram):
            n = opts.ngram if len(w) >= opts.ngram else (opts.min_ngram if len(w) >= opts.min_ngram else 0)
            if n != n_of:
                continue
            for g in {tuple(w[j:j + n]) for j in range(len(w) - n + 1)}:
                sub.setdefault(g, set()).add(i)
        sub = {g: s for g, s in sub.items() if len(s) <= opts.max_item_df}
        totals: dict[int, int] = Counter(i for s in sub.values() for i in s)
        sizes[n_of] = (n_of, totals)
        gram_items.update({(n_of,) + g: s for g, s in sub.items()})
    exact = {exact_key(t): i for i, t in enumerate(items.exact_text) if normalize(t)}
    drop = np.zeros(len(texts_by_record), dtype=bool)
    for r, (turns, text) in enumerate(texts_by_record):
        if any(exact_key(t) in exact for t in turns):
            drop[r] = True
            continue
        w = normalize(text).split()
        for n_of, (n, totals) in sizes.items():
            counts: Counter = Counter()
            for g in {(n,) + tuple(w[j:j + n]) for j in range(len(w) - n + 1)}:
                for i in gram_items.get(g, ()):
                    counts[i] += 1
            if any(c / totals[i] >= opts.threshold for i, c in counts.items()):
                drop[r] = True
                break
    return drop


def section_speed(out: dict, records: int, baseline_records: int, signal_records: int) -> None:
    import pyarrow as pa
    from make_pool_1m import build, default_out

    import siftkit
    from siftkit.selectors.base import SelectionContext
    from siftkit.selectors.decontaminate import Decontaminate
    from siftkit.selectors.eval_index import read_eval_items
    from siftkit.signals.compute import build_signal
    from siftkit.signals.segments import flatten

    path = default_out(records)
    build(records, path, quiet=False)
    t0 = time.perf_counter()
    pool = siftkit.read(str(path), workers=2)
    read_s = time.perf_counter() - t0
    n = len(pool)
    step = Decontaminate(against=[str(SHARED / "eval")])     # default workers: one process per core
    ctx = SelectionContext(pool=pool.table, signals=pa.table({}))
    t0 = time.perf_counter()
    res = step.run(ctx, np.arange(n, dtype=np.int64), None)
    ours_s = time.perf_counter() - t0
    ours_drop = np.ones(n, dtype=bool)
    ours_drop[res.kept] = False
    # baseline on the first baseline_records records (same normalisation and rules), timed from the texts
    m = min(baseline_records, n)
    items = read_eval_items([str(SHARED / "eval")])
    fb = flatten(pool.table.slice(0, m))
    off, roles, contents = fb.offsets.tolist(), fb.roles, fb.contents
    conv = fb.texts("conversation")
    recs = [([contents[j] for j in range(off[i], off[i + 1]) if roles[j] in ("user", "system")], conv[i])
            for i in range(m)]
    t0 = time.perf_counter()
    base_drop = baseline_decontaminate(recs, items, step)
    base_s = time.perf_counter() - t0
    one = Decontaminate(against=[str(SHARED / "eval")], workers=1)       # the same part, one process
    t0 = time.perf_counter()
    one.run(ctx, np.arange(m, dtype=np.int64), None)
    one_s = time.perf_counter() - t0
    agree = bool((base_drop == ours_drop[:m]).all())
    out["speed"] = {"records": n, "read_seconds": round(read_s, 1), "decontaminate_seconds": round(ours_s, 1),
                    "decontaminate_rec_per_s": round(n / ours_s), "dropped": int(ours_drop.sum()),
                    "dropped_by_reason": res.dropped, "baseline_records": m,
                    "baseline_seconds": round(base_s, 1), "baseline_rec_per_s": round(m / base_s),
                    "baseline_agrees": agree, "one_process_seconds": round(one_s, 1),
                    "one_process_rec_per_s": round(m / one_s), "baseline_dropped": int(base_drop.sum()),
                    "ours_dropped_in_baseline_part": int(ours_drop[:m].sum()),
                    "load_average": os.getloadavg(), "cores": os.cpu_count()}
    print(f"\n== decontamination speed ({n:,} records; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    print(f"  siftkit, 2 procs  {n:>9,} rec  {ours_s:>7.1f} s  {n / ours_s:>9,.0f} rec/s  dropped {ours_drop.sum():,}")
    print(f"  siftkit, 1 proc   {m:>9,} rec  {one_s:>7.1f} s  {m / one_s:>9,.0f} rec/s")
    print(f"  plain Python      {m:>9,} rec  {base_s:>7.1f} s  {m / base_s:>9,.0f} rec/s  dropped "
          f"{base_drop.sum():,} (same records: {agree})")
    k = min(signal_records, n)
    part = pool.table.slice(0, k)
    sig_rows = {}
    for spec in ("quality", "repetition", "lang"):
        sig = build_signal(spec)
        sig.setup()
        t0 = time.perf_counter()
        for s in range(0, k, sig.batch_size):
            sig.compute(part.slice(s, sig.batch_size))
        secs = time.perf_counter() - t0
        sig_rows[spec] = {"records": k, "seconds": round(secs, 1), "rec_per_s": round(k / secs)}
        print(f"  signal {spec:<10} {k:>9,} rec  {secs:>7.1f} s  {k / secs:>9,.0f} rec/s (one process)")
    out["speed"]["signals"] = sig_rows


def section_lang(out: dict, per_source: int) -> None:
    from siftkit.signals.lang import Lang
    from siftkit.signals.segments import flatten

    pool = load_shared()
    t = pool.table
    src = np.asarray(t.column("source").to_pylist(), dtype=object)
    rows: dict = {}
    for backend in ("py3langid", "lingua"):
        sig = Lang(backend=backend, segment="query")
        t0 = time.perf_counter()
        sig.setup()
        load_s = time.perf_counter() - t0
        rows[backend] = {"load_seconds": round(load_s, 2), "sources": {}}
        tot_n = tot_ok = 0
        tot_s = 0.0
        for s in ZH + EN:
            idx = np.flatnonzero(src == s)[:per_source]
            if not len(idx):
                continue
            texts = flatten(t.take(idx)).texts("query")
            t0 = time.perf_counter()
            res = sig.identify(texts)
            secs = time.perf_counter() - t0
            want = "zh" if s in ZH else "en"
            ok = sum(r[0] == want for r in res)
            got = Counter(r[0] for r in res if r[0] != want).most_common(3)
            rows[backend]["sources"][s] = {"n": len(idx), "accuracy": round(ok / len(idx), 4),
                                           "seconds": round(secs, 2), "wrong_top": got}
            tot_n, tot_ok, tot_s = tot_n + len(idx), tot_ok + ok, tot_s + secs
        rows[backend]["accuracy"] = round(tot_ok / tot_n, 4)
        rows[backend]["rec_per_s"] = round(tot_n / tot_s)
    out["lang"] = rows
    print("\n== language identification (query, first 1000 chars; one process)")
    print(f"{'source':<16}" + "".join(f"{b:>22}" for b in rows))
    for s in rows["py3langid"]["sources"]:
        print(f"{s:<16}" + "".join(f"{rows[b]['sources'][s]['accuracy']:>22.3f}" for b in rows))
    print(f"{'all (acc)':<16}" + "".join(f"{rows[b]['accuracy']:>22.3f}" for b in rows))
    print(f"{'rec/s':<16}" + "".join(f"{rows[b]['rec_per_s']:>22,}" for b in rows))
    print(f"{'load s':<16}" + "".join(f"{rows[b]['load_seconds']:>22}" for b in rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="shared,speed,lang")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--baseline-records", type=int, default=200_000)
    ap.add_argument("--signal-records", type=int, default=50_000)
    ap.add_argument("--lang-records", type=int, default=1000, help="records per source for the lang comparison")
    a = ap.parse_args(argv)
    if not (SHARED / "pool").is_dir():
        raise SystemExit(f"shared data not found at {SHARED}")
    from siftkit import progress

    progress.set_quiet(True)
    out: dict = {}
    if RESULTS.exists():
        out = json.loads(RESULTS.read_text())
    for s in a.sections.split(","):
        if s == "shared":
            section_shared(out)
        elif s == "speed":
            section_speed(out, a.records, a.baseline_records, a.signal_records)
        elif s == "lang":
            section_lang(out, a.lang_records)
        else:
            raise SystemExit(f"unknown section {s!r}")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
