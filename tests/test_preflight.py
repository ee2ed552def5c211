"""Pre-flight checks: a run's extras, columns and local files are checked before any record is read.

Missing packages are simulated with ``sys.modules[name] = None`` (in-process) or a meta-path finder that
refuses them (subprocess). Every CLI case reads a file whose second line is broken JSON: reading it would
exit 3, so exit 2 with the pre-flight message shows that nothing was read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import siftkit
from conftest import REPO, convo, write_jsonl
from siftkit.cli import main
from siftkit.config import build_config
from siftkit.errors import ConfigError
from siftkit.preflight import EXTRAS, PACKAGES, MissingExtraError, have, install_hint, preflight


@pytest.fixture
def unreadable(tmp_path: Path) -> str:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                 "{broken json\n")
    return str(p)


def block(monkeypatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def cli(capsys, *args: str) -> tuple[int, str]:
    rc = main(["--quiet", *args])
    return rc, capsys.readouterr().err.strip()


def test_unreadable_input_is_really_unreadable(unreadable, tmp_path, capsys):
    rc, err = cli(capsys, "select", unreadable, "-n", "1", "-o", str(tmp_path / "o"))
    assert rc == 3 and "bad.jsonl:2" in err


def test_length_kmeans_without_faiss(unreadable, tmp_path, capsys, monkeypatch):
    block(monkeypatch, "faiss")
    rc, err = cli(capsys, "select", unreadable, "--preset", "length-kmeans", "-n", "5", "-o", str(tmp_path / "o"),
                  "--cache-dir", str(tmp_path / "c"))
    assert rc == 2
    assert err == "siftkit: error: preset 'length-kmeans' needs faiss (k-means): pip install 'siftkit[embed]'"
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_length_kmeans_without_faiss_in_a_subprocess(unreadable, tmp_path):
    """A fresh interpreter where ``import faiss`` fails as on a core install; the check imports nothing heavy."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'faiss':\n"
        "            raise ModuleNotFoundError(\"No module named 'faiss'\", name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")])}
    code = ("import sys; from siftkit.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'faiss') if sys.modules.get(m)]; "
            "print('heavy:', heavy); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "select", unreadable, "--preset", "length-kmeans", "-n", "5",
                        "-o", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == \
        "siftkit: error: preset 'length-kmeans' needs faiss (k-means): pip install 'siftkit[embed]'"
    assert "Traceback" not in r.stderr
    assert r.stdout.strip() == "heavy: []"


def test_embedding_signal_without_sentence_transformers(unreadable, tmp_path, capsys, monkeypatch):
    block(monkeypatch, "sentence_transformers")
    spec = {"name": "embedding", "backend": "sentence-transformers"}
    with pytest.raises(MissingExtraError) as e:
        siftkit.score(unreadable, [spec], cache_dir=str(tmp_path / "c"))
    assert str(e.value) == ("signal 'embedding' needs sentence-transformers (sentence-transformers embeddings): "
                            "pip install 'siftkit[embed]'")
    assert e.value.exit_code == 2 and e.value.missing == ["sentence_transformers"]
    rc, err = cli(capsys, "select", unreadable, "-n", "2", "-o", str(tmp_path / "o"),
                  "--signal", "{name: embedding, backend: sentence-transformers}")
    assert rc == 2 and "needs sentence-transformers" in err
    # a selector's embeddings count as the step's needs, with its own in one line
    block(monkeypatch, "faiss")
    rc, err = cli(capsys, "select", unreadable, "-n", "2", "-o", str(tmp_path / "o"), "--method", "kmeans",
                  "--param", "embedding=sentence-transformers")
    assert rc == 2
    assert err == ("siftkit: error: select: steps[0].select: kmeans needs faiss (k-means), sentence-transformers "
                   "(sentence-transformers embeddings): pip install 'siftkit[embed]'")


def test_by_an_unknown_column(unreadable, tmp_path, capsys):
    rc, err = cli(capsys, "select", unreadable, "--method", "top", "--by", "tokens_respons", "-n", "2",
                  "-o", str(tmp_path / "o"))
    assert rc == 2 and "no signal provides column 'tokens_respons'" in err and "tokens_response" in err
    rc, err = cli(capsys, "select", unreadable, "--stratify", "origin", "-n", "2", "-o", str(tmp_path / "o"))
    assert rc == 2 and "column 'origin'" in err


def test_filter_naming_an_unknown_column(unreadable, tmp_path, capsys):
    rc, err = cli(capsys, "select", unreadable, "--filter", "lenght > 3", "-n", "2", "-o", str(tmp_path / "o"))
    assert rc == 2 and "filter: no signal provides column 'lenght'" in err


def test_ray_engine_without_ray(unreadable, tmp_path, capsys, monkeypatch):
    block(monkeypatch, "ray")
    msg = "siftkit: error: engine 'ray' needs ray (the Ray engine): pip install 'siftkit[ray]'"
    rc, err = cli(capsys, "select", unreadable, "--engine", "ray", "-n", "2", "-o", str(tmp_path / "o"))
    assert (rc, err) == (2, msg)
    rc, err = cli(capsys, "score", unreadable, "--engine", "ray", "--signals", "text_stats")
    assert (rc, err) == (2, msg)


def test_model_signals_need_torch_and_transformers(unreadable, tmp_path, capsys, monkeypatch):
    block(monkeypatch, "torch", "transformers")
    rc, err = cli(capsys, "select", unreadable, "--preset", "superfiltering", "-n", "2", "-o", str(tmp_path / "o"))
    assert rc == 2
    assert err == ("siftkit: error: preset 'superfiltering' needs torch, transformers (model-based scoring): "
                   "pip install 'siftkit[model]'")
    rc, err = cli(capsys, "select", unreadable, "-n", "2", "-o", str(tmp_path / "o"), "--method", "top", "--by",
                  "lm_loss", "--signal", "{name: lm_loss, model: gpt2}")
    assert rc == 2 and err.startswith("siftkit: error: signal 'lm_loss' needs torch, transformers")


def test_hub_inputs_need_datasets(tmp_path, monkeypatch):
    block(monkeypatch, "datasets")
    with pytest.raises(MissingExtraError, match=r"input 'hf:org/x' needs datasets .*siftkit\[hf\]"):
        siftkit.read("hf:org/x")


def test_local_model_and_tokenizer_paths_must_exist(unreadable, tmp_path, capsys):
    missing = str(tmp_path / "models" / "mine")
    rc, err = cli(capsys, "select", unreadable, "-n", "2", "-o", str(tmp_path / "o"), "--method", "top", "--by",
                  "lm_loss", "--signal", "{name: lm_loss, model: " + missing + "}")
    assert rc == 2 and f"signal 'lm_loss': model '{missing}' not found" in err
    rc, err = cli(capsys, "select", unreadable, "-n", "2", "-o", str(tmp_path / "o"), "--method", "top", "--by",
                  "tokens_total", "--tokenizer", "./no/such/tokenizer.json")
    assert rc == 2 and "signal 'tokens': tokenizer './no/such/tokenizer.json' not found" in err
    with pytest.raises(ConfigError, match="targets: .* not found"):
        preflight(build_config({"inputs": ["x"], "budget": 2, "steps": [
            {"select": "rds", "model": "org/model", "targets": str(tmp_path / "targets.jsonl")}]}))


def test_hub_names_and_installed_extras_pass(tmp_path):
    """Hub names are left to load time; nothing is loaded or imported by the check."""
    cfg = build_config({"inputs": ["x"], "preset": "superfiltering", "budget": 2})
    planned = preflight(cfg)
    assert [s.name for s in planned][:1] == ["lm_loss"] and planned[0].model == "gpt2"
    assert planned[0]._lm is None
    cfg = build_config({"inputs": ["x"], "preset": "length-kmeans", "budget": 2})
    assert {s.name for s in preflight(cfg)} == {"tokens", "exact_hash"}


def test_run_selection_checks_before_reading(tmp_path, monkeypatch):
    """The Python API: select/run check before reading, also for in-memory data (converted only after)."""
    block(monkeypatch, "faiss")
    with pytest.raises(MissingExtraError, match="preset 'length-kmeans' needs faiss"):
        siftkit.select(str(tmp_path / "does-not-exist.jsonl"), 5, preset="length-kmeans")

    from siftkit.io import memory

    def exploding(self):
        raise AssertionError("the in-memory data was read before the check")

    monkeypatch.setattr(memory.MemoryRecords, "__call__", exploding)
    rows = [convo("q", "a")]
    with pytest.raises(MissingExtraError, match="needs faiss"):
        siftkit.select(rows, 5, preset="length-kmeans")
    with pytest.raises(MissingExtraError, match="needs faiss"):
        siftkit.run({"inputs": [rows], "preset": "length-kmeans", "budget": 5}, write=False)
    with pytest.raises(AssertionError, match="read before"):   # without the missing extra it is read
        monkeypatch.delitem(sys.modules, "faiss")
        siftkit.select(rows, 1, cache_dir=str(tmp_path / "c"))


def test_bench_checks_its_extra_and_methods(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "bench.yaml"
    write_jsonl(tmp_path / "pool.jsonl", [convo("q", "a")])
    cfg.write_text(f"pool: {{inputs: [{tmp_path / 'pool.jsonl'}]}}\nbudget: 1\nbase_model: org/base\n"
                   f"methods: {{km: {{preset: length-kmeans}}}}\noutput: {tmp_path / 'out'}\n")
    block(monkeypatch, "trl")
    rc, err = cli(capsys, "bench", str(cfg))
    assert (rc, err) == (2, ("siftkit: error: siftkit bench needs trl (fine-tuning and evaluation): "
                             "pip install 'siftkit[bench]'"))
    monkeypatch.delitem(sys.modules, "trl")
    block(monkeypatch, "faiss")
    rc, err = cli(capsys, "bench", str(cfg))
    assert (rc, err) == (2, ("siftkit: error: preset 'length-kmeans' needs faiss (k-means): "
                             "pip install 'siftkit[embed]'"))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the tables behind the messages

def test_extras_table_matches_pyproject():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    by_pip = {pip.split("[")[0]: mod for mod, (_, pip) in PACKAGES.items()}
    for name, mods in EXTRAS.items():
        import re

        pips = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0] for d in extras[name]}
        assert {by_pip[p] for p in pips} == set(mods), name
    assert set(extras) - {"dev"} == set(EXTRAS)


def test_install_hints(monkeypatch):
    assert install_hint(["faiss"], ["faiss"]) == "pip install 'siftkit[embed]'"
    assert install_hint(["torch", "transformers"], ["torch"]) == "pip install 'siftkit[model]'"
    assert install_hint(["torch", "transformers", "trl", "peft"], ["trl", "peft"]) == "pip install 'siftkit[bench]'"
    assert install_hint(["torch", "transformers", "vllm"], ["vllm"]) == "pip install vllm"
    assert install_hint(["pandas"], ["pandas"]) == "pip install pandas"
    block(monkeypatch, "faiss")
    assert not have("faiss") and have("numpy") and not have("no_such_module_siftkit")
