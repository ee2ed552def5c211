"""The ``siftkit bench`` subcommand. Wire it with ``add_bench_parser(sub)`` in ``siftkit.cli``."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_bench(a: argparse.Namespace) -> int:
    from .. import progress
    from .config import load_bench_config
    from .runner import plan_cells, run_bench, write_results

    cfg = load_bench_config(a.config)
    if a.output:
        cfg.output = a.output
        if not cfg.raw.get("cache_dir"):
            import os

            cfg.cache_dir = os.path.join(a.output, "cache")
    if a.base_model:
        cfg.base_model = cfg.raw["base_model"] = a.base_model
    if a.dry_run:
        for c in plan_cells(cfg, a.only):
            print(f"{c.name}\tbudget={c.budget}\tseed={c.seed}\t{c.path}")
        return 0
    if not a.report_only:   # the bench extra and every method's needs, before any cell runs
        from ..config import build_config
        from ..preflight import preflight, require

        require({m: "fine-tuning and evaluation" for m in ("torch", "transformers", "trl", "peft", "datasets")},
                "siftkit bench")
        for m in cfg.methods:
            preflight(build_config({"inputs": cfg.inputs, "budget": 1, "tokenizer": cfg.tokenizer, **m.recipe},
                                   f"{a.config}: methods.{m.name}"))
    results = write_results(cfg) if a.report_only else run_bench(cfg, only=a.only)
    progress.info(f"bench: results in {cfg.output}/results.md and {cfg.output}/bench_report.html")
    import os

    with open(os.path.join(cfg.output, "results.md"), encoding="utf-8") as fh:
        print(fh.read())
    return 0 if results["budgets"] or a.report_only else 4


def add_bench_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="compare selection methods: select, fine-tune, evaluate, test vs random",
                       description="Run every (method, seed) cell of a bench config: selection -> fine-tuning -> "
                                   "evaluation; finished cells are skipped. Writes results.md, results.json and "
                                   "bench_report.html (docs/bench.md).")
    p.add_argument("config", help="bench config (YAML)")
    p.add_argument("-o", "--output", help="output folder (default: the config's 'output')")
    p.add_argument("--base-model", help="override the config's base_model (hub name, folder or .gguf file)")
    p.add_argument("--only", action="append", metavar="METHOD",
                   help="run only these methods (repeatable; 'random' for the baselines)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their folders, run nothing")
    p.add_argument("--report-only", action="store_true", help="rebuild the results and report from finished cells")
    p.set_defaults(func=cmd_bench)
    return p
