"""Pick order (issue 18, item 1): selection.parquet's ``rank`` is the order the budgeted step picked the
records; ``--order pick|pool`` (recipe ``output.order``) sets the records file's order, pool by default."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import convo, write_jsonl
from siftkit.cli import main
from siftkit.config import build_config
from siftkit.errors import ConfigError

# response lengths out of pool order, all distinct: top by length picks 3, 0, 5, 1 (longest first)
LENGTHS = [30, 12, 2, 40, 5, 20, 1, 8]


@pytest.fixture
def pool(tmp_path):
    rows = [convo(f"question number {i}", " ".join(f"w{j}" for j in range(n))) for i, n in enumerate(LENGTHS)]
    return write_jsonl(tmp_path / "pool.jsonl", rows)


def _select(pool, out, *extra):
    return main(["--quiet", "select", str(pool), "--budget", "4", "--method", "top", "--by", "tokens_response",
                 "--out", str(out), "--cache-dir", str(out.parent / "cache"), *extra])


def _rows(out):
    return [json.loads(line)["messages"][0]["content"] for line in (out / "selected.jsonl").read_text().splitlines()]


def _ranks(out):
    t = pq.read_table(out / "_siftkit" / "selection.parquet").to_pydict()
    return t["rank"], t["status"]


def test_rank_is_the_pick_order_and_records_default_to_pool_order(pool, tmp_path):
    out = tmp_path / "o"
    assert _select(pool, out) == 0
    rank, status = _ranks(out)
    expect = list(np.argsort([-n for n in LENGTHS], kind="stable")[:4])   # [3, 0, 5, 1]
    assert [rank[i] for i in expect] == [0, 1, 2, 3]
    assert all(r == -1 for i, r in enumerate(rank) if i not in expect)
    assert [s == "selected" for s in status] == [r >= 0 for r in rank]
    assert _rows(out) == [f"question number {i}" for i in sorted(expect)]      # pool order by default
    m = json.loads((out / "manifest.json").read_text())
    assert "order" not in m["outputs"]


def test_order_pick_writes_records_in_rank_order(pool, tmp_path):
    out = tmp_path / "o"
    assert _select(pool, out, "--order", "pick") == 0
    assert _rows(out) == [f"question number {i}" for i in (3, 0, 5, 1)]
    rank, _ = _ranks(out)
    assert [rank[i] for i in (3, 0, 5, 1)] == [0, 1, 2, 3]
    assert json.loads((out / "manifest.json").read_text())["outputs"]["order"] == "pick"


def test_random_pick_order_after_a_filter_is_deterministic(pool, tmp_path):
    from siftkit.api import run

    recipe = {"inputs": [str(pool)], "budget": 5, "seed": 3, "cache_dir": str(tmp_path / "c"),
              "steps": [{"filter": "tokens_response >= 2"}, {"select": "random"}],
              "output": {"dir": str(tmp_path / "a"), "order": "pick"}}
    sel, _ = run(recipe)
    sel2, _ = run({**recipe, "output": {"dir": str(tmp_path / "b"), "order": "pick"}})
    assert np.array_equal(sel.pick_order, sel2.pick_order)
    assert sorted(sel.pick_order.tolist()) == sel.selected.tolist()
    assert not np.array_equal(sel.pick_order, sel.selected)     # seed 3 draws out of pool order
    assert (tmp_path / "a" / "selected.jsonl").read_bytes() == (tmp_path / "b" / "selected.jsonl").read_bytes()
    assert _rows(tmp_path / "a") == [f"question number {i}" for i in sel.pick_order]


def test_bad_order_is_a_config_error(pool, tmp_path):
    with pytest.raises(ConfigError, match="output.order"):
        build_config({"inputs": [str(pool)], "output": {"dir": "x", "order": "random"}}, "r.yaml")
