"""The ``reward`` signal with a tiny randomly initialised sequence classifier built from a config."""

from __future__ import annotations

import numpy as np
import pytest

from scoring_tiny import build_tiny_lm, msgs, pool_table
from siftkit.errors import ConfigError
from siftkit.signals.compute import build_signal, compute_signals

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    d = tmp_path_factory.mktemp("rm")
    build_tiny_lm(d / "lm")                       # its tokenizer (with a chat template)
    tok = AutoTokenizer.from_pretrained(d / "lm")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=1)
    model = LlamaForSequenceClassification(cfg)   # no pad_token_id in the config: siftkit sets it
    with torch.no_grad():
        model.score.weight.mul_(20.0)
    model.save_pretrained(d / "rm")
    tok.save_pretrained(d / "rm")
    return str(d / "rm")


POOL = [msgs(("user", "What is 2+2?"), ("assistant", "Two plus two equals four.")),
        msgs(("user", "Write a short poem about the sea."), ("assistant", "The sea and the sky.")),
        msgs(("user", "hello there")),
        msgs(("user", "Explain photosynthesis."), ("assistant", "  ")),
        msgs(("system", "Be brief."), ("user", "Hi"), ("assistant", "hi, how can I help you today?"),
             ("user", "A list?"), ("assistant", "Sure! Here is a list: apples, pears, plums.")),
        msgs(("user", "The quick brown fox " * 40), ("assistant", "jumps over the lazy dog."))]


def test_reward_scores_batching_invariant_and_reasons(reward_model):
    pool = pool_table(POOL)
    small = build_signal({"name": "reward", "model": reward_model, "token_budget": 64, "max_length": 128})
    big = build_signal({"name": "reward", "model": reward_model, "token_budget": 4096, "max_length": 128})
    a, b = small.compute(pool), big.compute(pool)
    assert a["reward_reason"].tolist() == ["", "", "no_response", "empty_response", "", ""]
    assert a["reward_truncated"].tolist() == [False, False, False, False, False, True]
    ok = [0, 1, 4, 5]
    assert np.isfinite(a["reward"][ok]).all() and np.isnan(a["reward"][[2, 3]]).all()
    np.testing.assert_allclose(a["reward"][ok], b["reward"][ok], rtol=1e-4, atol=1e-5)   # padding-invariant
    assert len(set(np.round(a["reward"][ok], 6))) == 4                                    # differs per record
    # each record alone gives the same score as in a batch
    for i in ok:
        one = small.compute(pool.slice(i, 1))["reward"][0]
        assert one == pytest.approx(a["reward"][i], rel=1e-4, abs=1e-5)
    err = build_signal({"name": "reward", "model": reward_model, "max_length": 128, "truncation": "error"})
    assert err.compute(pool)["reward_reason"].tolist()[5] == "too_long"


def test_reward_cached_and_resumed(reward_model, tmp_path):
    pool = pool_table(POOL)
    spec = {"name": "reward", "model": reward_model, "max_length": 128}
    st1: dict = {}
    t1 = compute_signals(pool, [spec], str(tmp_path), stats=st1)
    st2: dict = {}
    t2 = compute_signals(pool, [spec], str(tmp_path), stats=st2)
    assert st1["reward"]["computed"] == 6 and st2["reward"]["computed"] == 0
    np.testing.assert_array_equal(np.asarray(t1.column("reward").to_pylist(), float),
                                  np.asarray(t2.column("reward").to_pylist(), float))   # NaNs in place
    assert t1.select(["reward_truncated", "reward_reason"]).equals(t2.select(["reward_truncated", "reward_reason"]))


def test_reward_config_errors(reward_model):
    with pytest.raises(ConfigError, match="truncation"):
        build_signal({"name": "reward", "model": reward_model, "truncation": "right"})
    sig = build_signal({"name": "reward", "model": reward_model, "label": 3})
    with pytest.raises(ConfigError, match="label 3 but the model has 1"):
        sig.compute(pool_table(POOL[:1]))
