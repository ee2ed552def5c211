"""``less_grads``: a vector signal, the LESS gradient feature of every record for one warm-up checkpoint.

Per record: the per-sample gradient of the LoRA weights (loss = mean NLL over the trained tokens, the bench
fine-tuning mask), turned into the Adam update direction with the checkpoint's moments (``adam=True``, the
training pool) or left as is (``adam=False``, SGD, the target examples), projected to ``dim`` dimensions
with the seeded Rademacher projection and L2-normalised; stored as float16 like every vector signal (cached
by record id and a fingerprint of the model, checkpoint, projection and template; resumable by shard).
Records with no trained token (no assistant turn, or truncated before it) get a row of NaN.
"""

from __future__ import annotations

import copy
import os
from typing import Any, ClassVar

import numpy as np
import orjson
import pyarrow as pa

from ..errors import ConfigError
from ..registry import register_signal
from ..signals.base import Signal

# Per process: one LoRA model per (base model, LoRA config), one projector per (dim, seed, device).
_LORA_MODELS: dict[tuple, dict[str, Any]] = {}
_PROJECTORS: dict[tuple, Any] = {}


@register_signal("less_grads")
class LessGrads(Signal):
    kind: ClassVar[str] = "vector"
    version: ClassVar[str] = "1"
    batch_size: ClassVar[int] = 256
    parallel: ClassVar[bool] = False        # torch uses every core (or the GPU) itself
    shard_size: ClassVar[int | None] = 1024
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers", "peft")
    requires_for: ClassVar[str] = "LESS gradients"

    def __init__(self, model: str, checkpoint: str, *, adam: bool = True, dim: int = 8192, proj_seed: int = 0,
                 projection: str = "pcg64",
                 template: str = "auto", max_length: int = 2048, token_budget: int = 4096, max_batch: int = 16,
                 proj_memory: int | None = None, gguf_file: str | None = None, device: str = "auto", dtype: str = "auto"):
        meta_path = os.path.join(checkpoint, "meta.json")
        if not os.path.isfile(meta_path):
            raise ConfigError(f"less_grads: {checkpoint} is not a LESS warm-up checkpoint (no meta.json)")
        with open(meta_path, "rb") as fh:
            self.meta = orjson.loads(fh.read())
        if int(dim) < 1 or int(max_length) < 2 or int(token_budget) < 1 or int(max_batch) < 1:
            raise ConfigError("less_grads: dim, max_length, token_budget and max_batch must be positive")
        from .projection import KINDS

        if projection not in KINDS:
            raise ConfigError(f"less_grads: projection must be one of {', '.join(KINDS)}, got {projection!r}")
        self.model, self.checkpoint, self.adam, self.projection = model, checkpoint, bool(adam), projection
        self.dim, self.proj_seed, self.template = int(dim), int(proj_seed), template
        self.max_length, self.token_budget, self.max_batch = int(max_length), int(token_budget), int(max_batch)
        # bytes of (samples x P) float32 gradients buffered per projection (None: 1 GiB on a CPU, a quarter of
        # the free memory on a GPU, where large LoRA configurations need big buffers to amortise the projection)
        self.proj_memory = None if proj_memory is None else int(proj_memory)
        self.gguf_file, self.device, self.dtype = gguf_file, device, dtype
        self._state: Any = None

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "gguf_file": self.gguf_file, "checkpoint": self.meta["fingerprint"],
                "adam": self.adam, "dim": self.dim, "proj_seed": self.proj_seed, "template": self.template,
                "max_length": self.max_length, "dtype": self.dtype,
                **({"projection": self.projection} if self.projection != "pcg64" else {})}

    def columns(self) -> dict[str, pa.DataType]:
        return {self.name: pa.float16()}

    def __getstate__(self) -> dict[str, Any]:      # workers load their own model
        return {**self.__dict__, "_state": None}

    def setup(self) -> None:
        if self._state is not None:
            return
        from ..scoring.model import load_model
        from ..scoring.templates import resolve
        from .projection import RademacherProjector

        lm = load_model(self.model, gguf_file=self.gguf_file, device=self.device, dtype=self.dtype)
        tok = lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        pkey = (self.dim, self.proj_seed, str(lm.device), self.projection)
        if pkey not in _PROJECTORS:
            _PROJECTORS[pkey] = RademacherProjector(self.dim, self.proj_seed, device=lm.device, kind=self.projection)
        self._state = {"lm": lm, "tok": tok, "template": resolve(self.template, tok), "device": lm.device,
                       "fast_head": lm.fast_head, "pad": int(pad), "proj": _PROJECTORS[pkey]}
        self._activate()

    def _activate(self) -> None:
        """Load this checkpoint's LoRA weights (and Adam moments) into the process's shared LoRA model.

        One LoRA copy of the base model per process, whatever the number of checkpoints and signals: the
        checkpoints differ only in their LoRA weights, which are swapped in when another checkpoint computes.
        """
        import torch
        from peft import LoraConfig, get_peft_model
        from safetensors.torch import load_file

        from ..training.train import drop_gguf_quantizer
        from .grads import AdamState

        st, lora = self._state, self.meta["lora"]
        lm = st["lm"]
        key = (self.model, self.gguf_file, str(lm.device), self.dtype, orjson.dumps(lora, option=orjson.OPT_SORT_KEYS))
        slot = _LORA_MODELS.get(key)
        if slot is None:
            cfg = LoraConfig(r=int(lora["r"]), lora_alpha=int(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                             target_modules=lora["targets"], task_type="CAUSAL_LM")
            model = get_peft_model(drop_gguf_quantizer(copy.deepcopy(lm.model)), cfg).eval()
            slot = _LORA_MODELS[key] = {"model": model, "weights": None, "moments": None, "adam": None}
        model = slot["model"]
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if slot["weights"] != self.checkpoint:
            weights = load_file(os.path.join(self.checkpoint, "weights.safetensors"))
            if set(params) != set(weights):
                missing, extra = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
                raise ConfigError(f"less_grads: checkpoint {self.checkpoint} does not match the LoRA model built "
                                  f"from {self.model} (missing {missing[:3]}, unexpected {extra[:3]})")
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(weights[n].to(p.dtype))
            slot["weights"] = self.checkpoint
        if self.adam and slot["moments"] != self.checkpoint:
            mom = load_file(os.path.join(self.checkpoint, "adam.safetensors"), device=str(lm.device))
            slot["adam"] = AdamState({n: mom[f"{n}.exp_avg"] for n in params},
                                     {n: mom[f"{n}.exp_avg_sq"] for n in params},
                                     tuple(self.meta.get("betas", (0.9, 0.999))), float(self.meta.get("eps", 1e-8)))
            slot["moments"] = self.checkpoint
        st["model"] = model
        st["adam"] = slot["adam"] if self.adam else None

    def encode(self, conversations: list[list[dict[str, str]]]) -> np.ndarray:
        """(n, dim) float32 features; NaN rows for records with nothing to train on."""
        import torch

        from ..scoring.batching import plan_batches
        from ..training.train import build_examples
        from .grads import flat_directions, project_normalise

        self.setup()
        self._activate()
        st = self._state
        out = np.full((len(conversations), self.dim), np.nan, dtype=np.float32)
        ex = build_examples(conversations, st["tok"], st["template"], self.max_length)
        if not ex.rows:
            return out
        kept = np.asarray(ex.kept, dtype=np.int64)
        lengths = np.asarray([len(r["input_ids"]) for r in ex.rows], dtype=np.int64)
        # Per-sample gradients are buffered and projected together: each block of R is expanded once per
        # buffer instead of once per forward batch (the expansion, not the product, dominates on a CPU).
        n_params = sum(p.numel() for p in st["model"].parameters() if p.requires_grad)
        per_proj = max(1, self._proj_memory() // (4 * n_params))
        buf: list[Any] = []
        idx: list[np.ndarray] = []

        def flush() -> None:
            if buf:
                out[np.concatenate(idx)] = project_normalise(torch.cat(buf), st["proj"])
                buf.clear()
                idx.clear()

        for b in plan_batches(lengths, self.token_budget, self.max_batch):
            buf.append(flat_directions(st["model"], [ex.rows[i] for i in b], st["pad"], st["device"], st["adam"],
                                       st["fast_head"]))
            idx.append(kept[b])
            if sum(len(x) for x in idx) >= per_proj:
                flush()
        flush()
        return out

    def _proj_memory(self) -> int:
        if self.proj_memory is not None:
            return self.proj_memory
        dev = str(self._state["device"])
        if dev.startswith("cuda"):
            import torch

            return int(torch.cuda.mem_get_info(torch.device(dev))[0] // 4)
        return 1 << 30

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        from ..scoring.base import conversations

        convs, _ = conversations(batch)
        return {self.name: self.encode(convs).astype(np.float16)}
