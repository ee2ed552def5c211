"""The training mask: assistant content + end-of-turn token, for chat and named templates; TRL's labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from scoring_tiny import SAMPLES, build_tiny_lm, msgs
from siftkit.bench.train import build_examples


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_lm(tmp_path_factory.mktemp("tiny")))


def _masked_text(tok, row) -> str:
    ids = np.asarray(row["input_ids"])
    return tok.decode(ids[np.asarray(row["assistant_masks"], bool)].tolist())


def test_chat_template_mask_covers_every_assistant_turn_and_its_end_token(tok) -> None:
    ex = build_examples(SAMPLES, tok, "chat", 256)
    assert ex.skipped == 0 and ex.truncated == 0 and ex.kept == list(range(len(SAMPLES)))
    for conv, row in zip(SAMPLES, ex.rows):
        want = "".join(m["content"] + "<|im_end|>" for m in conv if m["role"] == "assistant")
        assert _masked_text(tok, row) == want
        assert len(row["input_ids"]) == len(row["assistant_masks"])


def test_named_template_mask_and_truncation(tok) -> None:
    conv = msgs(("user", "Two plus two?"), ("assistant", "four"))
    ex = build_examples([conv], tok, "plain", 256)
    text = _masked_text(tok, ex.rows[0])
    assert text.strip() == "four" and text.endswith("\n")    # content (with the space before it) + the end token
    full = build_examples([SAMPLES[2]], tok, "chat", 256).rows[0]
    cut = build_examples([SAMPLES[2]], tok, "chat", 20)
    assert cut.truncated == 1 and cut.rows[0]["input_ids"] == full["input_ids"][:20]
    # cut before any assistant token: nothing to learn, skipped and counted
    none = build_examples([SAMPLES[1]], tok, "chat", 5)
    assert none.rows == [] and none.skipped == 1


def test_trl_builds_minus_100_labels_from_the_mask(tok, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    ex = build_examples(SAMPLES, tok, "chat", 256)
    folder = build_tiny_lm(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(folder)
    args = SFTConfig(output_dir=str(tmp_path / "t"), report_to=[], use_cpu=True, max_length=256,
                     assistant_only_loss=False, per_device_train_batch_size=2)
    tr = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(ex.rows), processing_class=tok)
    for row, got in zip(ex.rows, tr.train_dataset):
        labels = np.asarray(got["labels"])
        mask = np.asarray(row["assistant_masks"], bool)
        assert (labels[~mask] == -100).all() and (labels[mask] == np.asarray(row["input_ids"])[mask]).all()


def test_full_fine_tuning_updates_every_weight_and_logs(tok, tmp_path: Path) -> None:
    """``mode: full`` (LoRA is exercised by the smoke run)."""
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    import torch
    from transformers import AutoModelForCausalLM

    from siftkit.bench.config import TRAIN_DEFAULTS
    from siftkit.bench.train import train_cell

    base = AutoModelForCausalLM.from_pretrained(build_tiny_lm(tmp_path / "m"))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    mode = "full"
    settings = {**TRAIN_DEFAULTS, "mode": mode, "epochs": 1, "lr": 1e-3, "batch_size": 2, "micro_batch_size": 1,
                "max_length": 128}
    ex = build_examples(SAMPLES, tok, "chat", 128)
    model, log = train_cell(base, tok, ex, settings, str(tmp_path / "cell"), seed=0, device="cpu")
    assert log["examples"] == len(SAMPLES) and log["steps"] == 3 and np.isfinite(log["train_loss"])
    assert [h["loss"] for h in log["history"] if "loss" in h]                   # per-step loss history
    after = model.state_dict()
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed and "lm_head.weight" in changed
    assert log["trainable_params"] == sum(p.numel() for p in model.parameters())
    assert (tmp_path / "cell" / "model" / "config.json").is_file()
    assert not (tmp_path / "cell" / "trainer").exists()
