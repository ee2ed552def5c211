"""DiverseEvol: fixed-embedding rounds equal one k-center run from the random start; the re-embed hook."""

from __future__ import annotations

import numpy as np
import pytest

from diversity_helpers import blobs, context, unit
from siftkit.errors import ConfigError
from siftkit.registry import make, selector_class
from siftkit.selectors.diverseevol import diverse_evol
from siftkit.selectors.kcenter import k_center_greedy


def test_fixed_embedding_rounds_equal_one_k_center_run():
    rng = np.random.default_rng(0)
    x = unit(rng, 400, 8)
    init = rng.choice(400, 10, replace=False)
    got, rounds = diverse_evol(x, 70, init, round_size=25)
    assert rounds == 3 and len(got) == 70 == len(set(got.tolist()))
    assert got[:10].tolist() == init.tolist()
    rest = np.setdiff1d(np.arange(400), init)
    one = rest[k_center_greedy(x[rest], 60, initial=x[init])]
    assert got[10:].tolist() == one.tolist()


def test_reembed_hook_sees_each_rounds_selection_and_changes_picks():
    """As in the paper, every round after the random initial set uses a re-embedding (the first one made
    after training on the initial set): the fixed embeddings are never used once something is selected."""
    rng = np.random.default_rng(1)
    x, _ = blobs(rng, [50, 50, 50], d=8)
    calls: list[list[int]] = []
    flipped = unit(rng, 150, 8)

    def hook(sel: np.ndarray) -> np.ndarray:
        calls.append(sel.tolist())
        return flipped

    init = np.arange(3)
    fixed, _ = diverse_evol(x, 30, init, 9)
    moved, rounds = diverse_evol(x, 30, init, 9, reembed=hook)
    assert rounds == 3 and [len(c) for c in calls] == [3, 12, 21]
    assert calls[0] == init.tolist() and calls[1] == moved[:12].tolist() and calls[2] == moved[:21].tolist()
    assert moved.tolist() != fixed.tolist()
    # every round ran on the re-embedding: the same as fixed-embedding rounds over `flipped`
    assert moved.tolist() == diverse_evol(flipped, 30, init, 9)[0].tolist()
    # with the embeddings only coming from the hook, no fixed ones are needed; from an empty start they are
    assert diverse_evol(None, 30, init, 9, reembed=hook, n=150)[0].tolist() == moved.tolist()
    with pytest.raises(ValueError, match="empty selection"):
        diverse_evol(None, 30, np.arange(0), 9, reembed=hook, n=150)


def test_selector_seeded_and_exact_budget():
    rng = np.random.default_rng(2)
    x = unit(rng, 120, 6)
    sel = make(selector_class("diverseevol"), {"initial_size": 5, "round_size": 10}, "de")
    cands = np.arange(0, 120, 2, dtype=np.int64)
    a = sel.run(context(x, seed=3), cands, 27)
    b = sel.run(context(x, seed=3), cands, 27)
    c = sel.run(context(x, seed=4), cands, 27)
    assert a.kept.tolist() == b.kept.tolist() != c.kept.tolist()
    assert len(a.kept) == 27 and set(a.kept.tolist()) <= set(cands.tolist())
    assert a.details == {"initial": 5, "rounds": 3, "retrained": False}


def test_selector_hook_gets_pool_rows():
    rng = np.random.default_rng(3)
    x = unit(rng, 40, 4)
    seen: list[np.ndarray] = []

    def hook(rows: np.ndarray) -> np.ndarray:
        seen.append(rows)
        return x[10:]                         # embeddings of the candidates (rows 10..39)

    sel = make(selector_class("diverseevol"), {"initial_size": 2, "round_size": 3, "reembed": hook}, "de")
    res = sel.run(context(x), np.arange(10, 40, dtype=np.int64), 8)
    assert len(seen) == 2 and min(s.min() for s in seen) >= 10    # before each of the two rounds
    assert seen[0].tolist() == res.kept[:2].tolist() and seen[1].tolist() == res.kept[:5].tolist()
    assert res.details == {"initial": 2, "rounds": 2, "retrained": True}


def test_bad_config():
    with pytest.raises(ConfigError, match="round_size"):
        make(selector_class("diverseevol"), {"round_size": 0}, "de")
    with pytest.raises(ConfigError, match="callable"):
        make(selector_class("diverseevol"), {"reembed": "train.py"}, "de")


# ------------------------------------------------------------------ built-in retraining (tiny model)

RETRAIN_TRAIN = {"epochs": 1, "lr": 1e-2, "warmup": 0, "batch_size": 2, "micro_batch_size": 2, "max_length": 64}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from bench_helpers import tiny_model_and_chat_pool

    return tiny_model_and_chat_pool(tmp_path_factory.mktemp("de"))     # 40 chat conversations, 10 topics


def _pool_table(pool_dir: str):
    from siftkit.io.pool import read_pool

    return read_pool([pool_dir]).table


def test_retrain_reembeds_with_the_model_fine_tuned_on_the_selection(tiny):
    """The re-embedding is the fine-tuned model's mean-pooled last hidden states (checked against a
    fine-tune + forward pass done here), and it differs from the base model's."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from siftkit.bench.train import build_examples, train_cell
    from siftkit.scoring.templates import resolve
    from siftkit.selectors.diverseevol import Retrainer, retrain_options
    from siftkit.signals.segments import flatten

    model, pool_dir = tiny
    table = _pool_table(pool_dir)
    texts = flatten(table).texts("conversation")
    convs = table.column("messages").to_pylist()
    opts = retrain_options({"model": model, "train": RETRAIN_TRAIN})
    assert opts["embedding"] == {"pooling": "mean", "layer": -1, "segment": "conversation", "max_length": 512,
                                 "batch_size": 16}
    sel = np.array([3, 17, 25, 31])
    r = Retrainer(opts, texts, lambda s: [convs[i] for i in s], seed=7, normalize=True)
    after = r(sel)
    assert after.shape == (40, 32) and np.allclose(np.linalg.norm(after, axis=1), 1, atol=1e-5)
    base = r.signal().encode(texts)                          # the base model, same encoder settings
    assert np.abs(after - base).max() > 1e-3                 # the representation moved
    assert r.log[0]["trained_on"] == 4 and r.log[0]["examples"] == 4 and np.isfinite(r.log[0]["train_loss"])

    # independent: train the same way with the bench code, embed with a plain forward pass
    lm = AutoModelForCausalLM.from_pretrained(model)
    tok = r.base().tokenizer
    ex = build_examples([convs[i] for i in sel], tok, resolve("auto", tok), 64)
    tuned, _ = train_cell(copy.deepcopy(lm), tok, ex, {**opts["train"], "save_model": False},
                          str(tiny[1]) + "-work", seed=7 + 1, device="cpu")
    want = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, return_tensors="pt", truncation=True, max_length=512)
            h = tuned(**enc, output_hidden_states=True).hidden_states[-1][0].mean(0).numpy()
            want.append(h / np.linalg.norm(h))
    np.testing.assert_allclose(after, np.asarray(want), atol=2e-4)


def test_retrain_recipe_deterministic_exact_budget_and_per_round_losses(tiny, tmp_path):
    """Through a recipe (api.run) and the CLI (--param retrain=...): same seed, same picks; the budget
    exactly; two rounds, each preceded by a fine-tune on the selection so far; no base embeddings needed."""
    import json

    from siftkit import api
    from siftkit.cli import main

    model, pool_dir = tiny
    retrain = {"model": model, "train": RETRAIN_TRAIN}
    recipe = {"inputs": [pool_dir], "budget": 12, "seed": 5, "cache_dir": str(tmp_path / "cache"),
              "steps": [{"select": "diverseevol", "initial_size": 4, "round_size": 4, "retrain": retrain}]}
    sel, _ = api.run(recipe, write=False)
    assert len(sel.selected) == 12 == len(set(sel.ids))
    d = sel.steps[-1].details
    assert d["rounds"] == 2 and d["initial"] == 4 and d["retrained"] is True
    assert d["trained_on"] == [4, 8] and len(d["train_loss"]) == 2 and all(np.isfinite(d["train_loss"]))
    assert not (tmp_path / "cache" / "vectors").exists()     # every round used a fine-tuned model

    out = tmp_path / "cli"
    rc = main(["--quiet", "select", pool_dir, "--budget", "12", "--seed", "5", "--method", "diverseevol",
               "--param", "initial_size=4", "--param", "round_size=4", "--param", f"retrain={json.dumps(retrain)}",
               "--cache-dir", str(tmp_path / "cache2"), "--out", str(out)])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    step = manifest["steps"][-1]
    assert step["details"]["train_loss"] == d["train_loss"]
    with open(out / "selected.jsonl", encoding="utf-8") as fh:
        cli_msgs = [json.loads(line)["messages"] for line in fh]
    table = _pool_table(pool_dir)
    pos = {json.dumps([{"role": t["role"], "content": t["content"]} for t in m]): i
           for i, m in enumerate(table.column("messages").to_pylist())}
    assert sorted(pos[json.dumps(m)] for m in cli_msgs) == sel.selected.tolist()


def test_retrain_from_an_empty_start_embeds_with_the_base_model(tiny):
    """initial_size 0: the first round runs on the base model's embeddings (the causal-lm embedding signal
    of retrain.model), the second on the fine-tuned model's."""
    from siftkit.selectors.base import SelectionContext
    from siftkit.signals.compute import build_signal

    model, pool_dir = tiny
    table = _pool_table(pool_dir)
    asked: list[dict] = []

    def loader(spec: dict) -> np.ndarray:
        asked.append(spec)
        return build_signal(spec).compute(table)["embedding"]

    sel = make(selector_class("diverseevol"), {"initial_size": 0, "round_size": 3,
                                               "retrain": {"model": model, "train": RETRAIN_TRAIN}}, "de")
    res = sel.run(SelectionContext(pool=table, signals=table.select([]), seed=1, vector_loader=loader),
                  np.arange(40, dtype=np.int64), 6)
    assert len(asked) == 1 and asked[0]["backend"] == "causal-lm" and asked[0]["model"] == model
    assert asked[0]["segment"] == "conversation" and asked[0]["pooling"] == "mean"
    assert len(res.kept) == 6 and res.details["trained_on"] == [3] and res.details["rounds"] == 2


def test_retrain_parameters_are_validated():
    def build(retrain, **extra):
        from siftkit.config import build_config

        return build_config({"inputs": ["x.jsonl"], "budget": 4,
                             "steps": [{"select": "diverseevol", "retrain": retrain, **extra}]}, "recipe.yaml")

    with pytest.raises(ConfigError, match=r"diverseevol: retrain: unknown key\(s\) \['lr'\]"):
        build({"model": "m", "lr": 0.1})
    with pytest.raises(ConfigError, match=r"retrain: train: unknown key\(s\) \['epoch'\]"):
        build({"model": "m", "train": {"epoch": 1}})
    with pytest.raises(ConfigError, match=r"retrain: embedding: unknown key\(s\) \['model'\]"):
        build({"model": "m", "embedding": {"model": "other"}})
    with pytest.raises(ConfigError, match="pooling 'max'"):
        build({"model": "m", "embedding": {"pooling": "max"}})
    with pytest.raises(ConfigError, match="'model' is required"):
        build({"train": {"epochs": 1}})
    with pytest.raises(ConfigError, match="template"):
        build({"model": "m", "template": "nope"})
    with pytest.raises(ConfigError, match="batch_size"):
        build({"model": "m", "train": {"batch_size": 3, "micro_batch_size": 2}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        build("m")
    cfg = build({"model": "m", "train": {"epochs": 1}})
    assert cfg.steps[0].params["retrain"]["model"] == "m"
    with pytest.raises(ConfigError, match="not both"):
        make(selector_class("diverseevol"), {"retrain": {"model": "m"}, "reembed": lambda rows: rows}, "de")
