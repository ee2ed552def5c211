"""Decontamination against eval files: exact and n-gram matches with hand-computed overlaps."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import siftkit
from conftest import convo, write_jsonl
from siftkit.cli import main
from siftkit.config import build_config, load_recipe, parse_step
from siftkit.errors import ConfigError
from siftkit.selectors.decontaminate import decontaminate_pool
from siftkit.selectors.eval_index import exact_key, normalize, read_eval_items

SHARED_EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"

# 26 words -> 14 distinct 13-grams
LONG = ("Natalia sold clips to forty eight of her friends in April and then she sold half as many clips "
        "in May how many clips did she")
LONG_WORDS = LONG.split()
SHORT = "Which planet in our solar system has the most moons"       # 10 words
BOILER = "Determine whether the following statement or statements are plausible given the usual facts"  # 13


def make_eval(root: Path) -> Path:
    ev = root / "eval"
    (ev / "mmlu" / "test").mkdir(parents=True)
    (ev / "mmlu" / "test" / "astronomy_test.csv").write_text(
        f'"{SHORT}?",Saturn,Mars,Venus,Earth,A\n"What is the closest star to Earth?",Sun,Vega,Sirius,Rigel,A\n')
    write_jsonl(ev / "gsm8k_test.jsonl", [{"question": LONG + "?", "answer": "#### 72"},
                                          {"question": "Tom has 3 apples. How many?", "answer": "#### 3"}])
    (ev / "bbh").mkdir()
    (ev / "bbh" / "sports.json").write_text(json.dumps(
        {"examples": [{"input": f"{BOILER}: player{i} scored a goal number {i} in the match", "target": "yes"}
                      for i in range(12)]}))
    with gzip.open(ev / "humaneval.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"task_id": "HumanEval/0", "prompt": "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n"})
                 + "\n")
    return ev


def make_pool(root: Path) -> Path:
    rows = [
        convo(LONG.replace("forty eight", "Forty-Eight").replace(" and then", ", and then").upper() + "?!",
              "72"),                                                                               # 0 exact
        convo("Question: " + LONG + " Let's think.", "Step by step: 48 + 24 = 72."),             # 1 13-gram 1.0
        convo("Story: " + " ".join(LONG_WORDS[:19]) + " and more", "ok"),                         # 2 7/14 = 0.5
        convo("Story: " + " ".join(LONG_WORDS[:18]) + " and more", "ok"),                         # 3 6/14 kept
        convo("Which planet in our solar system has the most moons? Saturn, Mars, Venus", "?"),   # 4 1/2 (mmlu)
        convo("What is the closest star to Earth", "The Sun."),                                  # 5 exact (mmlu)
        convo(BOILER + ": the sky is green", "no"),                                               # 6 boilerplate
        convo("Write a haiku about autumn leaves.", "Red leaves drift and fall."),                # 7 clean
    ]
    return write_jsonl(root / "pool" / "pool.jsonl", rows)


def test_normalisation_and_exact_keys():
    assert normalize("  Hello,   WORLD!! 你好 ") == "hello world 你 好"
    assert exact_key("What is 2+2?") == exact_key("what is 2 + 2")
    assert exact_key("?!") == 0


def test_reads_every_layout(tmp_path):
    items = read_eval_items([str(make_eval(tmp_path))])
    assert items.counts() == {"bbh": 12, "gsm8k_test": 2, "humaneval": 1, "mmlu": 2}
    i = items.file.index("mmlu/test/astronomy_test.csv")
    assert items.exact_text[i] == SHORT + "?" and items.ngram_text[i].endswith("Earth")
    assert items.label(items.file.index("gsm8k_test.jsonl")) == "gsm8k_test.jsonl#1"
    with pytest.raises(ConfigError, match="not found"):
        read_eval_items([str(tmp_path / "nope")])


def test_select_drops_matches_and_names_the_item(tmp_path):
    ev, pool = make_eval(tmp_path), make_pool(tmp_path)
    out = tmp_path / "out"
    rc = main(["--quiet", "select", str(pool), "--decontaminate", str(ev), "--budget", "100%", "--out", str(out),
               "--cache-dir", str(tmp_path / "c"), "--report"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    step = m["steps"][0]
    assert step["name"] == "decontaminate" and step["step"] == "filter"
    # The mmlu item's n-gram text is its question and 4 choices: 14 words -> 2 13-grams; record 4 has the first.
    assert step["dropped"] == {"contaminated: gsm8k_test (13-gram)": 2, "contaminated: gsm8k_test (exact)": 1,
                               "contaminated: mmlu (13-gram)": 1, "contaminated: mmlu (exact)": 1}
    st = pq.read_table(out / "_siftkit" / "selection.parquet").to_pylist()
    status = [r["status"] for r in st]
    assert [s.startswith("dropped") for s in status] == [True, True, True, False, True, True, False, False]
    assert st[0]["decontam_method"] == "exact" and st[0]["decontam_match"] == "gsm8k_test.jsonl#1"
    assert st[1]["decontam_method"] == "13-gram" and st[1]["decontam_overlap"] == pytest.approx(1.0)
    assert st[2]["decontam_overlap"] == pytest.approx(7 / 14)
    assert st[3]["decontam_overlap"] == pytest.approx(6 / 14) and st[3]["decontam_method"] is None
    assert st[3]["decontam_match"] == "gsm8k_test.jsonl#1"         # kept, but its best match is recorded
    assert st[4]["decontam_overlap"] == pytest.approx(1 / 2)
    assert st[4]["decontam_match"] == "mmlu/test/astronomy_test.csv#1"
    assert st[5]["decontam_match"] == "mmlu/test/astronomy_test.csv#2"
    assert st[6]["decontam_overlap"] is None or np.isnan(st[6]["decontam_overlap"])  # boilerplate ignored
    assert st[7]["decontam_match"] is None
    d = step["details"]
    assert d["by_source"] == {"pool": {"gsm8k_test": 3, "mmlu": 2}}
    assert d["eval_items"]["bbh"] == 12 and len(d["sample"]) == 5
    assert m["counts"]["filtered"] == 5
    html = (out / "report.html").read_text()
    assert "Decontamination" in html and "gsm8k_test.jsonl#1" in html and "contaminated: mmlu (exact)" in html


def test_short_items_use_min_ngram(tmp_path):
    ev = tmp_path / "ev"
    write_jsonl(ev / "short.jsonl", [{"question": SHORT}])          # 10 words -> 8-grams, 3 of them
    pool = siftkit.read([{"data": [convo("Tell me: which planet in our solar system has the", "x"),   # 1/3
                                   convo("Tell me: which planet in our solar system has the most moons", "x")],
                          "source": "p"}])
    kept, summary = decontaminate_pool(pool, [str(ev)])
    assert len(kept) == 1 and summary["dropped"] == {"contaminated: short (8-gram)": 1}
    kept, summary = decontaminate_pool(pool, [str(ev)], {"threshold": 0.3})       # 1/3 >= 0.3 as well
    assert len(kept) == 0
    kept, _ = decontaminate_pool(pool, [str(ev)], {"min_ngram": 13})             # too short: exact only
    assert len(kept) == 2


def test_recipe_forms(tmp_path):
    ev, _pool = make_eval(tmp_path), make_pool(tmp_path)
    spec = parse_step({"decontaminate": {"against": [str(ev)], "ngram": 10}}, "steps[0]")
    assert (spec.role, spec.selector, spec.params["ngram"]) == ("filter", "decontaminate", 10)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"inputs": ["pool"], "decontaminate": {"against": ["eval"]},
                                      "steps": [{"filter": "chars_total > 0"}]}))
    data = load_recipe(str(recipe))
    assert data["decontaminate"]["against"] == [str(ev)]
    cfg = build_config(data, "r.yaml")
    assert [s.selector for s in cfg.steps] == ["decontaminate", "filter"]
    with pytest.raises(ConfigError, match="against"):
        parse_step({"step": "decontaminate"}, "steps[0]")
    with pytest.raises(ConfigError, match="threshold"):
        parse_step({"decontaminate": {"against": [str(ev)], "threshold": 0}}, "steps[0]")


def test_bench_decontaminates_its_eval_tasks(tmp_path):
    from siftkit.bench.runner import eval_task_paths

    ev = make_eval(tmp_path)
    paths = eval_task_paths({"tasks": ["mmlu", "gsm8k", "bbh", "ifeval", "heldout"], "data_dir": str(ev),
                             "paths": {}})
    assert paths == [str(ev / "mmlu"), str(ev / "gsm8k_test.jsonl"), str(ev / "bbh")]   # no ifeval file
    pool = siftkit.read(str(make_pool(tmp_path)))
    kept, summary = decontaminate_pool(pool, paths)
    assert len(kept) == 3 and summary["records_in"] == 8 and summary["by_benchmark"]["gsm8k_test"] == {
        "exact": 1, "13-gram": 2}


def test_shared_eval_folder_counts():
    if not SHARED_EVAL.is_dir():
        pytest.skip(f"shared eval sets not found at {SHARED_EVAL}")
    items = read_eval_items([str(SHARED_EVAL)])
    assert items.counts() == {"bbh": 6511, "gsm8k_test": 1319, "humaneval": 164, "ifeval_input": 540,
                              "mmlu": 14042 + 285}


def test_worker_processes_give_the_same_result(tmp_path, monkeypatch):
    import siftkit.selectors.decontaminate as dec

    ev, pool = make_eval(tmp_path), siftkit.read(str(make_pool(tmp_path)))
    one = decontaminate_pool(pool, [str(ev)], {"workers": 1})
    monkeypatch.setattr(dec, "BATCH", 3)                  # 3 batches of the 8 records, over 2 processes
    two = decontaminate_pool(pool, [str(ev)], {"workers": 2})
    assert one[0].table.column("id").to_pylist() == two[0].table.column("id").to_pylist()
    assert one[1]["dropped"] == two[1]["dropped"] and one[1]["sample"] == two[1]["sample"]
    with pytest.raises(ConfigError, match="workers"):
        decontaminate_pool(pool, [str(ev)], {"workers": 0})


def test_embedding_nearest_neighbour(tmp_path):
    ev = tmp_path / "ev"
    write_jsonl(ev / "qa.jsonl", [{"question": "How many moons does the planet Jupiter have in total?"}])
    rows = [convo("how many moons does the planet jupiter have in total", "95"),
            convo("Write a haiku about autumn leaves.", "Red leaves drift and fall.")]
    step = {"step": "decontaminate", "against": [str(ev)], "exact": False, "ngram": 40, "min_ngram": 40,
            "embedding": {"backend": "static"}, "embedding_threshold": 0.95}
    sel = siftkit.select([{"data": rows, "source": "p"}], "100%", steps=[step, {"select": "random"}],
                         cache_dir=str(tmp_path / "c"))
    assert sel.selected.tolist() == [1]
    assert sel.steps[0].dropped == {"contaminated: qa (embedding)": 1}
    sim = sel.record_columns["decontam_similarity"]
    assert sim[0] > 0.95 and sim[1] < 0.95
