"""Fine-tuning (a bench cell, a method's brief fine-tune): TRL's ``SFTTrainer`` on a pre-tokenised,
assistant-masked dataset.

The loss covers the tokens of every assistant turn plus the turn's end token (the first token after the
content, e.g. ``<|im_end|>``) so the model learns to stop. The mask is built here with siftkit's own template
and span code (``siftkit.scoring.templates``) rather than TRL's ``assistant_only_loss``, which needs a chat
template with ``{% generation %}`` markers that most models (SmolLM2, Llama 3, Qwen 2) lack; the same mask
works for chat templates and for the named templates (``plain``, ``alpaca``, ...). TRL receives
``input_ids`` + ``assistant_masks`` and turns the mask into ``-100`` labels.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingDependencyError


@dataclass
class Examples:
    rows: list[dict[str, list[int]]]   # input_ids, assistant_masks
    skipped: int                       # conversations with no assistant token left (or that failed to render)
    truncated: int
    kept: list[int]                    # index of each row's conversation in the input


def build_examples(conversations: list[list[dict[str, str]]], tokenizer: Any, template: str,
                   max_length: int) -> Examples:
    """Tokenise conversations; mask = assistant content tokens + each assistant turn's end token."""
    from ..io.formats import message_text
    from ..scoring.templates import TemplateError, render, span_mask, tokenize

    rows, kept, skipped, truncated = [], [], 0, 0
    for k, msgs in enumerate(conversations):
        msgs = [{"role": m["role"], "content": message_text(m)} for m in msgs]  # tool calls as signals see them
        try:
            r = render(msgs, template, tokenizer)
        except TemplateError:
            skipped += 1
            continue
        ids, offs = tokenize(r, tokenizer)
        mask = np.zeros(len(ids), dtype=bool)
        for m, span in zip(msgs, r.spans):
            if m["role"] != "assistant":
                continue
            inside = span_mask(offs, span)
            if not inside.any():
                continue
            mask |= inside
            end = int(np.flatnonzero(inside)[-1]) + 1
            if end < len(ids):
                mask[end] = True                # the end-of-turn token
        if len(ids) > max_length:
            truncated += 1
            ids, mask = ids[:max_length], mask[:max_length]
        if not mask[1:].any():                  # nothing to learn (the first token has no prediction)
            skipped += 1
            continue
        rows.append({"input_ids": ids.tolist(), "assistant_masks": mask.astype(int).tolist()})
        kept.append(k)
    return Examples(rows, skipped, truncated, kept)


def _require() -> None:
    for mod, extra in (("trl", "bench"), ("peft", "bench"), ("datasets", "bench")):
        try:
            __import__(mod)
        except ImportError:
            raise MissingDependencyError(mod, extra, "siftkit bench fine-tuning") from None


def drop_gguf_quantizer(model: Any) -> Any:
    """A model loaded from a ``.gguf`` holds ordinary dequantised tensors but stays flagged as "quantized with
    GGUF", which transformers refuses to train or save: clear that flag (other quantisations are kept)."""
    q = getattr(model, "hf_quantizer", None)
    method = str(getattr(getattr(q, "quantization_config", None), "quant_method", "")).lower()
    if q is not None and method.endswith("gguf"):
        model.hf_quantizer = None
        model.is_quantized = False
        model.quantization_method = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def train_cell(model: Any, tokenizer: Any, examples: Examples, settings: dict[str, Any], out_dir: str,
               seed: int, device: str, callbacks: list[Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``model`` (a fresh copy of the base) in place; returns the trained model and a log.

    ``callbacks``: extra ``transformers.TrainerCallback`` objects (e.g. LESS snapshots the LoRA weights and
    the Adam moments at the end of every epoch)."""
    _require()
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if not examples.rows:
        raise ConfigError("the selection has no trainable examples (no assistant tokens after templating)")
    torch.manual_seed(seed)
    model = drop_gguf_quantizer(model)
    micro = int(settings["micro_batch_size"])
    accum = int(settings["batch_size"]) // micro
    cuda = device.startswith("cuda")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    peft_config = None
    if settings["mode"] == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=int(settings["lora_r"]), lora_alpha=int(settings["lora_alpha"]),
                                 lora_dropout=float(settings["lora_dropout"]),
                                 target_modules=settings["lora_targets"], task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=os.path.join(out_dir, "trainer"), num_train_epochs=float(settings["epochs"]),
        learning_rate=float(settings["lr"]), lr_scheduler_type=settings["scheduler"],
        warmup_steps=float(settings["warmup"]), weight_decay=float(settings["weight_decay"]),
        per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
        max_length=int(settings["max_length"]), packing=False, assistant_only_loss=False,
        seed=seed, data_seed=seed, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
        use_cpu=not cuda, bf16=bf16, dataloader_num_workers=0, remove_unused_columns=True,
    )
    import datasets
    from transformers import PrinterCallback, ProgressCallback

    datasets.disable_progress_bars()
    ds = Dataset.from_list(examples.rows)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=list(callbacks or []))
    for cb in (PrinterCallback, ProgressCallback):   # the loss history goes to train_log.json instead
        trainer.remove_callback(cb)
    result = trainer.train()
    shutil.rmtree(args.output_dir, ignore_errors=True)   # save_strategy="no": only empty folders there
    model = trainer.model
    n_tokens = int(sum(sum(r["assistant_masks"]) for r in examples.rows))
    log = {"examples": len(examples.rows), "skipped": examples.skipped, "truncated": examples.truncated,
           "loss_tokens": n_tokens, "steps": int(trainer.state.global_step),
           "train_loss": float(result.training_loss), "train_runtime_s": round(result.metrics["train_runtime"], 2),
           "history": trainer.state.log_history, "settings": settings, "seed": seed,
           "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}
    if settings.get("save_model", True):
        model.save_pretrained(os.path.join(out_dir, "model"))
    if peft_config is not None:
        model = model.merge_and_unload()     # plain model for evaluation
    model.eval()
    if not math.isfinite(log["train_loss"]):
        raise RuntimeError(f"training diverged (loss {log['train_loss']}); lower train.lr")
    return model, log
