"""lm_loss on a tiny random Llama: equals a direct unbatched computation, batch-invariant, explicit failures."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from scoring_tiny import SAMPLES, build_tiny_lm, msgs, pool_table, reference_lm
from siftkit.errors import ConfigError
from siftkit.scoring.lm_loss import LMLoss


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp("tiny_lm")))


def reference(folder: str, conv: list[dict[str, str]]) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return reference_lm(AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder),
                        conv)


def test_matches_unbatched_reference(tiny):
    out = LMLoss(tiny).compute(pool_table(SAMPLES))
    for i, conv in enumerate(SAMPLES):
        ref = reference(tiny, conv)
        for k, v in ref.items():
            assert out[k][i] == pytest.approx(v, rel=1e-5), (i, k)
        assert out["lm_ppl"][i] == pytest.approx(math.exp(ref["lm_loss"]), rel=1e-5)
    assert (out["lm_loss_reason"] == "").all()
    # the two IFD variants are different functions of the same losses: they must not coincide
    assert not np.allclose(out["lm_ifd"], out["lm_ifd_ppl"])


def test_batch_and_order_invariant(tiny):
    sig = LMLoss(tiny, token_budget=64, max_batch=2)      # many small forward batches
    whole = LMLoss(tiny).compute(pool_table(SAMPLES))
    small = sig.compute(pool_table(SAMPLES))
    rev = LMLoss(tiny).compute(pool_table(SAMPLES[::-1]))
    for k in ("lm_loss", "lm_prompt_ppl", "lm_entropy", "lm_ifd"):
        np.testing.assert_allclose(small[k], whole[k], rtol=1e-5)
        np.testing.assert_allclose(rev[k][::-1], whole[k], rtol=1e-5)


def test_failures_are_nan_with_reason(tiny):
    long_reply = " ".join(["apples pears plums"] * 60)
    convs = [msgs(("user", "only a question")), msgs(("user", "q"), ("assistant", "   ")),
             msgs(("user", "q " * 300), ("assistant", "short answer")), msgs(("user", "q"), ("assistant", long_reply)),
             SAMPLES[0]]
    out = LMLoss(tiny, max_length=128, token_budget=512).compute(pool_table(convs))
    assert list(out["lm_loss_reason"]) == ["no_response", "empty_response", "too_long", "", ""]
    assert np.isnan(out["lm_loss"][:3]).all() and np.isnan(out["lm_ifd"][:3]).all()
    assert list(out["lm_truncated"]) == [False, False, False, True, False]  # only scored records
    assert 0 < out["lm_tokens"][3] < 128 and np.isfinite(out["lm_ifd"][3])
    strict = LMLoss(tiny, max_length=128, token_budget=512, truncation="error").compute(pool_table(convs))
    assert list(strict["lm_loss_reason"]) == ["no_response", "empty_response", "too_long", "too_long", ""]
    assert strict["lm_loss"][4] == pytest.approx(out["lm_loss"][4], rel=1e-6)


def test_truncated_ifd_scores_the_same_tokens(tiny):
    """With right truncation, s(y|x) and s(y) are over the same (cut) response tokens."""
    reply = " ".join(["the sea and the sky"] * 40)
    conv = [msgs(("user", "Write a short poem about the sea."), ("assistant", reply))]
    cut = LMLoss(tiny, max_length=64, token_budget=512).compute(pool_table(conv))
    full = LMLoss(tiny, max_length=256).compute(pool_table(conv))
    assert cut["lm_truncated"][0] and not full["lm_truncated"][0]
    assert cut["lm_tokens"][0] < full["lm_tokens"][0]
    assert cut["lm_loss_noprompt"][0] != pytest.approx(full["lm_loss_noprompt"][0], rel=1e-6)


def test_turns_all_and_named_templates(tiny):
    multi = [SAMPLES[2]]
    last = LMLoss(tiny).compute(pool_table(multi))
    allt = LMLoss(tiny, turns="all").compute(pool_table(multi))
    assert allt["lm_tokens"][0] > last["lm_tokens"][0]
    assert allt["lm_loss"][0] != pytest.approx(last["lm_loss"][0])
    single = LMLoss(tiny, turns="all").compute(pool_table([SAMPLES[0]]))
    one = LMLoss(tiny).compute(pool_table([SAMPLES[0]]))
    assert single["lm_loss"][0] == pytest.approx(one["lm_loss"][0], rel=1e-6)
    for t in ("plain", "alpaca", "vicuna", "chatml"):
        out = LMLoss(tiny, template=t).compute(pool_table(SAMPLES))
        assert np.isfinite(out["lm_loss"]).all(), t
    a = LMLoss(tiny, template="alpaca").compute(pool_table(SAMPLES))["lm_loss"]
    b = LMLoss(tiny, template="plain").compute(pool_table(SAMPLES))["lm_loss"]
    assert not np.allclose(a, b)


def test_config_errors_and_fingerprint(tiny):
    with pytest.raises(ConfigError, match="template"):
        LMLoss(tiny, template="llama9")
    with pytest.raises(ConfigError, match="turns"):
        LMLoss(tiny, turns="first")
    with pytest.raises(ConfigError, match="GGUF file not found"):
        LMLoss("/nonexistent/model.gguf").config()
    assert LMLoss(tiny).fingerprint() != LMLoss(tiny, template="alpaca").fingerprint()
    assert LMLoss(tiny).fingerprint() == LMLoss(tiny, token_budget=4096).fingerprint()
    no_ifd = LMLoss(tiny, ifd=False, prefix="small")
    cols = no_ifd.columns()
    assert "small_loss" in cols and "small_ifd" not in cols
    out = no_ifd.compute(pool_table(SAMPLES[:2]))
    assert set(out) == set(cols)


def test_token_budget_defaults_per_device(tiny):
    from siftkit.scoring.base import CPU_TOKEN_BUDGET, GPU_TOKEN_BUDGET

    sig = LMLoss(tiny, device="cpu")
    assert sig.effective_token_budget(sig.lm) == CPU_TOKEN_BUDGET < GPU_TOKEN_BUDGET
    assert LMLoss(tiny, device="cpu", token_budget=96).effective_token_budget(sig.lm) == 96
    with pytest.raises(ConfigError, match="token_budget"):
        LMLoss(tiny, token_budget=0)
