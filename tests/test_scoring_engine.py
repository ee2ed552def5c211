"""Engine pieces: batch planning, template spans, full-logits fallback path, model loading errors."""

from __future__ import annotations

import numpy as np
import pytest

from siftkit.scoring.batching import padding_ratio, plan_batches


def test_plan_batches_covers_all_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, size=1000)
    plan = plan_batches(lengths, token_budget=2048, max_batch=64)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(1000))
    for b in plan:
        assert len(b) <= 64 and (lengths[b].max() * len(b) <= 2048 or len(b) == 1)
    assert padding_ratio(lengths, plan) > 0.9          # length bucketing keeps padding small
    naive = [np.arange(s, min(s + 8, 1000)) for s in range(0, 1000, 8)]
    assert padding_ratio(lengths, naive) < 0.75
    assert [b.tolist() for b in plan_batches(lengths, 2048, 64)] == [b.tolist() for b in plan]  # deterministic
    assert [len(b) for b in plan_batches(np.array([5000, 3]), 100)] == [1, 1]   # over-budget one alone


def test_named_template_spans_are_exact():
    from siftkit.scoring.templates import NAMED, render

    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi {there}"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": ""}]
    for t in NAMED:
        r = render(conv, t, None)
        assert [r.text[a:b] for a, b in r.spans] == [m["content"] for m in conv], t
    assert render(conv[1:3], "alpaca", None).text.startswith("Below is an instruction")
    assert render(conv[1:2], "chatml", None, add_generation_prompt=True).text.endswith("<|im_start|>assistant\n")


def test_span_mask_overlap():
    from siftkit.scoring.templates import span_mask

    offs = np.array([[0, 0], [0, 3], [3, 5], [5, 9], [9, 9]])
    assert span_mask(offs, (4, 6)).tolist() == [False, False, True, True, False]
    assert not span_mask(offs, (4, 4)).any()




def test_full_logits_path_equals_fast_head(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scoring_tiny import SAMPLES, build_tiny_lm, pool_table
    from siftkit.scoring.lm_loss import LMLoss

    sig = LMLoss(str(build_tiny_lm(tmp_path / "m")))
    fast = sig.compute(pool_table(SAMPLES))
    assert sig.lm.fast_head
    sig.lm.fast_head = False                       # the generic path (models with logit soft-capping)
    try:
        slow = sig.compute(pool_table(SAMPLES))
    finally:
        sig.lm.fast_head = True
    for k in ("lm_loss", "lm_entropy", "lm_ifd", "lm_prompt_ppl"):
        np.testing.assert_allclose(slow[k], fast[k], rtol=1e-5)


def test_model_errors(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from siftkit.errors import ConfigError
    from siftkit.scoring.model import load_model, resolve_source

    with pytest.raises(ConfigError, match="cannot load model"):
        load_model(str(tmp_path / "missing_folder"))
    with pytest.raises(ConfigError, match="GGUF file not found"):
        resolve_source(str(tmp_path / "x.gguf"))
    (tmp_path / "m.gguf").write_bytes(b"")
    assert resolve_source(str(tmp_path / "m.gguf")) == (str(tmp_path), "m.gguf")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        load_model(str(tmp_path / "missing_folder"), quantization="4bit", device="cpu")
