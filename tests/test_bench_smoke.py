"""CI smoke run of ``siftkit bench``: tiny random Llama, tiny pool, 2 random seeds + 1 method, 5 items per task.

Checks the pipeline end to end: every cell's selection manifest, training log and raw per-item outputs
exist; the results table and p-values agree with the per-cell scores; the report shows them; a rerun skips
finished cells; changed settings are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("scipy")

from bench_helpers import config, write_eval, write_pool
from siftkit.bench.config import build_bench_config
from siftkit.bench.runner import run_bench
from siftkit.bench.stats import mann_whitney
from siftkit.errors import ConfigError

TASKS = ["mmlu", "gsm8k", "bbh", "ifeval", "heldout"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from scoring_tiny import build_tiny_lm

    tmp = tmp_path_factory.mktemp("bench")
    model = build_tiny_lm(tmp / "model")
    raw = config(tmp, model, write_pool(tmp / "pool"), write_eval(tmp / "eval"))
    results = run_bench(build_bench_config(raw))
    return {"raw": raw, "out": Path(raw["output"]), "results": results}


def _cells(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    got = {}
    for m in ("random", "longest"):
        for d in sorted((out / "budget-8" / m).glob("seed-*")):
            got[(m, int(d.name.split("-")[1]))] = json.loads((d / "done.json").read_text())
    return got


def test_every_cell_is_traceable(bench: dict[str, Any]) -> None:
    out = bench["out"]
    cells = _cells(out)
    assert sorted(cells) == [("longest", 0), ("random", 0), ("random", 1)]
    heldout = set(json.loads((out / "bench.json").read_text())["heldout_ids"])
    assert len(heldout) == 5
    for (m, s), done in cells.items():
        d = out / "budget-8" / m / f"seed-{s}"
        manifest = json.loads((d / "selection" / "manifest.json").read_text())
        assert manifest["seed"] == s and manifest["counts"]["selected"] == 8
        ids = [json.loads(line)["id"] for line in (d / "selection" / "selected.jsonl").read_text().splitlines()]
        assert len(ids) == 8 and not heldout & set(ids)          # held-out records are never selected
        log = json.loads((d / "train_log.json").read_text())
        assert log["examples"] == 8 and log["steps"] == 2 and log["seed"] == s
        assert (d / "model" / "adapter_config.json").is_file()   # LoRA adapter saved
        for t in TASKS:
            rows = (d / "eval" / f"{t}.jsonl").read_text().splitlines()
            assert len(rows) == 5, t                              # limit 5 per task, raw per-item outputs
        assert set(done["scores"]) == set(TASKS)
        recs = [json.loads(x) for x in (d / "eval" / "mmlu.jsonl").read_text().splitlines()]
        assert done["scores"]["mmlu"] == pytest.approx(sum(r["correct"] for r in recs) / 5)
    sel = {m_s: (out / "budget-8" / m_s[0] / f"seed-{m_s[1]}" / "selection" / "selected.jsonl").read_text()
           for m_s in cells}
    assert sel[("random", 0)] != sel[("random", 1)]            # seeds give different random subsets
    longest = [json.loads(x)["messages"][-1]["content"] for x in sel[("longest", 0)].splitlines()]
    assert min(len(x) for x in longest) >= 90                  # top by response tokens: the long answers


def test_table_and_pvalues_match_the_cells(bench: dict[str, Any]) -> None:
    res = bench["results"]["budgets"]["8"]
    cells = _cells(bench["out"])
    assert res["columns"] == TASKS + ["average"]
    for t in TASKS:
        rnd = [cells[("random", s)]["scores"][t] for s in (0, 1)]
        meth = [cells[("longest", 0)]["scores"][t]]
        r = res["methods"]["random"][t]
        assert r["n"] == 2 and r["mean"] == pytest.approx(sum(rnd) / 2)
        test = res["methods"]["longest"][t]["test"]
        want = mann_whitney(meth, rnd, higher_is_better=t != "heldout")
        assert test["p"] == pytest.approx(want["p"]) and test["min_p"] == pytest.approx(1 / 3)
        assert test["alternative"] == ("less" if t == "heldout" else "greater")
    # fine-tuning on the pool lowers the held-out loss of the base model
    base = bench["results"]["base"]
    assert all(c["scores"]["heldout"] < base["heldout"] for c in cells.values())
    md = (bench["out"] / "results.md").read_text()
    assert "| random | 2 |" in md and "| longest | 1 |" in md and "min 0.333" in md


def test_report_shows_table_pvalues_and_plots(bench: dict[str, Any]) -> None:
    html = (bench["out"] / "bench_report.html").read_text()
    assert html.count('<figure class="card">') == len(TASKS) + 1           # one plot per task + average
    assert html.count('data-points="3"') == len(TASKS) + 1                 # 2 random + 1 method dots each
    assert "p-values vs random" in html and "1/(n+1)" in html
    assert "budget-8/longest/seed-0" in html and "<script" not in html


def test_rerun_skips_finished_cells_and_refuses_changed_settings(bench: dict[str, Any]) -> None:
    out = bench["out"]
    done = out / "budget-8" / "random" / "seed-1" / "done.json"
    before = os.stat(done).st_mtime_ns
    again = run_bench(build_bench_config(bench["raw"]))
    assert os.stat(done).st_mtime_ns == before
    assert again["budgets"] == bench["results"]["budgets"]
    changed = dict(bench["raw"], train={**bench["raw"]["train"], "lr": 5e-4})
    with pytest.raises(ConfigError, match="different settings"):
        run_bench(build_bench_config(changed))
