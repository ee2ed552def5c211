"""Fine-tuning settings: the defaults, their validation, and the check of a base model name.

One ``train:`` shape for the bench (``siftkit bench``) and for every method that trains (DiverseEvol's
per-round retrain, Cherry's brief experience, LESS's warm-up).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

# Defaults scaled for small models on small budgets (the study's 7-8B full SFT used 3 epochs, lr 7e-6, cosine,
# warmup 0.01, weight decay 0.1, batch 128, max length 4096). LoRA needs a ~100x larger learning rate than
# full fine-tuning; a batch of 16 keeps several optimiser steps per epoch at budgets of a few hundred.
TRAIN_DEFAULTS: dict[str, Any] = {
    "mode": "lora", "epochs": 3, "lr": None, "scheduler": "cosine", "warmup": 0.01, "weight_decay": 0.1,
    "batch_size": 16, "micro_batch_size": 4, "max_length": 1024, "lora_r": 16, "lora_alpha": 32,
    "lora_dropout": 0.05, "lora_targets": "all-linear", "save_model": True, "dtype": "auto",
}
LR_DEFAULTS = {"lora": 2e-4, "full": 2e-5}


def _int(v: Any, where: str, minimum: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}, not {v!r}")
    return v


def _num(v: Any, where: str) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        raise ConfigError(f"{where} must be a non-negative number, not {v!r}")
    return float(v)


def train_settings(t: Any, src: str) -> dict[str, Any]:
    """Fine-tuning settings: ``TRAIN_DEFAULTS`` overridden by ``t`` (validated; ``lr`` defaults per mode from
    ``LR_DEFAULTS``). Shared by the bench and by methods that fine-tune briefly (DiverseEvol, Cherry, LESS)."""
    if not isinstance(t, dict):
        raise ConfigError(f"{src}: train must be a mapping")
    unknown = set(t) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ConfigError(f"{src}: train: unknown key(s) {sorted(unknown)}; allowed: {sorted(TRAIN_DEFAULTS)}")
    out = {**TRAIN_DEFAULTS, **t}
    if out["mode"] not in ("lora", "full"):
        raise ConfigError(f"{src}: train.mode must be 'lora' or 'full', not {out['mode']!r}")
    if out["lr"] is None:
        out["lr"] = LR_DEFAULTS[out["mode"]]
    for k in ("epochs", "lr", "warmup", "weight_decay", "lora_dropout"):
        out[k] = _num(out[k], f"{src}: train.{k}")
    for k in ("batch_size", "micro_batch_size", "max_length", "lora_r", "lora_alpha"):
        _int(out[k], f"{src}: train.{k}", 1)
    if out["batch_size"] % out["micro_batch_size"]:
        raise ConfigError(f"{src}: train.batch_size ({out['batch_size']}) must be a multiple of "
                          f"train.micro_batch_size ({out['micro_batch_size']})")
    if out["warmup"] >= 1:
        raise ConfigError(f"{src}: train.warmup is a fraction of the steps, < 1 (got {out['warmup']})")
    if out["scheduler"] not in ("cosine", "linear", "constant", "constant_with_warmup"):
        raise ConfigError(f"{src}: train.scheduler must be cosine, linear, constant or constant_with_warmup")
    return out


def train_options(train: Any, where: str) -> dict[str, Any]:
    """Validated fine-tuning settings (``train`` keys; unknown keys are a ConfigError naming them)."""
    return train_settings({} if train is None else train, where)


def check_model(model: Any, where: str) -> str:
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}: 'model' is required (a hub name, a local folder or a .gguf file)")
    return model
