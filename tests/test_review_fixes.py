"""Small defects from the last review, each pinned: one JSON Lines side-file reader, picklable errors, the
duplicate-key check with a space before the colon, recipe-relative decontaminate paths in steps, bench
methods with derived models, and ``siftkit list`` naming the derivations."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import pytest
import yaml

from siftkit.errors import ConfigError, DiskFullError, InputDataError
from siftkit.io.pool import read_pool
from siftkit.io.readers import FileProblem, jsonl_values

# ---- 1. one JSON Lines reader for side files, errors naming file:line ----------------------------------

def test_jsonl_values_lines_blank_bom_gzip(tmp_path: Path):
    f = tmp_path / "a.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n  \n{"a": 2}\n[3]\n')
    assert list(jsonl_values(str(f))) == [(1, {"a": 1}), (4, {"a": 2}), (5, [3])]
    g = tmp_path / "a.jsonl.gz"
    g.write_bytes(gzip.compress(b'{"q": "x"}\n{"q": "y"}\n'))
    assert list(jsonl_values(str(g))) == [(1, {"q": "x"}), (2, {"q": "y"})]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(ConfigError, match=r"^what: .*bad\.jsonl:3: not JSON \(column \d+"):
        list(jsonl_values(str(bad), "what"))
    with pytest.raises(ConfigError, match="missing.jsonl not found"):
        list(jsonl_values(str(tmp_path / "missing.jsonl")))


def test_callers_use_the_shared_reader(tmp_path: Path):
    from siftkit.bench.evals.common import read_jsonl
    from siftkit.generate.scorer import rank_variants
    from siftkit.selectors.eval_index import read_eval_items

    bad = tmp_path / "evolved.jsonl"
    bad.write_text('{"id": "a", "root_id": "a", "messages": []}\n{"id": "b", \n')
    with pytest.raises(ConfigError, match=r"evolved\.jsonl:2: not JSON"):   # before any request is made
        rank_variants(str(bad), str(tmp_path / "out"), endpoint="http://127.0.0.1:9")
    missing = tmp_path / "nofield.jsonl"
    missing.write_text('{"id": "a", "messages": []}\n')
    with pytest.raises(ConfigError, match=r"nofield\.jsonl:1: field 'root_id' missing"):
        rank_variants(str(missing), str(tmp_path / "out"), endpoint="http://127.0.0.1:9")
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "gsm8k_test.jsonl").write_text('{"question": "How many?"}\n\n{"question": oops}\n')
    with pytest.raises(ConfigError, match=r"^decontaminate: .*gsm8k_test\.jsonl:3: not JSON"):
        read_eval_items([str(ev)])
    (ev / "gsm8k_test.jsonl").write_text('{"question": "How many apples are there?"}\n\n{"question": "And now?"}\n')
    items = read_eval_items([str(ev)])
    assert (items.item, items.exact_text) == ([1, 3], ["How many apples are there?", "And now?"])
    assert read_jsonl(str(ev / "gsm8k_test.jsonl")) == [{"question": "How many apples are there?"},
                                                        {"question": "And now?"}]
    (ev / "gsm8k_test.jsonl").write_text('{"question": "a"}\n\n{"question": \n')
    with pytest.raises(ConfigError, match=r"gsm8k_test\.jsonl:3: not JSON"):
        read_jsonl(str(ev / "gsm8k_test.jsonl"))


# ---- 2. errors keep their attributes through pickling and worker processes ----------------------------

def _raise_input_error(path: str) -> None:
    raise InputDataError("bad record", file=path, line=7, column=3, field="messages")


def _raise_file_problem(path: str) -> None:
    raise FileProblem("truncated gzip stream", code="truncated", records=12, file=path, line=40)


def test_errors_pickle_with_every_attribute():
    e = InputDataError("bad record", file="a.jsonl", line=7, column=3, record=None, field="messages")
    back = pickle.loads(pickle.dumps(e))
    assert (back.file, back.line, back.column, back.record, back.field, back.reason) == \
        ("a.jsonl", 7, 3, None, "messages", "bad record")
    assert str(back) == str(e) == "a.jsonl:7:3 (field 'messages'): bad record" and back.location == e.location
    fp = pickle.loads(pickle.dumps(FileProblem("cut", code="truncated", records=5, file="b.gz", line=9)))
    assert (type(fp), fp.code, fp.records, fp.file, fp.line, str(fp)) == (FileProblem, "truncated", 5, "b.gz", 9,
                                                                            "b.gz:9: cut")
    d = pickle.loads(pickle.dumps(DiskFullError("/out/x", needed=10, free=2)))
    assert (d.path, d.needed, d.free) == ("/out/x", 10, 2) and str(d).startswith("no space left on device "
                                                                                 "writing /out/x: needs 10 bytes")


def test_errors_from_a_worker_process_keep_file_and_line():
    from siftkit.workers import process_pool

    with process_pool(1) as ex:
        with pytest.raises(InputDataError) as got:
            ex.submit(_raise_input_error, "pool/x.jsonl").result()
        assert (got.value.file, got.value.line, got.value.column, got.value.field) == \
            ("pool/x.jsonl", 7, 3, "messages")
        assert str(got.value) == "pool/x.jsonl:7:3 (field 'messages'): bad record"
        with pytest.raises(FileProblem) as fp:
            ex.submit(_raise_file_problem, "pool/y.jsonl.gz").result()
        assert (fp.value.code, fp.value.records, fp.value.file, fp.value.line) == \
            ("truncated", 12, "pool/y.jsonl.gz", 40)


# ---- 3. duplicate keys with whitespace before the colon ------------------------------------------------

@pytest.mark.parametrize("colon", [":", " :", "\t :  "])
def test_duplicate_key_found_with_any_spacing(tmp_path: Path, colon: str):
    rec = f'{{"instruction"{colon} "q", "output"{colon} "a1", "output"{colon} "a2"}}'
    ok = f'{{"instruction"{colon} "q2", "output"{colon} "fine"}}'
    (tmp_path / "d.jsonl").write_text(rec + "\n" + ok + "\n")
    pool = read_pool(str(tmp_path / "d.jsonl"), on_error="skip")
    assert len(pool) == 1 and [r["code"] for r in pool.rejects] == ["duplicate_key"]
    assert pool.rejects[0]["line"] == 1
    with pytest.raises(InputDataError, match="duplicate key 'output'"):
        read_pool(str(tmp_path / "d.jsonl"))
    (tmp_path / "d.json").write_text("[" + rec + ",\n" + ok + "]")     # the JSON document path too
    pool = read_pool(str(tmp_path / "d.json"), on_error="skip")
    assert len(pool) == 1 and [r["code"] for r in pool.rejects] == ["duplicate_key"]


def test_spaced_colons_without_duplicates_are_clean(tmp_path: Path):
    (tmp_path / "s.jsonl").write_text('{"instruction" : "say \\" : hi", "output" : "ok"}\n')
    pool = read_pool(str(tmp_path / "s.jsonl"))
    assert len(pool) == 1 and not pool.rejects


# ---- 4. decontaminate `against` in steps is relative to the recipe -------------------------------------

def test_step_against_paths_resolve_from_the_recipe_folder(tmp_path: Path, monkeypatch):
    from siftkit.config import build_config, load_recipe

    folder = tmp_path / "recipes"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)                  # the cwd is not the recipe's folder
    want = str(folder / "eval")
    steps = [{"decontaminate": ["eval"]}, {"decontaminate": {"against": "eval", "ngram": 10}},
             {"step": "decontaminate", "against": ["eval"]}, {"filter": {"name": "decontaminate", "against": "eval"}},
             {"decontaminate": {"against": [str(tmp_path / "abs")]}}]
    (folder / "r.yaml").write_text(yaml.safe_dump({"inputs": ["pool"], "steps": steps}))
    data = load_recipe(str(folder / "r.yaml"))
    got = [s.get("against") or s.get("decontaminate", {}).get("against") or s["filter"]["against"]
           for s in data["steps"]]
    assert got == [[want], [want], [want], [want], [str(tmp_path / "abs")]]
    cfg = build_config(data, "r.yaml")
    assert [s.params["against"] for s in cfg.steps] == got


# ---- 5. bench methods take `models:` as recipes do --------------------------------------------------------

def test_bench_method_accepts_models():
    from siftkit.bench.config import build_bench_config

    method = {"models": {"exp": {"derive": "cherry-brief-experience", "base": "some/base", "clusters": 4,
                                 "per_cluster": 1}},
              "signals": [{"name": "lm_loss", "model": "exp"}], "steps": [{"select": "top", "by": "lm_ifd"}]}
    cfg = build_bench_config({"pool": {"inputs": ["p"]}, "budget": 10, "base_model": "m", "methods": {"cherry": method}})
    assert cfg.methods[0].recipe["models"] == method["models"]
    unused = {**method, "signals": [{"name": "lm_loss", "model": "some/base"}]}
    with pytest.raises(ConfigError, match=r"methods\.cherry: models\.exp is declared but no signal uses it"):
        build_bench_config({"pool": {"inputs": ["p"]}, "budget": 10, "base_model": "m", "methods": {"cherry": unused}})


# ---- 6. `siftkit list` names the derivations ------------------------------------------------------------

def test_list_shows_derivations(capsys):
    from siftkit.cli import main
    from siftkit.registry import derivation_names

    assert main(["list", "derivations"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("derivations: ") and all(n in out for n in derivation_names())
    assert "cherry-brief-experience" in out
    assert main(["list"]) == 0
    assert "derivations: cherry-brief-experience" in capsys.readouterr().out
