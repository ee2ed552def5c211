"""URLs where siftkit used to take only local paths: ``read --rejects URL``, decontamination ``against:``
URLs, Hugging Face ``save_to_disk`` folders on an object store, and the ``prompts_file`` / ``rubrics_file``
of recipes (relative to the recipe's folder, or URLs). S3 is moto's real server on 127.0.0.1 (the fixtures
of conftest.py); skips when moto is not installed."""

from __future__ import annotations

import gzip
import json

import pytest

from conftest import convo, write_jsonl
from siftkit import fs
from siftkit.cli import main
from siftkit.errors import ConfigError, InputDataError
from test_object_storage import _upload

# ------------------------------------------------------------------ read --rejects URL


def _bad_pool(root) -> None:
    write_jsonl(root / "a.jsonl", [convo(f"q{i}", f"answer {i}") for i in range(5)])
    with open(root / "a.jsonl", "a") as fh:
        fh.write('{"messages": [ not json\n')
        fh.write(json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n")


def test_read_rejects_to_s3_is_one_put_like_local(s3, tmp_path, capfd):
    _bad_pool(tmp_path / "p")
    inp = str(tmp_path / "p" / "a.jsonl")
    assert main(["-q", "read", inp, "--on-error", "skip", "--rejects", str(tmp_path / "r.jsonl")]) == 0
    local = (tmp_path / "r.jsonl").read_bytes()
    assert len(local.splitlines()) == 2
    assert main(["-q", "read", inp, "--on-error", "skip", "--rejects", f"{s3}/runs/rejects.jsonl"]) == 0
    assert fs.read_bytes(f"{s3}/runs/rejects.jsonl") == local
    assert [n for _u, n, _s in fs.walk_files(f"{s3}/runs")] == ["rejects.jsonl"]     # no temporary object
    # A failing read (exit 3: bad JSON) still writes what it got, the error last, to the URL too.
    assert main(["-q", "read", inp, "--rejects", f"{s3}/runs/failed.jsonl"]) == 3
    rows = [json.loads(x) for x in fs.read_bytes(f"{s3}/runs/failed.jsonl").splitlines()]
    assert rows[-1]["code"] == "error" and rows[-1]["line"] == 6 and "invalid JSON" in rows[-1]["reason"], rows
    # Nothing to reject: an empty file, on the store as locally.
    write_jsonl(tmp_path / "good.jsonl", [convo("q", "a")])
    assert main(["-q", "read", str(tmp_path / "good.jsonl"), "--rejects", f"{s3}/runs/rejects.jsonl"]) == 0
    assert fs.read_bytes(f"{s3}/runs/rejects.jsonl") == b""
    capfd.readouterr()
    # A bucket that does not exist: refused before reading, exit 2, the URL named.
    rc = main(["read", inp, "--on-error", "skip", "--rejects", "s3://no-such-bucket-xyz/r.jsonl"])
    err = capfd.readouterr().err
    assert rc == 2 and "s3://no-such-bucket-xyz/r.jsonl" in err and "Traceback" not in err
    assert "read:" not in err         # the read never started


def test_read_rejects_to_file_url_and_new_local_folder(tmp_path):
    _bad_pool(tmp_path / "p")
    inp = str(tmp_path / "p" / "a.jsonl")
    assert main(["-q", "read", inp, "--on-error", "skip", "--rejects", str(tmp_path / "r.jsonl")]) == 0
    assert main(["-q", "read", inp, "--on-error", "skip", "--rejects", f"file://{tmp_path}/u/r.jsonl"]) == 0
    assert main(["-q", "read", inp, "--on-error", "skip", "--rejects", str(tmp_path / "new" / "d" / "r.jsonl")]) == 0
    want = (tmp_path / "r.jsonl").read_bytes()
    assert (tmp_path / "u" / "r.jsonl").read_bytes() == want
    assert (tmp_path / "new" / "d" / "r.jsonl").read_bytes() == want


# ------------------------------------------------------------------ decontaminate against URLs


def _eval_folder(root) -> None:
    (root / "mmlu").mkdir(parents=True)
    (root / "mmlu" / "astronomy.csv").write_text(
        "Which planet is known as the red planet in our solar system today?,Venus,Mars,Jupiter,Saturn,B\n"
        "What is the largest moon of the planet Saturn called by astronomers?,Titan,Io,Europa,Phobos,A\n")
    write_jsonl(root / "gsm8k_test.jsonl", [
        {"question": "Tom has 3 apples and buys 4 more apples at the store, how many apples does he have now?",
         "answer": "7"}])
    (root / "bbh").mkdir()
    (root / "bbh" / "logic.json.gz").write_bytes(gzip.compress(json.dumps({"examples": [
        {"input": "If every cat is an animal and Tom is a cat, is Tom an animal? Answer yes or no please.",
         "target": "yes"}]}).encode()))
    (root / "README.md").write_text("not read\n")
    (root / ".hidden.jsonl").write_text("not json, and never read\n")


def test_decontaminate_against_s3_matches_local(s3, tmp_path):
    from siftkit.selectors.eval_index import read_eval_items

    _eval_folder(tmp_path / "eval")
    _upload(tmp_path / "eval", f"{s3}/eval")
    local, remote = read_eval_items([str(tmp_path / "eval")]), read_eval_items([f"{s3}/eval/"])
    assert len(local) == 4 and remote.counts() == local.counts() == {"bbh": 1, "gsm8k_test": 1, "mmlu": 2}
    assert [remote.label(i) for i in range(len(remote))] == [local.label(i) for i in range(len(local))]
    one = read_eval_items([f"{s3}/eval/gsm8k_test.jsonl"])        # a single file URL
    assert one.counts() == {"gsm8k_test": 1}

    pool = [convo("Which planet is known as the red planet in our solar system today?", "Mars."),
            convo("Tom has 3 apples and buys 4 more apples at the store, how many apples does he have now?",
                  "He has 7 apples."),
            convo("Write a short poem about the sea.", "Waves roll in, waves roll out.")]
    write_jsonl(tmp_path / "pool" / "a.jsonl", pool)
    args = ["-q", "select", str(tmp_path / "pool"), "--budget", "100%", "--method", "random",
            "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--decontaminate", str(tmp_path / "eval"), "--out", str(tmp_path / "o1")]) == 0
    assert main([*args, "--decontaminate", f"{s3}/eval", "--out", str(tmp_path / "o2")]) == 0
    m1, m2 = (json.loads((tmp_path / o / "manifest.json").read_text()) for o in ("o1", "o2"))
    assert m1["counts"]["selected"] == m2["counts"]["selected"] == 1
    assert [s["dropped"] for s in m1["steps"]] == [s["dropped"] for s in m2["steps"]]
    assert (tmp_path / "o1" / "selected.jsonl").read_bytes() == (tmp_path / "o2" / "selected.jsonl").read_bytes()


def test_decontaminate_url_errors_name_the_url(s3, tmp_path, capfd):
    from siftkit.selectors.eval_index import read_eval_items

    with pytest.raises(ConfigError, match=f"{s3}/nothing-here not found"):
        read_eval_items([f"{s3}/nothing-here"])
    fs.write_atomic(f"{s3}/bad/x.json", b'{"examples": [ broken')
    with pytest.raises(ConfigError, match=f"{s3}/bad/x.json: not JSON"):
        read_eval_items([f"{s3}/bad"])
    fs.write_atomic(f"{s3}/gz/y.json.gz", b"not gzip at all")
    with pytest.raises(ConfigError, match=f"{s3}/gz/y.json.gz: not a gzip file"):
        read_eval_items([f"{s3}/gz/y.json.gz"])
    write_jsonl(tmp_path / "p.jsonl", [convo("q", "a")])
    rc = main(["select", str(tmp_path / "p.jsonl"), "--budget", "1", "--decontaminate",
               "s3://no-such-bucket-xyz/eval", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")])
    err = capfd.readouterr().err
    assert rc == 2 and "s3://no-such-bucket-xyz/eval" in err and "Traceback" not in err


# ------------------------------------------------------------------ HF save_to_disk folders on a store


def _hf_folders(root):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    rows = {"messages": [[{"role": "user", "content": f"hf q{i}"}, {"role": "assistant", "content": f"hf a{i}"}]
                         for i in range(6)]}
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows).select(range(4)),
                               "test": datasets.Dataset.from_dict(rows).select(range(4, 6))})
    dd.save_to_disk(str(root / "pool" / "chat_dd"))
    datasets.Dataset.from_dict(rows).save_to_disk(str(root / "pool" / "nested" / "one"))
    write_jsonl(root / "pool" / "plain.jsonl", [convo("plain q", "plain a")])


def _view(pool) -> list[tuple]:
    t = pool.table
    return sorted(zip(t.column("source").to_pylist(), t.column("file").to_pylist(), t.column("row").to_pylist(),
                      [json.dumps(m) for m in t.column("messages").to_pylist()]))


def test_hf_saved_folders_on_s3_read_like_local(s3, tmp_path):
    from siftkit.io.pool import read_pool

    _hf_folders(tmp_path)
    _upload(tmp_path / "pool", f"{s3}/pool")
    local, remote = read_pool(str(tmp_path / "pool")), read_pool(f"{s3}/pool")
    assert len(local) == len(remote) == 4 + 2 + 6 + 1
    assert _view(remote) == _view(local)
    assert sorted(remote.ids) == sorted(local.ids)                # ids from the same relative paths
    files = {f.path for f in remote.files}
    assert all(p.startswith(f"{s3}/pool/") for p in files) and not any(p.endswith(".json") for p in files)
    assert sum(p.endswith(".arrow") for p in files) == 3
    # The folder itself given, and one split folder of a DatasetDict.
    assert _view(read_pool(f"{s3}/pool/chat_dd")) == _view(read_pool(str(tmp_path / "pool" / "chat_dd")))
    assert len(read_pool(f"{s3}/pool/chat_dd/test/")) == 2
    # Through the CLI, to a canonical table on the store.
    assert main(["-q", "read", f"{s3}/pool/chat_dd", "--out", f"{s3}/canon.parquet"]) == 0
    assert fs.read_table(f"{s3}/canon.parquet").num_rows == 6


def test_broken_hf_folder_on_s3_names_the_file(s3, tmp_path):
    from siftkit.io.pool import read_pool

    _hf_folders(tmp_path)
    _upload(tmp_path / "pool" / "nested" / "one", f"{s3}/hf")
    state = json.loads(fs.read_bytes(f"{s3}/hf/state.json"))
    state["_data_files"].append({"filename": "data-missing.arrow"})
    fs.write_atomic(f"{s3}/hf/state.json", json.dumps(state).encode())
    with pytest.raises(InputDataError, match=r"s3://siftkit-test/hf/state.json: .*'data-missing.arrow' does not exist"):
        read_pool(f"{s3}/hf")
    state["_data_files"][-1] = {"filename": "../outside.arrow"}
    fs.write_atomic(f"{s3}/hf/state.json", json.dumps(state).encode())
    with pytest.raises(InputDataError, match="points outside the folder"):
        read_pool(f"{s3}/hf")
    fs.write_atomic(f"{s3}/hf/state.json", b"{not json")
    with pytest.raises(InputDataError, match=r"s3://siftkit-test/hf/state.json: .*cannot read state.json"):
        read_pool(f"{s3}/hf")
    # --on-error skip: the folder is one rejected entry, the other inputs are read.
    write_jsonl(tmp_path / "x.jsonl", [convo("q", "a")])
    _upload(tmp_path / "pool" / "nested", f"{s3}/mixed")
    fs.write_atomic(f"{s3}/mixed/one/state.json", b"{not json")
    fs.write_atomic(f"{s3}/mixed/x.jsonl", (tmp_path / "x.jsonl").read_bytes())
    pool = read_pool(f"{s3}/mixed", on_error="skip")
    assert len(pool) == 1
    assert [(r["file"], r["code"]) for r in pool.rejected_files] == [("one", "bad_hf_folder")]


# ------------------------------------------------------------------ prompts_file / rubrics_file

RUBRICS = """\
terse:
  target: pair
  scale: [1, 3]
  system: You grade answers.
  task: Rate the answer to the request.
  dimensions:
    fit: 3 means it answers exactly what was asked.
"""


def test_recipe_file_params_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    from siftkit.config import build_config, load_recipe
    from siftkit.signals.compute import build_signal

    rdir = tmp_path / "recipes"
    (rdir / "prompts").mkdir(parents=True)
    (rdir / "prompts" / "rubrics.yaml").write_text(RUBRICS)
    (rdir / "prompts" / "selectit.txt").write_text("Rate the reply from 1 to 5.\nScore the reply, 1-5.\n")
    write_jsonl(tmp_path / "data" / "a.jsonl", [convo("q", "a")])
    (rdir / "r.yaml").write_text(
        "inputs: [../data]\n"
        "signals:\n"
        "  - {name: judge, endpoint: 'http://127.0.0.1:9/v1', model: m, rubric: terse,"
        " rubrics_file: prompts/rubrics.yaml}\n"
        "  - selectit: {model: m, prompts_file: prompts/selectit.txt}\n"
        "  - {name: judge, prefix: j2, endpoint: 'http://127.0.0.1:9/v1', model: m, rubric: terse,"
        " rubrics_file: 's3://bucket/rubrics.yaml'}\n"
        "preset: {name: alpagasus, endpoint: 'http://127.0.0.1:9/v1', model: m, rubric: terse,"
        " rubrics_file: prompts/rubrics.yaml}\n"
        "budget: 1\n")
    monkeypatch.chdir(tmp_path / "data")           # not the recipe's folder
    data = load_recipe(str(rdir / "r.yaml"))
    want = str(rdir / "prompts" / "rubrics.yaml")
    assert data["signals"][0]["rubrics_file"] == want
    assert data["signals"][1]["selectit"]["prompts_file"] == str(rdir / "prompts" / "selectit.txt")
    assert data["signals"][2]["rubrics_file"] == "s3://bucket/rubrics.yaml"      # URLs as given
    assert data["preset"]["rubrics_file"] == want
    cfg = build_config(data, "r.yaml")
    judges = [s for s in cfg.signals if isinstance(s, dict) and s.get("name") == "judge"]
    assert want in {j.get("rubrics_file") for j in judges}       # the preset's judge too
    sig = build_signal(judges[0])                                 # reads the rubric from the recipe folder
    assert sig.rubric_obj.name == "terse" and sig.rubric_obj.keys == ["fit"]


def test_cli_file_flags_stay_relative_to_the_current_folder(tmp_path, monkeypatch):
    from siftkit.api import selection_config
    from siftkit.config import build_config
    from siftkit.generate.recipe import load_generate_recipe

    monkeypatch.chdir(tmp_path)
    data = selection_config(["pool"], budget=1, preset="alpagasus", method_params={
        "endpoint": "http://127.0.0.1:9/v1", "model": "m", "rubrics_file": "mine.yaml"})
    judge = [s for s in build_config(data, "select").signals if isinstance(s, dict) and s.get("name") == "judge"]
    assert [j["rubrics_file"] for j in judge] == ["mine.yaml"]
    rdir = tmp_path / "gen"
    rdir.mkdir()
    (rdir / "evolve.yaml").write_text("inputs: [seeds.jsonl]\noutput: out\n"
                                      "evolve: {endpoint: 'http://127.0.0.1:9/v1', prompts_file: p.yaml}\n")
    _top, params = load_generate_recipe(str(rdir / "evolve.yaml"), "evolve")
    assert params["prompts_file"] == str(rdir / "p.yaml")                  # the recipe's: its folder
    _top, params = load_generate_recipe(str(rdir / "evolve.yaml"), "evolve", {"prompts_file": "cli.yaml"})
    assert params["prompts_file"] == "cli.yaml"                           # a flag: as given
    (rdir / "testset.yaml").write_text("inputs: [docs]\noutput: out\n"
                                       "testset: {endpoint: 'http://127.0.0.1:9/v1', prompts_file: 's3://b/p.yaml'}\n")
    assert load_generate_recipe(str(rdir / "testset.yaml"), "testset")[1]["prompts_file"] == "s3://b/p.yaml"


def test_bench_config_file_params_resolve_against_its_folder(tmp_path):
    from siftkit.bench.config import load_bench_config

    bdir = tmp_path / "bench"
    bdir.mkdir()
    (bdir / "ts.jsonl").write_text("")
    (bdir / "b.yaml").write_text(
        "pool: {inputs: [data, 's3://bucket/pool']}\nbudget: 10\nbase_model: m\n"
        "methods:\n"
        "  judged: {preset: {name: alpagasus, endpoint: 'http://127.0.0.1:9/v1', model: m,"
        " rubrics_file: r/rubrics.yaml}}\n"
        "eval: {tasks: ['testset:ts.jsonl'], judge: {endpoint: 'http://127.0.0.1:9/v1', model: m,"
        " rubrics_file: r/ref.yaml, rubric: ok}}\n")
    (bdir / "r").mkdir()
    (bdir / "r" / "ref.yaml").write_text(RUBRICS.replace("terse", "ok").replace("target: pair", "target: reference"))
    cfg = load_bench_config(str(bdir / "b.yaml"))
    assert cfg.methods[0].recipe["preset"]["rubrics_file"] == str(bdir / "r" / "rubrics.yaml")
    assert cfg.eval["judge"]["rubrics_file"] == str(bdir / "r" / "ref.yaml")
    assert cfg.raw["pool"]["inputs"] == [str(bdir / "data"), "s3://bucket/pool"]
    with pytest.raises(ConfigError, match="a bench config is read from local disk"):
        load_bench_config("s3://bucket/b.yaml")


def test_prompt_and_rubric_files_read_from_s3(s3, tmp_path, capfd):
    from siftkit.generate.prompts import load_prompts
    from siftkit.llm.rubrics import load_rubric
    from siftkit.scoring.selectit import load_prompts_file

    fs.write_atomic(f"{s3}/cfg/rubrics.yaml", RUBRICS.encode())
    assert load_rubric("terse", f"{s3}/cfg/rubrics.yaml").keys == ["fit"]
    with pytest.raises(ConfigError, match=f"unknown rubric 'nope'.*in {s3}/cfg/rubrics.yaml"):
        load_rubric("nope", f"{s3}/cfg/rubrics.yaml")
    with pytest.raises(ConfigError, match=f"rubrics file not found: {s3}/cfg/missing.yaml"):
        load_rubric("terse", f"{s3}/cfg/missing.yaml")
    txt = "Rate the reply from 1 to 5.\n# a comment\nScore the reply, 1-5.\n"
    (tmp_path / "p.txt").write_text(txt)
    fs.write_atomic(f"{s3}/cfg/p.txt", txt.encode())
    assert load_prompts_file(f"{s3}/cfg/p.txt") == load_prompts_file(str(tmp_path / "p.txt"))
    yml = "prompts:\n  - \"Rate 1-5.\\n{instruction}\\n{response}\\nScore: \"\n  - 12\n"
    fs.write_atomic(f"{s3}/cfg/p.yaml", yml.encode())
    with pytest.raises(ConfigError, match=rf"{s3}/cfg/p.yaml:3: prompts\[1\]: expected a template string"):
        load_prompts_file(f"{s3}/cfg/p.yaml")       # the item's line, from the one read
    fs.write_atomic(f"{s3}/cfg/evolve.yaml", b"template_words: [swiftly, deeply]\n")
    assert load_prompts(f"{s3}/cfg/evolve.yaml")["template_words"] == ["swiftly", "deeply"]
    capfd.readouterr()
    assert main(["run", f"{s3}/cfg/recipe.yaml"]) == 2
    assert "a recipe is read from local disk" in capfd.readouterr().err


def test_yaml_files_on_file_urls(tmp_path):
    from siftkit.llm.rubrics import load_rubric

    (tmp_path / "r.yaml").write_text(RUBRICS)
    assert load_rubric("terse", f"file://{tmp_path}/r.yaml").keys == ["fit"]
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2:1: invalid YAML"):
        load_rubric("terse", str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_rubric("terse", str(tmp_path))
