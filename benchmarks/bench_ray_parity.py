"""Ray engine parity on a real pool: every preset and selector, ``--engine local`` vs ``--engine ray``, byte for byte.

For each case (a recipe: a preset or a selector with the models that work offline here) four runs of
``siftkit run`` (a subprocess each, as a user would run it):

1. ``local``: the local engine, fresh cache;
2. ``ray``: the Ray engine (a private local Ray instance), fresh cache;
3. ``ray-rerun``: the Ray engine again on cache 2 (must compute 0 records: the manifest's cache counts are 0
   and no signal or vector file of the cache is written);
4. ``ray-on-local``: the Ray engine on a copy of cache 1 (the local engine's cache; must compute 0 records).

Runs 2-4 must write ``selected.jsonl`` and ``_siftkit/selection.parquet`` byte-identical to run 1.
Models: the offline static embeddings and MiniLM (the defaults), and tiny randomly initialised causal LMs
(``tests/scoring_tiny.py``) wherever a preset needs the user's model (lm_loss, DEITA, InsTag, RDS+, LESS).
The LLM-judge presets (alpagasus, judge-kmeans) need an LLM server and are not run here.

Usage::

    .venv/bin/python benchmarks/make_pool_1m.py --records 3000 --out /tmp/pool3k
    .venv/bin/python benchmarks/bench_ray_parity.py --pool /tmp/pool3k [--only zip,kmeans] [--budget 300]

Prints a table and writes ``benchmarks/results/bench_ray_parity.json``; exits 1 if any case differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

OUTPUTS = ("selected.jsonl", "_siftkit/selection.parquet")


def cases(models: dict[str, str], targets: str, evals: str) -> dict[str, dict[str, Any]]:
    """Name -> recipe fragment (steps / preset / signals)."""
    from siftkit.presets import PRESETS

    lm, gpt2 = models["lm"], models["gpt2"]
    sf_lm = {"name": "lm_loss", "model": gpt2, "template": "superfiltering", "ifd_tokens": "reference",
             "max_length": 256}
    emb = {"backend": "static"}
    return {
        # presets
        "preset:random": {"preset": "random"},
        "preset:longest": {"preset": "longest"},
        "preset:longest-per-source": {"preset": "longest-per-source"},
        "preset:clean": {"preset": "clean"},
        "preset:zip": {"preset": "zip"},
        "preset:length-kmeans": {"preset": {"name": "length-kmeans", "k": 100}},
        "preset:quality-kmeans": {"preset": {"name": "quality-kmeans", "k": 100, "model": lm,
                                             "lm_loss": {"max_length": 256}}},
        "preset:cherry-ifd": {"preset": {"name": "cherry-ifd", "model": lm, "lm_loss": {"max_length": 256}}},
        # the preset's steps with its lm_loss on a tiny GPT-2 (the preset itself always adds GPT-2 124M)
        "preset:superfiltering": {"steps": PRESETS["superfiltering"]["steps"], "signals": [sf_lm]},
        "preset:superfiltering-d": {"steps": PRESETS["superfiltering-d"]["steps"], "signals": [sf_lm]},
        "preset:deita": {"steps": PRESETS["deita"]["steps"],       # the preset's steps, DEITA on the tiny LM
                         "signals": [{"name": "deita", "model": lm, "max_length": 256}]},
        "preset:instag": {"steps": PRESETS["instag"]["steps"],     # the preset's steps, InsTag on the tiny LM
                          "signals": [{"name": "instag", "model": lm, "max_new_tokens": 8}]},
        "preset:rds-plus": {"preset": {"name": "rds-plus", "targets": targets, "model": lm}},
        "preset:less": {"preset": {"name": "less", "targets": targets.replace(".jsonl", "_4.jsonl"), "model": lm,
                                   "dim": 512, "max_length": 256}},   # 4 targets that fit the tiny LM's 256
        # selectors (one step each, or the step before a random pick)
        "select:top": {"steps": [{"select": "top", "by": "tokens_response"}]},
        "select:bottom": {"steps": [{"select": "bottom", "by": "zlib_ratio"}]},
        "select:stratified": {"steps": [{"select": "stratified", "column": "source", "by": "words_response",
                                         "quota": "equal"}]},
        "select:kmeans": {"steps": [{"select": "kmeans", "k": 50, "embedding": emb}]},
        "select:k-center": {"steps": [{"select": "k-center", "embedding": emb}]},
        "select:facility-location": {"steps": [{"select": "facility-location", "embedding": emb}]},
        "select:repr-filter": {"steps": [{"select": "repr-filter", "by": "tokens_total", "embedding": emb}]},
        "select:diverseevol": {"steps": [{"select": "diverseevol", "initial_size": 100, "round_size": 100,
                                          "embedding": emb}]},
        "select:rds": {"steps": [{"select": "rds", "targets": targets, "embedding": emb}]},
        "step:filter": {"steps": [{"filter": "tokens_response >= 20 and lang == 'en'"}, {"select": "random"}]},
        "step:dedup": {"steps": [{"dedup": "exact", "keep": "longest"}, {"select": "random"}]},
        "step:minhash-dedup": {"steps": [{"dedup": "minhash", "threshold": 0.7}, {"select": "random"}]},
        "step:semdedup": {"steps": [{"step": "semdedup", "eps": 0.1, "k": 20, "embedding": emb},
                                    {"select": "random"}]},
        "step:semdedup-kept": {"steps": [{"step": "semdedup-kept", "eps": 0.1, "k": 20, "embedding": emb},
                                         {"select": "random"}]},
        "step:decontaminate": {"steps": [{"step": "decontaminate", "against": [evals]}, {"select": "random"}]},
        "step:ifd-filter": {"signals": [{"name": "lm_loss", "model": lm, "max_length": 256}],
                            "steps": [{"step": "ifd-filter", "column": "lm_ifd"}, {"select": "random"}]},
        "select:instag-coverage": {"signals": [{"name": "instag", "model": lm, "max_new_tokens": 8}],
                                   "steps": [{"select": "instag-coverage"}]},
    }


def run(recipe: Path, engine: str, cache: Path, out: Path) -> tuple[float, dict[str, Any], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-m", "siftkit.cli", "run", str(recipe), "--set", f"engine={engine}",
           "--set", f"cache_dir={cache}", "--out", str(out), "-q"]
    t = time.perf_counter()
    p = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        return seconds, {}, f"exit {p.returncode}: {p.stderr.strip()[-2000:]}"
    manifest = json.loads((out / "manifest.json").read_text())
    return seconds, manifest, ""


def cache_parts(cache: Path) -> dict[str, tuple[int, int]]:
    """Signal and vector files of a cache (not the Ray reader's ``_pool``) with size and mtime: unchanged by
    a run that computes nothing (the manifest's ``cache`` counts scalar signals only, not vectors)."""
    if not cache.exists():
        return {}
    return {str(p.relative_to(cache)): (p.stat().st_size, p.stat().st_mtime_ns) for p in cache.rglob("*")
            if p.is_file() and p.relative_to(cache).parts[0] != "_pool"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", required=True, help="pool folder (e.g. make_pool_1m.py --records 3000)")
    ap.add_argument("--budget", default="300")
    ap.add_argument("--only", default="", help="comma-separated case names (or name fragments)")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_ray_parity.json"))
    args = ap.parse_args()
    from scoring_tiny import build_tiny_gpt2, build_tiny_lm

    work = Path(args.work or tempfile.mkdtemp(prefix="ray_parity_"))
    work.mkdir(parents=True, exist_ok=True)
    models = {"lm": str(work / "tiny_lm"), "gpt2": str(work / "tiny_gpt2")}
    if not (work / "tiny_lm" / "config.json").exists():
        build_tiny_lm(work / "tiny_lm")
    if not (work / "tiny_gpt2" / "config.json").exists():
        build_tiny_gpt2(work / "tiny_gpt2")
    data = ROOT.parent / "shared" / "data"
    targets = work / "targets" / "gsm8k.jsonl"
    targets.parent.mkdir(exist_ok=True)
    gsm = (data / "eval" / "gsm8k_test.jsonl").read_text().splitlines()
    targets.write_text("\n".join(gsm[:8]) + "\n")
    (targets.parent / "gsm8k_4.jsonl").write_text("\n".join(gsm[:4]) + "\n")
    evals = work / "evals"
    evals.mkdir(exist_ok=True)
    shutil.copy(data / "eval" / "gsm8k_test.jsonl", evals / "gsm8k_test.jsonl")

    wanted = [w for w in args.only.split(",") if w]
    rows = []
    for name, frag in cases(models, str(targets), str(evals)).items():
        if wanted and not any(w in name for w in wanted):
            continue
        d = work / name.replace(":", "_")
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        recipe = d / "recipe.yaml"
        recipe.write_text(json.dumps({"inputs": [args.pool], "budget": args.budget, "seed": 0, **frag}))
        row: dict[str, Any] = {"case": name}
        t_local, m_local, err = run(recipe, "local", d / "c_local", d / "o_local")
        row["local_s"] = round(t_local, 1)
        if err:
            row.update(identical=None, error=f"local: {err}")
            rows.append(row)
            print(f"{name:28s} local failed: {err[-300:]}", flush=True)
            continue
        want = [(d / "o_local" / f).read_bytes() for f in OUTPUTS]
        if (d / "c_local").exists():   # a plan without signals writes no cache
            shutil.copytree(d / "c_local", d / "c_prefilled")
        problems = []
        for label, cache in (("ray", "c_ray"), ("ray-rerun", "c_ray"), ("ray-on-local", "c_prefilled")):
            before = cache_parts(d / cache)
            secs, m, err = run(recipe, "ray", d / cache, d / f"o_{label}")
            row[f"{label}_s"] = round(secs, 1)
            if err:
                problems.append(f"{label}: {err}")
                continue
            got = [(d / f"o_{label}" / f).read_bytes() for f in OUTPUTS]
            for f, a, b in zip(OUTPUTS, want, got):
                if a != b:
                    problems.append(f"{label}: {f} differs")
            computed = {k: v.get("computed", 0) for k, v in (m.get("cache") or {}).items()}
            if label != "ray" and any(computed.values()):
                problems.append(f"{label}: computed {computed}")
            if label != "ray" and cache_parts(d / cache) != before:
                problems.append(f"{label}: wrote cache parts")
        row["selected"] = m_local.get("counts", {}).get("selected", m_local.get("counts"))
        row["identical"] = not problems
        if problems:
            row["problems"] = problems
        rows.append(row)
        print(f"{name:28s} identical={row['identical']!s:5s} local {row['local_s']:6.1f} s  ray "
              f"{row.get('ray_s', 0):6.1f} s  rerun {row.get('ray-rerun_s', 0):6.1f} s  on-local "
              f"{row.get('ray-on-local_s', 0):6.1f} s  {'; '.join(problems)[-600:]}", flush=True)

    print("\n| case | identical | local s | ray s | ray rerun s | ray on local cache s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['identical']} | {r['local_s']} | {r.get('ray_s', '-')} | "
              f"{r.get('ray-rerun_s', '-')} | {r.get('ray-on-local_s', '-')} |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"pool": args.pool, "budget": args.budget, "rows": rows}, indent=1))
    sys.exit(0 if all(r["identical"] for r in rows) else 1)


if __name__ == "__main__":
    main()
