"""Bench config validation: every error names the key at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from siftkit.bench.config import build_bench_config, load_bench_config
from siftkit.errors import ConfigError

BASE: dict[str, Any] = {"pool": {"inputs": ["p"]}, "budget": 10, "base_model": "m",
                        "methods": {"longest": {"steps": [{"select": "top", "by": "tokens_response"}]}}}


def cfg(**over: Any) -> Any:
    d = {**BASE, **over}
    return build_bench_config({k: v for k, v in d.items() if v is not None}, "b.yaml")


def test_defaults() -> None:
    c = cfg()
    assert c.random_seeds == [0, 1, 2, 3, 4] and c.budgets == [10] and c.train["mode"] == "lora"
    assert c.train["lr"] == 2e-4 and c.train["epochs"] == 3 and c.train["weight_decay"] == 0.1
    assert [m.name for m in c.all_methods()] == ["random", "longest"]
    assert c.all_methods()[0].seeds == [0, 1, 2, 3, 4] and c.methods[0].seeds == [0]
    assert cfg(train={"mode": "full"}).train["lr"] == 2e-5
    assert cfg(methods={"p": "longest-per-source"}).methods[0].recipe == {"preset": "longest-per-source"}


@pytest.mark.parametrize("over,match", [
    ({"bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
    ({"pool": None}, "'pool' is required"),
    ({"pool": {"inputs": ["p"], "heldot": 3}}, r"pool: unknown key\(s\) \['heldot'\]"),
    ({"budget": None}, "'budget' is required"),
    ({"budget": -3}, "budgets\\[0\\]"),
    ({"budgets": [10]}, "not both"),
    ({"base_model": None}, "'base_model' is required"),
    ({"methods": {}}, "'methods' is required"),
    ({"methods": {"random": {"steps": ["random"]}}}, "methods.random: .*reserved"),
    ({"methods": {"x": {"steps": [{"select": "nope"}]}}}, r"methods.x: steps\[0\].select: unknown selector 'nope'"),
    ({"methods": {"x": {"steps": [{"select": "top"}]}}}, r"methods.x: steps\[0\].select: top"),
    ({"methods": {"x": {"preset": "nope"}}}, "methods.x: unknown preset 'nope'"),
    ({"methods": {"x": {"steps": ["random"], "seed": 3}}}, r"methods.x: unknown key\(s\) \['seed'\]"),
    ({"methods": {"x": {"steps": ["random"], "seeds": [1, 1]}}}, "methods.x.seeds: seeds repeat"),
    ({"random_seeds": 0}, "random_seeds must be"),
    ({"train": {"lr": "fast"}}, "train.lr must be"),
    ({"train": {"mode": "qlora"}}, "train.mode must be"),
    ({"train": {"batch_size": 6, "micro_batch_size": 4}}, "train.batch_size .6. must be a multiple"),
    ({"train": {"warmup": 3}}, "train.warmup is a fraction"),
    ({"train": {"epoch": 1}}, r"train: unknown key\(s\) \['epoch'\]"),
    ({"eval": {"tasks": ["mmlu", "hellaswag"]}}, "eval.tasks: unknown task 'hellaswag'"),
    ({"eval": {"limit": 0}}, "eval.limit must be"),
    ({"eval": {"tasks": ["mmlu"], "limits": {"gsm8k": 3}}}, "eval.limits.gsm8k: 'gsm8k' is not in eval.tasks"),
    ({"eval": {"max_new_tokens": {"gsm8k": 0}}}, "eval.max_new_tokens.gsm8k must be"),
    ({"template": "jinja"}, "template: template 'jinja'"),
    ({"threads": 0}, "threads must be"),
])
def test_errors_name_the_key(over: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cfg(**over)


def test_lm_eval_tasks_are_accepted_by_name() -> None:
    assert cfg(eval={"tasks": ["lm_eval:hellaswag", "heldout"]}).eval["tasks"] == ["lm_eval:hellaswag", "heldout"]


def test_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "b.yaml").write_text(
        "pool: {inputs: [../pool, {path: ../other}]}\nbudget: 5\nbase_model: some/hub-name\n"
        "methods: {l: longest}\neval: {data_dir: ../eval}\noutput: ../out\n")
    c = load_bench_config(str(tmp_path / "cfg" / "b.yaml"))
    assert c.inputs == [str(tmp_path / "pool"), {"path": str(tmp_path / "other")}]
    assert c.eval["data_dir"] == str(tmp_path / "eval") and c.output == str(tmp_path / "out")
    assert c.base_model == "some/hub-name" and c.cache_dir == str(tmp_path / "out" / "cache")


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_bench_config(str(tmp_path / "nope.yaml"))
    (tmp_path / "b.yaml").write_text("pool: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_bench_config(str(tmp_path / "b.yaml"))


def test_cli_dry_run_lists_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from siftkit.bench.cli import add_bench_parser

    (tmp_path / "b.yaml").write_text(
        "pool: {inputs: [pool]}\nbudgets: [5, 10]\nbase_model: m\nrandom_seeds: 2\n"
        "methods: {l: {steps: [{select: top, by: tokens_response}], seeds: [0, 3]}}\noutput: out\n")
    ap = argparse.ArgumentParser()
    add_bench_parser(ap.add_subparsers())
    a = ap.parse_args(["bench", str(tmp_path / "b.yaml"), "--dry-run", "--only", "l"])
    assert a.func(a) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [tuple(x.split("\t")[:3]) for x in lines] == [
        ("base", "budget=None", "seed=0"), ("l", "budget=5", "seed=0"), ("l", "budget=5", "seed=3"),
        ("l", "budget=10", "seed=0"), ("l", "budget=10", "seed=3")]
    assert lines[2].endswith(str(tmp_path / "out" / "budget-5" / "l" / "seed-3"))
    a = ap.parse_args(["bench", str(tmp_path / "b.yaml"), "--dry-run", "-o", str(tmp_path / "o2")])
    assert a.func(a) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 2 * (2 + 2) and all(str(tmp_path / "o2") in x for x in out)
