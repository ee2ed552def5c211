"""vLLM fast path equals the transformers path within vllm_backend.TOLERANCE. Needs vLLM and a CUDA GPU:
skipped everywhere else (siftkit's CI has no GPU, so this path is untested there)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")
if not torch.cuda.is_available():
    pytest.skip("the vLLM backend needs a CUDA GPU", allow_module_level=True)

from scoring_tiny import SAMPLES, build_tiny_lm, pool_table
from siftkit.scoring.lm_loss import LMLoss
from siftkit.scoring.vllm_backend import TOLERANCE


def test_vllm_matches_transformers(tmp_path):
    folder = str(build_tiny_lm(tmp_path / "m"))
    ref = LMLoss(folder, dtype="float32", device="cuda").compute(pool_table(SAMPLES))
    got = LMLoss(folder, dtype="float32", backend="vllm", max_length=256).compute(pool_table(SAMPLES))
    for k in ("lm_loss", "lm_loss_noprompt", "lm_ifd", "lm_prompt_ppl"):
        np.testing.assert_allclose(got[k], ref[k], rtol=TOLERANCE)
    assert np.isnan(got["lm_entropy"]).all()
    assert (got["lm_tokens"] == ref["lm_tokens"]).all()
