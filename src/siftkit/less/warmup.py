"""LESS warm-up: LoRA fine-tuning on a random fraction of the pool, one checkpoint per epoch.

Training is siftkit's bench fine-tuning (``siftkit.training``: TRL ``SFTTrainer``, assistant-only loss);
a callback snapshots, at the end of every epoch, the LoRA weights, the Adam moments of every LoRA weight and
the mean learning rate of that epoch's optimiser steps. A checkpoint folder holds::

    weights.safetensors   LoRA weights by parameter name
    adam.safetensors      <name>.exp_avg and <name>.exp_avg_sq
    meta.json             epoch, lr (mean over the epoch's steps), steps, betas, eps, lora config, fingerprint

Checkpoints live under ``<cache_dir>/less/<fingerprint>/epoch-<k>/``; the fingerprint covers the base model,
template, training settings, seed and the ids of the warm-up records, so a rerun with the same inputs reuses
them (no training), and any change trains afresh. Nothing is pickled: tensors are safetensors, the rest JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import xxhash

from .. import progress
from ..errors import ConfigError
from ..fs import local_folder
from ..signals.store import atomic_write

# LESS's published warm-up (Xia et al., 2024): LoRA r 128, alpha 512, dropout 0.1 on q/k/v/o, 4 epochs,
# lr 2e-5 with linear decay and 3% warm-up, effective batch 128.
LESS_TRAIN: dict[str, Any] = {
    "mode": "lora", "epochs": 4, "lr": 2e-5, "scheduler": "linear", "warmup": 0.03, "weight_decay": 0.0,
    "batch_size": 128, "micro_batch_size": 4, "max_length": 2048, "lora_r": 128, "lora_alpha": 512,
    "lora_dropout": 0.1, "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "save_model": False,
}


@dataclass
class Checkpoint:
    path: str
    epoch: int
    lr: float
    fingerprint: str
    meta: dict[str, Any]


def less_train_settings(train: dict[str, Any] | None) -> dict[str, Any]:
    """LESS defaults overridden by ``train`` and validated like a bench ``train:`` section."""
    from ..training.settings import train_settings

    settings = train_settings({**LESS_TRAIN, **(train or {})}, "less")
    if settings["mode"] != "lora":
        raise ConfigError("less: train.mode must be 'lora' (LESS computes gradients of the LoRA weights)")
    settings["save_model"] = False
    return settings


def warmup_fingerprint(model: str, gguf_file: str | None, template: str, settings: dict[str, Any], seed: int,
                       ids: list[str]) -> str:
    h = xxhash.xxh3_64()
    h.update(orjson.dumps({"model": model, "gguf_file": gguf_file, "template": template, "train": settings,
                           "seed": seed, "n": len(ids)}, option=orjson.OPT_SORT_KEYS))
    for i in ids:
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()


def load_checkpoints(folder: str) -> list[Checkpoint]:
    """The complete checkpoints of a warm-up folder, by epoch (``done.json`` marks a finished warm-up)."""
    done = os.path.join(folder, "done.json")
    if not os.path.isfile(done):
        raise ConfigError(f"{folder} is not a finished LESS warm-up (no done.json)")
    with open(done, "rb") as fh:
        epochs = orjson.loads(fh.read())["epochs"]
    out = []
    for e in epochs:
        path = os.path.join(folder, f"epoch-{e}")
        with open(os.path.join(path, "meta.json"), "rb") as fh:
            meta = orjson.loads(fh.read())
        out.append(Checkpoint(path, int(meta["epoch"]), float(meta["lr"]), meta["fingerprint"], meta))
    return out


class _Snapshot:
    """TrainerCallback (duck-typed base added at run time): per-epoch LoRA weights, Adam moments, mean lr."""

    def __init__(self, folder: str, fingerprint: str, lora: dict[str, Any]):
        self.folder, self.fingerprint, self.lora = folder, fingerprint, lora
        self.lrs: list[float] = []
        self.epochs: list[int] = []

    def on_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kw: Any) -> None:
        opt = getattr(optimizer, "optimizer", optimizer)
        self.lrs.append(float(opt.param_groups[0]["lr"]))     # the rate this step used (scheduler steps after)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                     **kw: Any) -> None:
        from safetensors.torch import save_file

        opt = getattr(optimizer, "optimizer", optimizer)
        epoch = len(self.epochs) + 1
        weights, moments = {}, {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            st = opt.state.get(p, {})
            if "exp_avg" not in st:
                raise RuntimeError(f"LESS warm-up: no Adam state for {name} at epoch {epoch} (no optimiser step "
                                   "in this epoch? use fewer records per batch or more warm-up records)")
            weights[name] = p.detach().float().cpu().contiguous()
            moments[f"{name}.exp_avg"] = st["exp_avg"].detach().float().cpu().contiguous()
            moments[f"{name}.exp_avg_sq"] = st["exp_avg_sq"].detach().float().cpu().contiguous()
        group = opt.param_groups[0]
        path = os.path.join(self.folder, f"epoch-{epoch}")
        os.makedirs(path, exist_ok=True)
        save_file(weights, os.path.join(path, "weights.safetensors"))
        save_file(moments, os.path.join(path, "adam.safetensors"))
        meta = {"epoch": epoch, "lr": float(np.mean(self.lrs)) if self.lrs else float(group["lr"]),
                "steps": len(self.lrs), "betas": [float(b) for b in group.get("betas", (0.9, 0.999))],
                "eps": 1e-8, "lora": self.lora, "fingerprint": f"{self.fingerprint}-e{epoch}",
                "params": sorted(weights)}
        atomic_write(os.path.join(path, "meta.json"), orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        self.epochs.append(epoch)
        self.lrs = []


def warmup(pool: pa.Table, rows: np.ndarray, *, model: str, cache_dir: str, seed: int = 0,
           template: str = "auto", train: dict[str, Any] | None = None, gguf_file: str | None = None,
           device: str = "auto", dtype: str = "auto") -> list[Checkpoint]:
    """Warm up LoRA on ``pool`` rows ``rows``; returns the per-epoch checkpoints (reused when cached)."""
    from transformers import TrainerCallback

    from ..training.base import BaseLM

    settings = less_train_settings(train)
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    ids = [str(i) for i in pool.column("id").take(pa.array(rows)).to_pylist()]
    fp = warmup_fingerprint(model, gguf_file, template, settings, seed, ids)
    folder = local_folder(cache_dir, "less", fp)
    if os.path.isfile(os.path.join(folder, "done.json")):
        progress.info(f"less: reusing warm-up checkpoints in {folder}")
        return load_checkpoints(folder)
    shutil.rmtree(folder, ignore_errors=True)          # an interrupted warm-up restarts from scratch
    os.makedirs(folder, exist_ok=True)
    base = BaseLM.load(model, template=template, device=device, dtype=dtype, gguf_file=gguf_file)
    convs = pool.column("messages").take(pa.array(rows)).to_pylist()
    lora = {"r": int(settings["lora_r"]), "alpha": int(settings["lora_alpha"]),
            "dropout": float(settings["lora_dropout"]), "targets": settings["lora_targets"]}
    snap = type("LessSnapshot", (_Snapshot, TrainerCallback), {})(folder, fp, lora)
    progress.info(f"less: warm-up on {len(convs):,} records, {settings['epochs']:g} epoch(s), LoRA r={lora['r']}")
    _, log = base.finetune(convs, settings, seed, callbacks=[snap])
    if not snap.epochs:
        raise RuntimeError("less: the warm-up finished without an epoch checkpoint")
    log = {k: v for k, v in log.items() if k not in ("history", "kept")}
    atomic_write(os.path.join(folder, "train_log.json"), json.dumps(log, indent=2, default=str).encode())
    atomic_write(os.path.join(folder, "done.json"),
                 orjson.dumps({"epochs": snap.epochs, "fingerprint": fp, "records": log["examples"],
                               "skipped": log["skipped"], "template": base.template}))
    return load_checkpoints(folder)
