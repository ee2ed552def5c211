"""Run a bench: every (budget, method, seed) cell = select -> fine-tune -> evaluate; then statistics and report.

Layout of the output folder::

    bench.json                       the validated config, the held-out ids, the eval item counts
    base/                            the untrained base model's scores (eval_base: true)
    budget-<b>/<method>/seed-<s>/
        selection/                   manifest.json, selected.jsonl (messages), _siftkit/selection.parquet
        train_log.json               settings, seed, loss history, examples/skipped/truncated
        model/                       LoRA adapter or full weights (train.save_model)
        eval/<task>.jsonl            raw per-item outputs (prompt, output, prediction, correct ...)
        done.json                    scores per task (testset:PATH#judge too with eval.judge), per-kind
                                     testset means (by_kind), judge usage, fingerprint: the cell is finished
    results.json, results.md, bench_report.html

A cell whose ``done.json`` exists is not rerun. Its fingerprint (base model, template, budget, seed,
method recipe, train and eval settings, held-out split) must match the config: a changed setting is an
error naming the cell, never a silent mix of old and new numbers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .. import progress
from ..errors import ConfigError
from ..io.pool import Pool, read_pool
from .config import BenchConfig, MethodSpec
from .evals import HIGHER_IS_BETTER


@dataclass
class Cell:
    budget: Any
    method: MethodSpec | None       # None: the base model, not fine-tuned
    seed: int
    path: str

    @property
    def name(self) -> str:
        return "base" if self.method is None else self.method.name


def _dump(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str))
    os.replace(tmp, path)


def _load(path: str) -> Any:
    with open(path, "rb") as fh:
        return orjson.loads(fh.read())


def eval_task_paths(ev: dict[str, Any]) -> list[str]:
    """The data files of the configured built-in eval tasks that exist (for decontaminating the pool)."""
    from .evals.common import task_path

    names = {"mmlu": "mmlu", "gsm8k": "gsm8k_test.jsonl", "bbh": "bbh", "ifeval": "ifeval_input.jsonl"}
    out = []
    for task in ev.get("tasks") or []:
        if task in names:
            try:
                out.append(task_path(ev, task, names[task]))
            except ConfigError:
                pass   # the task's own loader reports missing data when it runs
    return out


def plan_cells(cfg: BenchConfig, only: list[str] | None = None) -> list[Cell]:
    cells = [Cell(None, None, 0, os.path.join(cfg.output, "base"))] if cfg.eval_base else []
    for b in cfg.budgets:
        for m in cfg.all_methods():
            if only and m.name not in only:
                continue
            for s in m.seeds:
                cells.append(Cell(b, m, s, os.path.join(cfg.output, f"budget-{b}", m.name, f"seed-{s}")))
    return cells


def score_columns(ev: dict[str, Any]) -> list[str]:
    """The score columns of the configured tasks: each task, and ``testset:PATH#judge`` after each test-set
    task when ``eval.judge`` is set."""
    from .evals.testset import JUDGE_SUFFIX

    out = []
    for t in ev["tasks"]:
        out.append(t)
        if t.startswith("testset:") and ev.get("judge"):
            out.append(t + JUDGE_SUFFIX)
    return out


def fingerprint(cfg: BenchConfig, cell: Cell, heldout_ids: list[str]) -> str:
    from .evals.testset import JUDGE_DEFAULTS, JUDGE_TRANSPORT

    ev = cfg.eval
    if ev.get("judge"):   # where the judge is and how fast it is asked change no rating
        ev = {**ev, "judge": {k: v for k, v in {**JUDGE_DEFAULTS, **ev["judge"]}.items() if k not in JUDGE_TRANSPORT}}
    what = {"base_model": cfg.base_model, "gguf_file": cfg.gguf_file, "template": cfg.template,
            "eval": ev, "heldout": hashlib.sha256("\n".join(heldout_ids).encode()).hexdigest(),
            "inputs": cfg.inputs, "train_seed": cfg.seed, "max_length": cfg.train["max_length"],
            "dtype": cfg.train.get("dtype"), "device": cfg.device}
    if cell.method is not None:
        what.update(budget=cell.budget, seed=cell.seed, recipe=cell.method.recipe, train=cfg.train,
                    tokenizer=cfg.tokenizer)
        if cfg.decontaminate is not False:   # the pool a cell selects from (older outputs: a changed setting)
            what["decontaminate"] = cfg.decontaminate
    raw = json.dumps(what, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def split_heldout(pool: Pool, n: int, seed: int) -> tuple[Pool, np.ndarray]:
    """(pool without the held-out rows, held-out row indices); the same split for every cell."""
    if n >= len(pool):
        raise ConfigError(f"pool.heldout ({n}) must be smaller than the pool ({len(pool)} records)")
    rng = np.random.default_rng([seed, 0x5EED])
    held = np.sort(rng.choice(len(pool), size=n, replace=False)) if n else np.zeros(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(pool)), held)
    import pyarrow as pa

    train = Pool(table=pool.table.take(pa.array(keep, pa.int64())), rejects=pool.rejects, files=pool.files,
                 skipped_files=pool.skipped_files, read_seconds=pool.read_seconds)
    return train, held


class Bench:
    def __init__(self, cfg: BenchConfig):
        self.cfg = cfg
        self._base: Any = None
        self._items: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ inputs, model, eval items
    def prepare(self) -> None:
        cfg = self.cfg
        os.makedirs(cfg.output, exist_ok=True)
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        pool = read_pool(cfg.inputs, on_error=cfg.on_error)
        self.train_pool, held = split_heldout(pool, cfg.heldout, cfg.heldout_seed)
        self.decontamination: dict[str, Any] = {}
        if cfg.decontaminate is not False:
            from ..selectors.decontaminate import decontaminate_pool

            self.train_pool, self.decontamination = decontaminate_pool(
                self.train_pool, eval_task_paths(cfg.eval), cfg.decontaminate)
        tbl = pool.table
        self.heldout = [{"id": i, "messages": m} for i, m in zip(
            tbl.column("id").take(held).to_pylist(), tbl.column("messages").take(held).to_pylist())]
        self.heldout_ids = [h["id"] for h in self.heldout]
        progress.info(f"bench: pool {len(pool):,} records, {len(self.heldout):,} held out, "
                      f"{len(self.train_pool):,} to select from")

    def selection_tokenizer(self) -> str:
        if self.cfg.tokenizer:
            return self.cfg.tokenizer
        base = self.cfg.base_model
        if self.cfg.gguf_file and os.path.isdir(base):
            return os.path.join(base, self.cfg.gguf_file)
        return base

    def base(self) -> Any:
        if self._base is None:
            from ..scoring.model import load_model
            from ..scoring.templates import resolve

            lm = load_model(self.cfg.base_model, gguf_file=self.cfg.gguf_file, device=self.cfg.device,
                            dtype=self.cfg.train.get("dtype", "auto"))
            if lm.tokenizer.pad_token_id is None:
                lm.tokenizer.pad_token = lm.tokenizer.eos_token
            self.template = resolve(self.cfg.template, lm.tokenizer)
            self._base = lm
        return self._base

    def items(self, task: str) -> list[dict[str, Any]]:
        if task not in self._items:
            if task == "heldout":
                from .evals.common import task_limit

                lim = task_limit(self.cfg.eval, "heldout")
                self._items[task] = self.heldout[:lim] if lim else self.heldout
            elif task.startswith("lm_eval:"):
                self._items[task] = []
            elif task.startswith("testset:"):
                from .evals import testset as ts

                self._items[task] = ts.load_path(task.split(":", 1)[1], self.cfg.eval, task, seed=0)
            else:
                import importlib

                mod = importlib.import_module(f"siftkit.bench.evals.{task}")
                self._items[task] = mod.load(self.cfg.eval, seed=0)
            if task == "heldout" and not self._items[task]:
                raise ConfigError("eval.tasks has 'heldout' but pool.heldout is 0: set pool.heldout (e.g. 50)")
        return self._items[task]

    # ------------------------------------------------------------------ one cell
    def evaluate(self, model: Any, cell_dir: str) -> tuple[dict[str, float], dict[str, bool], dict[str, float]]:
        """Scores, higher-is-better and seconds per score column; per-kind test-set means and judge usage
        are left in ``self.by_kind`` and ``self.judge_usage`` (per test-set task)."""
        import importlib

        from .evals.common import EvalModel, task_limit, write_jsonl

        lm = self.base()
        ev = dict(self.cfg.eval, max_length=int(self.cfg.train["max_length"]))
        em = EvalModel(model, lm.tokenizer, self.template, lm.device, batch_size=int(ev["batch_size"]))
        os.makedirs(os.path.join(cell_dir, "eval"), exist_ok=True)
        scores, higher, secs = {}, {}, {}
        self.by_kind: dict[str, Any] = {}
        self.judge_usage: dict[str, Any] = {}
        for task in ev["tasks"]:
            t0 = time.perf_counter()
            if task.startswith("lm_eval:"):
                from .evals import lm_eval_task

                score, hib, recs = lm_eval_task.run(model, lm.tokenizer, task.split(":", 1)[1], task_limit(ev, task),
                                                    int(ev["batch_size"]))
            elif task.startswith("testset:"):
                from .evals import testset as ts

                score, recs = ts.run(em, self.items(task), ev)
                hib = True
                scale = None
                if ev.get("judge"):
                    jscore, usage = ts.judge(recs, ev["judge"], self.cfg.cache_dir)
                    scores[task + ts.JUDGE_SUFFIX], higher[task + ts.JUDGE_SUFFIX] = float(jscore), True
                    self.judge_usage[task], scale = usage, usage["scale"]
                    progress.info(f"  {task}{ts.JUDGE_SUFFIX}: {jscore:.4f}")
                self.by_kind[task] = ts.by_kind(recs, scale)
            else:
                mod = importlib.import_module(f"siftkit.bench.evals.{task}")
                score, recs = mod.run(em, self.items(task), ev)
                hib = HIGHER_IS_BETTER[task]
            fname = "testset_" + os.path.splitext(os.path.basename(task.split(":", 1)[1]))[0] if task.startswith("testset:") else \
                task.replace(":", "_")
            write_jsonl(os.path.join(cell_dir, "eval", f"{fname}.jsonl"), recs)
            scores[task], higher[task] = float(score), hib
            secs[task] = round(time.perf_counter() - t0, 2)
            progress.info(f"  {task}: {score:.4f} ({len(recs)} items, {secs[task]:.0f}s)")
        return scores, higher, secs

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        from ..config import build_config
        from ..output import write_selection
        from ..pipeline import run_selection

        cfg = self.cfg
        fp = fingerprint(cfg, cell, self.heldout_ids)
        done_path = os.path.join(cell.path, "done.json")
        if os.path.isfile(done_path):
            done = _load(done_path)
            if done.get("fingerprint") != fp:
                raise ConfigError(f"{cell.path} was run with different settings (fingerprint {done.get('fingerprint')}"
                                  f" != {fp}); use a new output folder or delete that cell to rerun it")
            progress.info(f"bench: {cell.path} done, skipped")
            return done
        os.makedirs(cell.path, exist_ok=True)
        progress.info(f"bench: {cell.name} budget={cell.budget} seed={cell.seed}")
        t0 = time.perf_counter()
        lm = self.base()
        timings: dict[str, Any] = {}
        info: dict[str, Any] = {}
        if cell.method is None:
            model = lm.model
        else:
            rc = build_config({"inputs": cfg.inputs, "on_error": cfg.on_error, "tokenizer": self.selection_tokenizer(),
                               "budget": cell.budget, "seed": cell.seed, "cache_dir": cfg.cache_dir,
                               **copy.deepcopy(cell.method.recipe)}, f"methods.{cell.name}")
            sel = run_selection(rc, pool=self.train_pool)
            write_selection(sel, os.path.join(cell.path, "selection"), "messages")
            timings["select_s"] = round(time.perf_counter() - t0, 2)
            convs = self.train_pool.table.column("messages").take(sel.selected).to_pylist()
            info["selected"] = len(convs)
            from ..training.train import build_examples, train_cell

            ex = build_examples(convs, lm.tokenizer, self.template, int(cfg.train["max_length"]))
            t1 = time.perf_counter()
            model, log = train_cell(copy.deepcopy(lm.model), lm.tokenizer, ex, cfg.train, cell.path,
                                    seed=cfg.seed + cell.seed, device=lm.device)
            timings["train_s"] = round(time.perf_counter() - t1, 2)
            _dump(os.path.join(cell.path, "train_log.json"), log)
            info.update(train_loss=log["train_loss"], train_examples=log["examples"], steps=log["steps"])
        scores, higher, secs = self.evaluate(model, cell.path)
        if self.judge_usage:
            info["judge_usage"] = self.judge_usage
        timings["eval_s"] = secs
        timings["total_s"] = round(time.perf_counter() - t0, 2)
        done = {"method": cell.name, "budget": cell.budget, "seed": cell.seed, "fingerprint": fp, "scores": scores,
                "higher_is_better": higher, "info": info, "timings": timings,
                "items": {t: len(self.items(t)) for t in cfg.eval["tasks"] if not t.startswith("lm_eval:")}}
        if self.by_kind:
            done["by_kind"] = self.by_kind
        _dump(done_path, done)
        del model
        return done


def run_bench(cfg: BenchConfig, only: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every cell, then write results.json, results.md and bench_report.html."""
    bench = Bench(cfg)
    bench.prepare()
    _dump(os.path.join(cfg.output, "bench.json"),
          {"config": cfg.raw, "heldout_ids": bench.heldout_ids, "train": cfg.train, "eval": cfg.eval,
           "decontamination": bench.decontamination})
    for cell in plan_cells(cfg, only):
        bench.run_cell(cell)
    return write_results(cfg)


def collect(cfg: BenchConfig) -> dict[str, Any]:
    """Read every finished cell's done.json (cells not run yet are simply absent)."""
    base = None
    p = os.path.join(cfg.output, "base", "done.json")
    if cfg.eval_base and os.path.isfile(p):
        base = _load(p)
    by_budget: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for b in cfg.budgets:
        for m in cfg.all_methods():
            for s in m.seeds:
                d = os.path.join(cfg.output, f"budget-{b}", m.name, f"seed-{s}", "done.json")
                if os.path.isfile(d):
                    by_budget.setdefault(str(b), {}).setdefault(m.name, {})[s] = _load(d)
    return {"base": base, "cells": by_budget}


MIN_KIND_ITEMS = 5   # a kind with fewer items per run gets means but no significance test


def kind_tables(cells: dict[str, dict[int, dict[str, Any]]], ev: dict[str, Any]) -> dict[str, Any]:
    """Per test-set task and evolution kind: each method's per-run means of token F1 (and the judge's 0-1
    rating) with mean ± std over runs and the same U test vs random as the main table, when the kind has
    at least ``MIN_KIND_ITEMS`` items (``test_skipped`` says why otherwise)."""
    from .stats import compare

    out: dict[str, Any] = {}
    for task in ev["tasks"]:
        if not task.startswith("testset:"):
            continue
        per: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
        n_items: dict[str, int] = {}
        for m, seeds in cells.items():
            for s, d in seeds.items():
                for kind, row in ((d.get("by_kind") or {}).get(task) or {}).items():
                    per.setdefault(kind, {}).setdefault(m, {})[s] = {
                        "f1": row["f1"], **({"judge": row["judge"]} if "judge" in row else {})}
                    n_items[kind] = max(n_items.get(kind, 0), int(row["n"]))
        kinds = {}
        for kind, mcells in sorted(per.items()):
            cols = ["f1"] + (["judge"] if ev.get("judge") else [])
            res = compare(mcells, cols, {c: True for c in cols}, [])
            res["n_items"] = n_items[kind]
            if n_items[kind] < MIN_KIND_ITEMS:
                for row in res["methods"].values():
                    for c in cols:
                        row[c].pop("test", None)
                res["test_skipped"] = f"fewer than {MIN_KIND_ITEMS} items of this kind"
            kinds[kind] = res
        if kinds:
            out[task] = kinds
    return out


def write_results(cfg: BenchConfig) -> dict[str, Any]:
    from .report import render_bench_report, results_markdown
    from .stats import compare

    got = collect(cfg)
    tasks = score_columns(cfg.eval)
    higher: dict[str, bool] = {t: HIGHER_IS_BETTER.get(t, True) for t in tasks}
    for cells in got["cells"].values():
        for seeds in cells.values():
            for d in seeds.values():
                higher.update(d.get("higher_is_better", {}))
    results: dict[str, Any] = {"tasks": tasks, "higher_is_better": higher, "budgets": {},
                               "random_seeds": cfg.random_seeds,
                               "method_seeds": {m.name: m.seeds for m in cfg.all_methods()},
                               "base": got["base"]["scores"] if got["base"] else None,
                               "train": cfg.train, "eval": {k: v for k, v in cfg.eval.items() if k != "paths"},
                               "base_model": cfg.base_model}
    for b, cells in got["cells"].items():
        scores = {m: {s: d["scores"] for s, d in seeds.items()} for m, seeds in cells.items()}
        results["budgets"][b] = compare(scores, tasks, higher,
                                        [t for t in cfg.eval["tasks"] if higher.get(t, True)])
        kinds = kind_tables(cells, cfg.eval)
        if kinds:
            results["budgets"][b]["by_kind"] = kinds
        results["budgets"][b]["cells"] = {m: {str(s): {"scores": d["scores"], "info": d.get("info", {}),
                                                       "path": os.path.relpath(os.path.join(
                                                           cfg.output, f"budget-{b}", m, f"seed-{s}"), cfg.output)}
                                              for s, d in seeds.items()} for m, seeds in cells.items()}
    _dump(os.path.join(cfg.output, "results.json"), results)
    with open(os.path.join(cfg.output, "results.md"), "w", encoding="utf-8") as fh:
        fh.write(results_markdown(results))
    render_bench_report(results, os.path.join(cfg.output, "bench_report.html"))
    return results
