"""Integration tests over the real, messy shared pool (skipped when ../shared/data is absent)."""

import json
import os

import pytest

from conftest import shared_pool_or_skip
from siftkit.errors import InputDataError
from siftkit.io import InputSpec, read_pool
from siftkit.io.pool import resolve_inputs

FLAN_MAP = {"user": "{0}", "assistant": "{2}\nSo the answer is {1}."}


def pool_specs(root):
    specs = []
    for name in sorted(os.listdir(root)):
        path = str(root / name)
        specs.append(InputSpec(path, mapping=FLAN_MAP) if name == "flan_cot" else InputSpec(path))
    return specs


def raw_record_count(path: str) -> int:
    """Independent count of records in a file (stdlib only), tolerant of the known trailing comma."""
    if path.endswith(".tsv"):
        with open(path, encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        return len(json.loads(text))
    except json.JSONDecodeError:
        import re
        return len(json.loads(re.sub(r",\s*\]\s*$", "]", text)))


@pytest.fixture(scope="module")
def shared_pool():
    root = shared_pool_or_skip()
    return root, read_pool(pool_specs(root), on_error="skip")


def test_every_file_loads_and_counts_add_up(shared_pool):
    root, pool = shared_pool
    tasks, skipped = resolve_inputs(pool_specs(root), recover=True)
    files = sorted({t.path for t in tasks})
    assert len(files) == 334 and not [s for s in skipped if not s["path"].endswith(".md")]
    by_file = {f.path: f for f in pool.files}
    for path in files:
        info = by_file[path]
        assert info.records + info.rejected == raw_record_count(path), path
    c = pool.counts()
    assert c["records"] + c["rejected"] == sum(raw_record_count(p) for p in files)
    assert c["records"] > 190_000
    assert set(c["by_source"]) == {"alpaca_en", "alpaca_zh", "chatdoctor_5k", "codealpaca_2k", "flan_cot",
                                   "gpteacher", "gsm8k_train", "lima_train", "sharegpt_zh_1k", "t0_50k"}
    formats = {f.source: f.format for f in pool.files}
    assert formats["t0_50k"] == "prompt_completion" and formats["lima_train"] == "alternating"
    assert formats["sharegpt_zh_1k"] == "sharegpt" and formats["gsm8k_train"] == "qa"
    assert formats["flan_cot"] == "mapping" and formats["alpaca_en"] == "alpaca"


def test_malformed_alpaca_zh_file_is_named_with_line_and_column(shared_pool):
    root, _ = shared_pool
    with pytest.raises(InputDataError) as e:
        read_pool(str(root / "alpaca_zh"))
    err = e.value
    assert err.file.endswith(".json") and "alpaca_zh" in err.file
    assert err.line is not None and err.column is not None
    assert f":{err.line}:{err.column}" in str(err)


def test_skip_mode_reports_the_defect_and_loses_no_record(shared_pool):
    _root, pool = shared_pool
    defects = [r for r in pool.rejects if r["code"] == "defect"]
    # Empty files are counted defects (no record lost); the one real defect is the trailing comma.
    empty = [r for r in defects if r["reason"].startswith("empty file")]
    assert len(empty) == sum(os.path.getsize(f.path) == 0 for f in pool.files)
    real = [r for r in defects if r not in empty]
    assert len(real) == 1 and "trailing comma" in real[0]["reason"]
    broken = [f for f in pool.files if f.defects and f.records]
    assert len(broken) == 1
    assert broken[0].records + broken[0].rejected == raw_record_count(broken[0].path)
    reasons = {r["code"] for r in pool.rejects}
    assert reasons <= {"defect", "empty_response", "no_assistant_turn", "no_user_turn", "parse_error"}


def test_multi_turn_sharegpt_and_lima_are_kept_whole(shared_pool):
    _, pool = shared_pool
    t = pool.table
    import pyarrow.compute as pc
    sg = t.filter(pc.equal(t.column("source"), "sharegpt_zh_1k"))
    turns = pc.list_value_length(sg.column("messages")).to_pylist()
    assert max(turns) > 4 and sum(n > 2 for n in turns) > 100


def test_stratified_selection_on_the_real_pool(shared_pool, tmp_path):
    from siftkit.config import build_config
    from siftkit.pipeline import run_selection

    _, pool = shared_pool
    cfg = build_config({"inputs": ["<pool>"], "budget": 5000, "cache_dir": str(tmp_path / "c"), "workers": 2,
                        "steps": [{"dedup": "exact"}, {"select": "stratified", "by": "chars_total"}]})
    sel = run_selection(cfg, pool=pool)
    c = sel.counts()
    assert c["selected"] == 5000 and c["duplicates"] > 0
    assert c["selected"] + c["not_selected"] + c["duplicates"] == c["records"]
    assert sum(v["selected"] for v in c["by_source"].values()) == 5000
