"""Cherry's brief-experience model: band/cluster picks, training on exactly them, IFD scored with the result,
reuse of the saved model, and the validated preset / recipe / CLI options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from siftkit.config import build_config
from siftkit.errors import ConfigError

TRAIN = {"epochs": 1, "lr": 1e-2, "warmup": 0, "batch_size": 2, "micro_batch_size": 2, "max_length": 64}
BRIEF = {"clusters": 3, "per_cluster": 4, "train": TRAIN}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    pytest.importorskip("faiss")
    from bench_helpers import tiny_model_and_chat_pool

    return tiny_model_and_chat_pool(tmp_path_factory.mktemp("cherry"))     # 40 chat conversations, 10 topics


def _table(pool_dir: str):
    from siftkit.io.pool import read_pool

    return read_pool([pool_dir]).table


def _reference_picks(labels: np.ndarray, ppl: np.ndarray, per_cluster: int) -> list[int]:
    """Written out plainly: per cluster, keep p25 <= ppl <= p75, order by (ppl, row), take all or the
    ranks floor((2j + 1) m / (2 n))."""
    picked: list[int] = []
    for c in sorted(set(labels.tolist()) - {-1}):
        rows = [i for i in range(len(labels)) if labels[i] == c]
        vals = [ppl[i] for i in rows]
        lo, hi = np.percentile(vals, 25), np.percentile(vals, 75)
        band = sorted((i for i in rows if lo <= ppl[i] <= hi), key=lambda i: (ppl[i], i))
        m = len(band)
        picked += band if m <= per_cluster else [band[(2 * j + 1) * m // (2 * per_cluster)]
                                                 for j in range(per_cluster)]
    return sorted(picked)


def test_brief_experience_trains_on_the_band_picks_of_each_cluster(tiny, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from siftkit.cherry import brief_experience
    from siftkit.selectors.kmeans import kmeans_labels
    from siftkit.signals.compute import compute_signals
    from siftkit.signals.vectors import load_or_compute_vectors, rows_f32

    model, pool_dir = tiny
    table = _table(pool_dir)
    ids = table.column("id").to_pylist()
    cache = str(tmp_path / "cache")
    res = brief_experience(table, model, cache_dir=cache, **BRIEF)
    assert not res.reused

    # the base model's prompt perplexity, from the signal cache (nothing recomputed)
    stats: dict = {}
    ppl = compute_signals(table, [{"name": "lm_loss", "model": model, "template": "auto"}], cache,
                          stats=stats).column("lm_prompt_ppl").to_numpy(zero_copy_only=False)
    assert stats["lm_loss"]["computed"] == 0 and np.isfinite(ppl).all()
    np.testing.assert_array_equal(ppl, res.prompt_ppl)
    # the clusters: k-means (seed 0) over the base model's mean-pooled query states, from the vector cache
    spec = {"name": "embedding", "backend": "causal-lm", "model": model, "gguf_file": None, "pooling": "mean",
            "layer": -1, "segment": "query"}
    vecs = load_or_compute_vectors(table, spec, cache)
    labels, _ = kmeans_labels(rows_f32(vecs, np.arange(40), normalize=True), 3, 0)
    np.testing.assert_array_equal(labels, res.labels)
    assert len(set(labels.tolist())) == 3

    want = _reference_picks(labels, ppl, 4)
    assert 6 <= len(want) <= 12
    for c in range(3):                                   # at most 4 per cluster, none outside its band
        members = np.flatnonzero(labels == c)
        lo, hi = np.percentile(ppl[members], [25, 75])
        picked = [i for i in want if labels[i] == c]
        assert 1 <= len(picked) <= 4 and all(lo <= ppl[i] <= hi for i in picked)
        if ppl[members].min() < lo:
            assert members[ppl[members].argmin()] not in picked
    assert res.ids == [ids[i] for i in want]
    assert res.info["trained_ids"] == res.ids and res.info["train_log"]["examples"] == len(want)
    assert [p["id"] for p in res.info["picks"]] == res.ids
    assert res.info["train_log"]["steps"] == (len(want) + 1) // 2

    # the saved model is a plain, loadable, fine-tuned copy of the base
    tuned = AutoModelForCausalLM.from_pretrained(res.model)
    base = AutoModelForCausalLM.from_pretrained(model)
    w = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(tuned.state_dict()[w], base.state_dict()[w])
    assert Path(res.model, "tokenizer.json").is_file()
    assert Path(res.model).parent == Path(cache, "models", "cherry-brief")

    # same inputs: reused as is; another option: another folder
    again = brief_experience(table, model, cache_dir=cache, **BRIEF)
    assert again.reused and again.model == res.model and again.ids == res.ids and again.labels is None
    with pytest.raises(ConfigError, match="built from other inputs"):
        brief_experience(table, model, cache_dir=cache, out=res.model, **{**BRIEF, "per_cluster": 3})


def test_cherry_ifd_preset_scores_ifd_with_the_experienced_model_and_reuses_it(tiny, tmp_path, monkeypatch):
    from siftkit import api
    from siftkit.cli import main
    from siftkit.signals.compute import compute_signals

    model, pool_dir = tiny
    table = _table(pool_dir)
    cache = str(tmp_path / "cache")
    recipe = {"inputs": [pool_dir], "budget": 5, "cache_dir": cache,
              # template auto: the tiny model's chat template (Cherry's preamble would not fit TRAIN's 64 tokens)
              "preset": {"name": "cherry-ifd", "model": model, "template": "auto", "brief_experience": BRIEF},
              "output": {"dir": str(tmp_path / "out")}}
    sel, manifest = api.run(recipe)
    assert len(sel.selected) == 5
    folders = list((tmp_path / "cache" / "models" / "cherry-brief").iterdir())
    assert len(folders) == 1
    folder = str(folders[0])
    assert manifest["signals"]["lm_loss"]["config"]["model"] == folder
    assert manifest["config"]["signals"][0]["brief_experience"]["clusters"] == 3   # the recipe as given

    ifd = sel.signals.column("lm_ifd").to_numpy(zero_copy_only=False)
    other = str(tmp_path / "other-cache")
    tuned = compute_signals(table, [{"name": "lm_loss", "model": folder}], other).column("lm_ifd")
    base = compute_signals(table, [{"name": "lm_loss", "model": model}], other).column("lm_ifd")
    np.testing.assert_allclose(ifd, tuned.to_numpy(zero_copy_only=False), rtol=1e-6)
    assert not np.allclose(ifd, base.to_numpy(zero_copy_only=False), rtol=1e-3)
    ok = np.isfinite(ifd) & (ifd <= 1)
    np.testing.assert_allclose(np.sort(ifd[sel.selected])[::-1], np.sort(ifd[ok])[::-1][:5])

    # a rerun (here through the CLI) reuses the saved model: training is not called again
    import siftkit.finetune

    def no_training(*a, **k):
        raise AssertionError("the brief-experience model was trained again")

    monkeypatch.setattr(siftkit.finetune.BaseLM, "finetune", no_training)
    out = tmp_path / "cli"
    rc = main(["--quiet", "select", pool_dir, "--budget", "5", "--preset", "cherry-ifd", "--param", f"model={model}",
               "--param", "template=auto",
               "--param", f"brief_experience={json.dumps(BRIEF)}", "--cache-dir", cache, "--out", str(out)])
    assert rc == 0
    cli = json.loads((out / "manifest.json").read_text())
    assert cli["signals"]["lm_loss"]["config"]["model"] == folder
    assert [len(list((tmp_path / "cache" / "models" / "cherry-brief").iterdir()))] == [1]
    with open(out / "selected.jsonl", encoding="utf-8") as fh:
        got = sorted(json.loads(line)["messages"][0]["content"] for line in fh)
    msgs = table.column("messages").to_pylist()
    assert got == sorted(msgs[i][0]["content"] for i in sel.selected.tolist())


def test_cherry_options_are_validated(tmp_path):
    def build(**preset):
        return build_config({"inputs": ["x.jsonl"], "budget": 4, "preset": {"name": "cherry-ifd", **preset}},
                            "recipe.yaml")

    with pytest.raises(ConfigError, match=r"brief_experience: unknown key\(s\) \['cluster'\]"):
        build(model="m", brief_experience={"cluster": 10})
    with pytest.raises(ConfigError, match=r"brief_experience: train: unknown key\(s\) \['epoch'\]"):
        build(model="m", brief_experience={"train": {"epoch": 1}})
    with pytest.raises(ConfigError, match=r"brief_experience.band"):
        build(model="m", brief_experience={"band": [75, 25]})
    with pytest.raises(ConfigError, match=r"brief_experience.per_cluster"):
        build(model="m", brief_experience={"per_cluster": 0})
    with pytest.raises(ConfigError, match=r"brief_experience.embedding"):
        build(model="m", brief_experience={"embedding": {"backend": "nope"}})
    with pytest.raises(ConfigError, match="need.*model"):
        build(brief_experience={"clusters": 10})
    with pytest.raises(ConfigError, match="bogus"):                                 # left to the select step
        build(model="m", bogus=1)
    with pytest.raises(ConfigError, match="brief_experience is an option of the lm_loss signal"):
        build_config({"inputs": ["x"], "signals": [{"name": "deita", "brief_experience": {}}]}, "r")

    cfg = build(model="m", brief_experience=True)
    (spec,) = cfg.signals
    assert spec["name"] == "lm_loss" and spec["model"] == "m"
    be = spec["brief_experience"]
    assert (be["clusters"], be["per_cluster"], be["band"], be["seed"]) == (100, 10, [25.0, 75.0], 0)
    assert be["train"]["mode"] == "lora" and be["train"]["lr"] == 2e-4          # bench defaults
    plain = build(model="m")                                                     # no brief experience
    assert plain.signals == [{"name": "lm_loss", "model": "m", "template": "cherry"}]   # Cherry's prompt
    assert build().signals == []                                                 # as before: list your own


def test_band_picks_edge_cases():
    from siftkit.cherry import band_picks

    labels = np.array([0, 0, 0, 0, 0, 1, -1, 1])
    ppl = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 7.0, 3.0, 7.0])
    # cluster 0: p25 = 2, p75 = 4 -> rows with 2, 3, 4; cluster 1: both 7 (ties kept); -1 never picked
    assert band_picks(labels, ppl, 10, [25, 75]).tolist() == [2, 3, 4, 5, 7]
    assert band_picks(labels, ppl, 1, [25, 75]).tolist() == [2, 7]     # rank floor(m / 2) of each band
    assert band_picks(labels, ppl, 10, [0, 100]).tolist() == [0, 1, 2, 3, 4, 5, 7]
    assert band_picks(np.full(3, -1), ppl[:3], 2, [25, 75]).tolist() == []
