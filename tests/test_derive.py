"""Derived models as a pipeline stage: ``models:`` in a recipe, signals naming them, the derivation registry,
and the older inline spelling (``brief_experience`` on ``lm_loss``) giving the same model and picks."""

from __future__ import annotations

import pytest

from siftkit.config import build_config
from siftkit.errors import ConfigError

TRAIN = {"epochs": 1, "lr": 1e-2, "warmup": 0, "batch_size": 2, "micro_batch_size": 2, "max_length": 64}
BRIEF = {"clusters": 3, "per_cluster": 4, "train": TRAIN}


def _recipe(models=None, signals=None, **extra):
    r = {"inputs": ["x.jsonl"], "budget": 4, "steps": [{"select": "top", "by": "lm_ifd"}],
         "signals": signals or [{"name": "lm_loss", "model": "exp"}], **extra}
    if models is not None:
        r["models"] = models
    return r


def test_registry_lists_the_derivations() -> None:
    from siftkit.registry import derivation_class, derivation_names

    assert "cherry-brief-experience" in derivation_names()
    assert derivation_class("cherry-brief-experience").name == "cherry-brief-experience"
    with pytest.raises(ConfigError, match="unknown derivation 'nope'; known: cherry-brief-experience"):
        derivation_class("nope")


def test_models_are_validated_when_the_recipe_is_read() -> None:
    ok = build_config(_recipe({"exp": {"derive": "cherry-brief-experience", "base": "m", "clusters": 7}}), "r.yaml")
    assert ok.models == {"exp": {"derive": "cherry-brief-experience", "base": "m", "clusters": 7}}
    assert ok.signals == [{"name": "lm_loss", "model": "exp"}]
    assert ok.raw["models"] == ok.models                                   # the recipe as given (manifest)
    assert build_config(_recipe(signals=[{"name": "lm_loss", "model": "m"}]), "r").models == {}
    cases = [
        ({"exp": {"derive": "nope"}}, r"r.yaml: models.exp: unknown derivation 'nope'"),
        ({"exp": {"base": "m"}}, r"r.yaml: models.exp: expected a mapping like \{derive: NAME"),
        ({"exp": {"derive": "cherry-brief-experience"}}, r"models.exp: cherry-brief-experience: 'base' is required"),
        ({"exp": {"derive": "cherry-brief-experience", "base": "m", "cluster": 3}},
         r"models.exp: cherry-brief-experience: unknown key\(s\) \['cluster'\]"),
        ({"exp": {"derive": "cherry-brief-experience", "base": "m", "train": {"epoch": 1}}},
         r"train: unknown key\(s\) \['epoch'\]"),
        ({"exp": {"derive": "cherry-brief-experience", "base": "m", "lm_loss": {"model": "x"}}},
         r"lm_loss must be a mapping of further lm_loss parameters"),
        ({"other": {"derive": "cherry-brief-experience", "base": "m"}},
         r"models.other is declared but no signal uses it \(give a signal model: other\)"),
        (["exp"], r"'models' must be a mapping"),
    ]
    for models, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            build_config(_recipe(models), "r.yaml")


def test_preflight_names_the_extras_a_derived_model_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from siftkit.preflight import MissingExtraError, preflight

    cfg = build_config(_recipe({"exp": {"derive": "cherry-brief-experience", "base": "m"}}), "r")
    monkeypatch.setitem(sys.modules, "trl", None)          # "not installed" (find_spec sees None)
    with pytest.raises(MissingExtraError, match=r"models\.exp needs .*brief fine-tuning") as e:
        preflight(cfg)
    assert "trl" in e.value.missing
    bad = build_config(_recipe({"exp": {"derive": "cherry-brief-experience", "base": "./no/such/model"}}), "r")
    monkeypatch.delitem(sys.modules, "trl")
    with pytest.raises(ConfigError, match=r"models.exp: base model './no/such/model' not found"):
        preflight(bad)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    for mod in ("torch", "trl", "peft", "faiss"):
        pytest.importorskip(mod)
    from bench_helpers import tiny_model_and_chat_pool

    return tiny_model_and_chat_pool(tmp_path_factory.mktemp("derive"))


def test_models_spelling_builds_the_same_model_and_picks_as_the_inline_one(tiny, tmp_path, monkeypatch):
    from siftkit import api

    model, pool_dir = tiny
    cache = str(tmp_path / "cache")
    new = {"inputs": [pool_dir], "budget": 5, "cache_dir": cache, "preset": "cherry-ifd",
           "models": {"experienced": {"derive": "cherry-brief-experience", "base": model, **BRIEF}},
           "signals": [{"name": "lm_loss", "model": "experienced"}], "output": {"dir": str(tmp_path / "new")}}
    sel_new, man_new = api.run(new)
    (folder,) = (tmp_path / "cache" / "models" / "cherry-brief").iterdir()
    assert man_new["signals"]["lm_loss"]["config"]["model"] == str(folder)
    assert man_new["config"]["models"]["experienced"]["base"] == model          # the recipe as given
    assert "models" in sel_new.timings

    # the older spelling: the same fingerprint, so the same folder, reused without training
    import siftkit.training.base

    def no_training(*a, **k):
        raise AssertionError("the experienced model was trained again")

    monkeypatch.setattr(siftkit.training.base.BaseLM, "finetune", no_training)
    old = {"inputs": [pool_dir], "budget": 5, "cache_dir": cache, "output": {"dir": str(tmp_path / "old")},
           # template auto, as the models spelling's default (the preset's own default is Cherry's prompt)
           "preset": {"name": "cherry-ifd", "model": model, "template": "auto", "brief_experience": BRIEF}}
    sel_old, man_old = api.run(old)
    assert man_old["signals"]["lm_loss"]["config"]["model"] == str(folder)
    assert sel_old.selected.tolist() == sel_new.selected.tolist()
    assert len(list((tmp_path / "cache" / "models" / "cherry-brief").iterdir())) == 1
