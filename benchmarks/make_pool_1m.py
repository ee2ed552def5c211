"""Build a large benchmark pool (default 1,000,000 records) from the real shared pool.

How the pool is built (deterministic for ``--seed``):

1. The shared pool (``../shared/data/pool``, ~192K usable records in 10 sources and 6 record formats) is
   read with siftkit itself (``on_error="skip"``: the records siftkit rejects, e.g. the malformed
   ``alpaca_zh`` element and the empty responses, are left out, so the built pool reads with no rejects).
2. The base records are put in a seeded random order; output record ``j`` (``0 <= j < N``) is copy
   ``k = j // B`` of base record ``order[j % B]`` (``B`` base records). At 1M that is copies 0..5 of every
   base record (the last copy only for a random part of them). For ``N < B`` it is a random subset, so
   the source mix is kept either way.
3. Copy 0 is the record unchanged. Copy ``k >= 1`` gets the marker ``"[copy k] "`` prefixed to its first
   user text *and* to its last assistant text (the response), so no two records share a query or a
   response and no per-text cache sees an exact repeat. (Middle turns of multi-turn records, ~2K base
   records, do repeat.) Vocabulary does repeat: the pool holds ~192K distinct conversations' words.
4. Records are written as JSON Lines in their source's own record format, one folder per source, one
   file per copy: ``<out>/<source>/c<k>.jsonl``. Formats: Alpaca (``instruction/input/output``; GPTeacher
   keeps ``response``), ``prompt/completion`` (T0), ``question/answer`` (GSM8K), ShareGPT
   ``conversations: [{from, value}]``, LIMA ``conversations: [str, ...]``. The header-less FLAN CoT TSV
   rows ``(question, answer, rationale)`` become ``{"question": q, "answer": rationale + "\\nSo the
   answer is " + answer + "."}`` (question/answer format, so the folder reads without a mapping).
5. ``<out>/.pool_meta.json`` (a dot-file, which readers skip) records N, the seed, the base count and
   the per-source counts; an existing pool with the same meta is reused unless ``--force``.

Usage::

    .venv/bin/python benchmarks/make_pool_1m.py                     # benchmarks/data/pool_1m/
    .venv/bin/python benchmarks/make_pool_1m.py --records 100000 --out benchmarks/data/pool_100k
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
SHARED_POOL = HERE.parents[1] / "shared" / "data" / "pool"
DEFAULT_OUT = HERE / "data" / "pool_1m"
FLAN_MAPPING = {"user": "{0}", "assistant": "{2}"}
META = ".pool_meta.json"


def base_inputs(root: Path) -> list[Any]:
    """Every entry of the shared pool; the header-less FLAN CoT TSV folder gets a column mapping."""
    out: list[Any] = []
    for name in sorted(os.listdir(root)):
        if name.startswith("."):
            continue
        p = str(root / name)
        out.append({"path": p, "mapping": FLAN_MAPPING} if name == "flan_cot" else p)
    return out


def _mark(text: Any, marker: str) -> Any:
    return marker + text if isinstance(text, str) else text


def convert(obj: Any, fmt: str, k: int) -> dict[str, Any]:
    """The record in its source's format (FLAN rows -> question/answer), with copy ``k``'s marker."""
    if fmt == "mapping":  # FLAN CoT row: [question, answer, rationale]
        q, a, rationale = (list(obj) + ["", "", ""])[:3]
        obj = {"question": q, "answer": f"{rationale}\nSo the answer is {a}."}
        fmt = "qa"
    if k == 0:
        return obj
    m = f"[copy {k}] "
    rec = dict(obj)
    if fmt == "alpaca":
        rec["instruction"] = _mark(rec.get("instruction"), m)
        key = "output" if "output" in rec else "response"
        rec[key] = _mark(rec[key], m)
    elif fmt == "prompt_completion":
        rec["prompt"] = _mark(rec["prompt"], m)
        rec["completion"] = _mark(rec["completion"], m)
    elif fmt == "qa":
        rec["question"] = _mark(rec["question"], m)
        rec["answer"] = _mark(rec["answer"], m)
    elif fmt == "alternating":
        conv = list(rec["conversations"])
        conv[0] = _mark(conv[0], m)
        last = len(conv) - 1 if len(conv) % 2 == 0 else len(conv) - 2
        conv[last] = _mark(conv[last], m)
        rec["conversations"] = conv
    elif fmt == "sharegpt":
        conv = [dict(t) for t in rec["conversations"]]
        users = [i for i, t in enumerate(conv) if str(t.get("from", t.get("role", ""))).lower() in ("human", "user")]
        asst = [i for i, t in enumerate(conv) if str(t.get("from", t.get("role", ""))).lower()
                in ("gpt", "assistant", "chatgpt", "bard", "model")]
        vk = "value" if "value" in conv[0] else "content"
        if users:
            conv[users[0]][vk] = _mark(conv[users[0]][vk], m)
        if asst:
            conv[asst[-1]][vk] = _mark(conv[asst[-1]][vk], m)
        rec["conversations"] = conv
    else:
        raise ValueError(f"no copy marker rule for format {fmt!r}")
    return rec


def build(records: int, out: Path, src: Path = SHARED_POOL, seed: int = 0, force: bool = False,
          quiet: bool = False) -> dict[str, Any]:
    """Build the pool (or reuse an identical one); returns its meta dict."""
    meta_path = out / META
    want = {"records": records, "seed": seed, "source_pool": str(src), "version": 1}
    if meta_path.exists() and not force:
        meta = orjson.loads(meta_path.read_bytes())
        if all(meta.get(k) == v for k, v in want.items()):
            return meta
    if not src.is_dir():
        raise SystemExit(f"shared pool not found at {src}: cannot build the benchmark pool")
    import siftkit
    from siftkit import progress

    progress.set_quiet(True)

    t0 = time.perf_counter()
    pool = siftkit.read(base_inputs(src), on_error="skip")
    fmt_of = {f.rel: f.format for f in pool.files}
    t = pool.table
    files = t.column("file").to_pylist()
    sources = t.column("source").to_pylist()
    originals = t.column("original").to_pylist()
    b = len(originals)
    order = np.random.default_rng(seed).permutation(b)
    # (source, copy) -> base indices, in base (pool) order
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for j in range(records):
        groups[(sources[order[j % b]], j // b)].append(int(order[j % b]))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    per_source: Counter[str] = Counter()
    for (source, k), idx in sorted(groups.items()):
        d = out / source
        d.mkdir(exist_ok=True)
        with open(d / f"c{k:02d}.jsonl", "wb") as fh:
            for i in sorted(idx):
                rec = convert(orjson.loads(originals[i]), fmt_of[files[i]], k)
                fh.write(orjson.dumps(rec))
                fh.write(b"\n")
        per_source[source] += len(idx)
    meta = {**want, "base_records": b, "copies": -(-records // b), "by_source": dict(sorted(per_source.items())),
            "bytes": sum(p.stat().st_size for p in out.rglob("*.jsonl")),
            "build_seconds": round(time.perf_counter() - t0, 1)}
    meta_path.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    if not quiet:
        print(f"wrote {records:,} records ({meta['bytes'] / 1e6:.0f} MB) from {b:,} base records to {out} "
              f"in {meta['build_seconds']} s", file=sys.stderr)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="records in the built pool (default 1M)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/data/pool_1m; "
                                                           "pool_100k etc. for other --records)")
    ap.add_argument("--source", type=Path, default=SHARED_POOL, help="the shared pool folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if an identical pool exists")
    a = ap.parse_args(argv)
    if a.records <= 0:
        ap.error("--records must be positive")
    out = a.out or default_out(a.records)
    meta = build(a.records, out, a.source, a.seed, a.force)
    print(orjson.dumps(meta, option=orjson.OPT_INDENT_2).decode())
    return 0


def default_out(records: int) -> Path:
    """pool_1m, pool_100k, pool_2500, ..."""
    if records % 1_000_000 == 0:
        label = f"{records // 1_000_000}m"
    elif records % 1000 == 0:
        label = f"{records // 1000}k"
    else:
        label = str(records)
    return HERE / "data" / f"pool_{label}"


if __name__ == "__main__":
    raise SystemExit(main())
