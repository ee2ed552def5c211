"""End-to-end: the CLI and the Python API on the example pool and small pools."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

import siftkit
from conftest import EXAMPLES, convo, write_jsonl
from siftkit.cli import main

SUBCOMMANDS = ["read", "score", "inspect", "select", "run", "report", "list", "bench"]


def run_cli(*args: str) -> int:
    return main(["--quiet", *args])


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_help_on_every_subcommand(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: siftkit " + cmd in capsys.readouterr().out


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "siftkit.cli", "--version"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0 and "siftkit" in r.stdout


def test_select_writes_records_manifest_and_status(small_pool, tmp_path):
    out = tmp_path / "out"
    rc = run_cli("select", str(small_pool), "--budget", "3", "--method", "top", "--by", "tokens_response",
                 "--dedup", "first", "--out", str(out), "--cache-dir", str(tmp_path / "c"))
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c["records"] == 7 and c["duplicates"] == 1 and c["selected"] == 3
    assert c["selected"] + c["not_selected"] + c["duplicates"] + c["filtered"] == c["records"]
    assert sum(v["selected"] for v in c["by_source"].values()) == 3
    assert c["by_source"]["chat"]["duplicates"] == 1 and c["by_source"]["tasks"]["duplicates"] == 0
    assert [s["step"] for s in m["steps"]] == ["dedup", "select"]
    assert all(len(i["sha256"]) == 64 for i in m["inputs"])
    lines = (out / "selected.jsonl").read_text().splitlines()
    assert len(lines) == 3
    status = pq.read_table(out / "_siftkit" / "selection.parquet").to_pylist()
    assert sorted(s["status"] for s in status).count("selected") == 3
    assert {s["status"] for s in status} == {"selected", "not_selected", "dropped:exact_duplicate"}
    # The longest responses were chosen: each selected record is at least as long as any unselected one.
    sel = siftkit.read(str(small_pool))
    toks = siftkit.score(sel, ["tokens"], cache_dir=str(tmp_path / "c")).column("tokens_response").to_pylist()
    chosen = {s["id"] for s in status if s["status"] == "selected"}
    ids = sel.ids
    worst_chosen = min(t for i, t in zip(ids, toks) if i in chosen)
    best_other = max(t for i, t, s in zip(ids, toks, status) if s["status"] == "not_selected")
    assert worst_chosen >= best_other


def test_outputs_are_byte_identical_for_same_seed(tmp_path):
    def go(d, seed):
        rc = run_cli("select", str(EXAMPLES / "pool"), "--on-error", "skip", "--budget", "50", "--stratify", "source",
                     "--seed", str(seed), "--out", str(d), "--cache-dir", str(tmp_path / "c"))
        assert rc == 0
    go(tmp_path / "a", 7)
    go(tmp_path / "b", 7)
    go(tmp_path / "c2", 8)
    for f in ["selected.jsonl", "_siftkit/selection.parquet", "_siftkit/rejects.jsonl", "README.md"]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "selected.jsonl").read_bytes() != (tmp_path / "c2" / "selected.jsonl").read_bytes()
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("a", "b"))
    for m in (ma, mb):
        for k in ("created", "timings", "cache", "outputs"):
            m.pop(k)
        m["config"]["output"].pop("dir")
    assert ma == mb


def test_recipe_runs_demo_and_matches_cli_flags(tmp_path):
    out = tmp_path / "demo"
    assert run_cli("run", str(EXAMPLES / "recipe.yaml"), "--out", str(out), "--set", "output.report=false",
                   "--set", f"cache_dir={tmp_path / 'c'}") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["selected"] == 120
    assert set(m["counts"]["by_source"]) == {"advice", "math_chat", "math_cot", "unit_conversion", "word_tasks"}
    rows = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    assert all(set(r) == {"id", "source", "messages"} for r in rows)
    assert m["counts"]["rejected_by_reason"] == {"empty_response": 1, "parse_error": 1}


def test_recipe_errors_point_at_the_key(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("inputs: [x.jsonl]\nsteps:\n  - select: topp\nbudget: 3\n")
    with pytest.raises(Exception) as e:
        siftkit.run(str(bad), write=False)
    assert "steps[0].select" in str(e.value) and "topp" in str(e.value)
    bad.write_text("inputs: [x.jsonl]\nbudgett: 3\n")
    assert run_cli("run", str(bad)) == 2
    bad.write_text("inputs: [x.jsonl]\nsteps:\n  - select: top\n    byy: x\nbudget: 3\n")
    with pytest.raises(Exception, match=r"steps\[0\].*byy"):
        siftkit.run(str(bad), write=False)
    bad.write_text("inputs: [x.jsonl\n")
    with pytest.raises(Exception, match=r"r.yaml:\d+:\d+: invalid YAML"):
        siftkit.run(str(bad), write=False)


@pytest.mark.parametrize("fmt", ["messages", "sharegpt", "alpaca"])
@pytest.mark.parametrize("ff", ["jsonl", "parquet"])
def test_converted_outputs(small_pool, tmp_path, fmt, ff):
    out = tmp_path / f"{fmt}-{ff}"
    assert run_cli("select", str(small_pool), "--budget", "7", "--out", str(out), "--output-format", fmt,
                   "--file-format", ff, "--cache-dir", str(tmp_path / "c")) == 0
    path = out / f"selected.{ff}"
    rows = pq.read_table(path).to_pylist() if ff == "parquet" else [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == 7
    multi = next(r for r in rows if "Honey" in json.dumps(r))
    if fmt == "messages":
        assert [m["role"] for m in multi["messages"]] == ["user", "assistant", "user", "assistant"]
    elif fmt == "sharegpt":
        assert [t["from"] for t in multi["conversations"]] == ["human", "gpt", "human", "gpt"]
    else:
        assert multi["instruction"] == "Tell me a fact." and multi["history"] == [["Hi", "Hello! How can I help?"]]


def test_original_output_keeps_values(tmp_path):
    src = [{"instruction": "i", "input": "", "output": "o", "meta": {"score": 0.1, "tags": ["x", "é"]}}]
    (tmp_path / "p.json").write_text(json.dumps(src, ensure_ascii=False))
    assert run_cli("select", str(tmp_path / "p.json"), "--budget", "1", "--out", str(tmp_path / "o"),
                   "--cache-dir", str(tmp_path / "c")) == 0
    assert json.loads((tmp_path / "o" / "selected.jsonl").read_text()) == src[0]


def test_exit_codes_and_messages(tmp_path, capsys):
    assert run_cli("select", str(tmp_path / "missing"), "--budget", "3", "--out", str(tmp_path / "o")) == 3
    assert "input not found" in capsys.readouterr().err
    f = write_jsonl(tmp_path / "p.jsonl", [convo("q", "a"), convo("q2", "a2")])
    assert run_cli("select", str(f), "--budget", "0", "--out", str(tmp_path / "o")) == 2
    assert run_cli("select", str(f), "--budget", "5", "--method", "top", "--out", str(tmp_path / "o")) == 2
    assert "needs --by" in capsys.readouterr().err
    assert run_cli("select", str(f), "--budget", "3", "--filter", "tokens_response > 1e9", "--out",
                   str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")) == 4
    e = write_jsonl(tmp_path / "e.jsonl", [convo("q", "")])
    assert run_cli("read", str(e)) == 4


def test_budget_larger_than_pool_selects_all_with_warning(tmp_path, capsys):
    f = write_jsonl(tmp_path / "p.jsonl", [convo(f"q{i}", f"a{i}") for i in range(4)])
    assert run_cli("select", str(f), "--budget", "10", "--out", str(tmp_path / "o"), "--cache-dir",
                   str(tmp_path / "c")) == 0
    assert "larger than" in capsys.readouterr().err
    assert len((tmp_path / "o" / "selected.jsonl").read_text().splitlines()) == 4


def test_read_and_inspect_commands(small_pool, tmp_path, capsys):
    assert run_cli("read", str(small_pool), "--json", "--out", str(tmp_path / "pool.parquet")) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["records"] == 7
    assert pq.read_table(tmp_path / "pool.parquet").num_rows == 7
    assert run_cli("inspect", str(small_pool), "--json", "--cache-dir", str(tmp_path / "c")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["signals"]["tokens_total"]["all"]["n"] == 7
    assert set(summary["signals"]["chars_total"]) == {"all", "chat", "tasks"}
    assert run_cli("score", str(small_pool), "--cache-dir", str(tmp_path / "c")) == 0
    assert run_cli("list") == 0


def test_python_api_mirrors_cli(small_pool, tmp_path):
    pool = siftkit.read(str(small_pool))
    sel = siftkit.select(pool, 4, method="random", seed=3, cache_dir=str(tmp_path / "c"))
    assert len(sel.selected) == 4
    sel2 = siftkit.select(str(small_pool), 4, method="random", seed=3, cache_dir=str(tmp_path / "c"))
    assert sel.ids == sel2.ids
    m = siftkit.write(sel2, str(tmp_path / "o"), format="messages")
    assert m["counts"]["selected"] == 4


def test_core_import_stays_light():
    code = ("import sys, siftkit, siftkit.cli, siftkit.api, siftkit.pipeline; "
            "print(','.join(m for m in ('torch', 'transformers', 'trl', 'faiss', 'ray', 'sentence_transformers') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


def test_report_always_shows_lengths_and_diversity_on_request(small_pool, tmp_path):
    out = tmp_path / "r"
    assert run_cli("select", str(small_pool), "--budget", "4", "--out", str(out), "--cache-dir",
                   str(tmp_path / "c"), "--diversity") == 0
    html = (out / "report.html").read_text()
    assert "No signals computed" not in html and "tokens_total" in html
    m = json.loads((out / "manifest.json").read_text())
    metrics = {r["metric"]: r["value"] for r in m["outputs"]["diversity"]}
    assert 0 <= metrics["coverage: mean distance pool -> nearest selected"] <= 2
    assert isinstance(metrics["cluster entropy of the selection (normalised)"], float)
    assert "Pool vs selection, 2-D PCA map" in html


@pytest.mark.parametrize("budget", ["100%", "1.0", "0.5", "50%"])
def test_fraction_budgets_are_of_the_candidates_and_recorded(small_pool, tmp_path, budget):
    out = tmp_path / "out"
    rc = run_cli("select", str(small_pool), "--budget", budget, "--dedup", "first", "--out", str(out),
                 "--cache-dir", str(tmp_path / "c"))
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    after_dedup = m["steps"][0]["out"]
    assert after_dedup == m["counts"]["records"] - 1          # the pool holds one exact duplicate pair
    want = after_dedup if budget in ("100%", "1.0") else round(after_dedup * 0.5)
    assert m["budget_resolved"] == want == m["counts"]["selected"]
    assert len((out / "selected.jsonl").read_text().splitlines()) == want


@pytest.mark.parametrize("expr", ["10**10**10 > tokens_total", "quantile(tokens_total, 'x') > 1",
                                  "min(tokens_total) > 1", "[1]*10**9 == 1",
                                  "source * 2 > 1", "tokens_total == 'long'"])
def test_bad_filters_fail_with_exit_2_before_any_signal_is_computed(small_pool, tmp_path, expr, capsys):
    cache = tmp_path / "c"
    rc = run_cli("select", str(small_pool), "--budget", "2", "--filter", expr, "--out", str(tmp_path / "o"),
                 "--cache-dir", str(cache))
    assert rc == 2
    assert "expression" in capsys.readouterr().err
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))
    assert not (tmp_path / "o").exists()
