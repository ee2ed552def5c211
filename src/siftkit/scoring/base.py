"""Shared plumbing of model-based signals: parameters, lazy model loading, per-record conversations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ..signals.base import Signal, reason_counts  # noqa: F401  (re-exported)
from ..signals.segments import flatten
from .model import LoadedModel, load_model, resolve_source

# Reason codes (``<signal>_reason`` columns). An empty string means the record was scored.
OK = ""
NO_RESPONSE = "no_response"        # the conversation has no assistant turn
EMPTY_RESPONSE = "empty_response"  # the scored turn is empty or whitespace
EMPTY_PROMPT = "empty_prompt"      # nothing to rate (empty instruction)
TOO_LONG = "too_long"              # over max_length with truncation="error", or nothing left to score
TEMPLATE_ERROR = "template_error"  # the chat template rejected the conversation
TOKENIZER_ERROR = "tokenizer_error"


GPU_TOKEN_BUDGET = 8192
CPU_TOKEN_BUDGET = 512


class ModelSignal(Signal):
    """A scalar signal that runs a causal LM. Subclasses implement ``columns`` and ``compute``."""

    version = "1"
    batch_size = 512          # records per compute() call; forward batches are planned by token budget
    parallel = False          # torch uses every core (or the GPU) itself
    shard_size = 2048         # cache a part every 2,048 records: resume loses little model time
    requires, requires_for = ("torch", "transformers"), "model-based scoring"

    def requirements(self) -> dict[str, str]:
        out = super().requirements()
        if self.model.lower().endswith(".gguf") or self.gguf_file:
            out["gguf"] = "loading .gguf models"
        if self.quantization:
            out["bitsandbytes"] = f"{self.quantization} quantised loading"
        if getattr(self, "backend", None) == "vllm":
            out["vllm"] = "the vLLM scoring backend"
        return out

    def __init__(self, model: str, *, gguf_file: str | None = None, device: str = "auto", dtype: str = "auto",
                 quantization: str | None = None, trust_remote_code: bool = False,
                 revision: str | None = None, max_length: int = 2048, token_budget: int | None = None,
                 max_batch: int = 256):
        if not isinstance(model, str) or not model:
            raise ConfigError(f"{self.name}: 'model' must be a hub name, a local folder or a .gguf file")
        if max_length < 8:
            raise ConfigError(f"{self.name}: max_length must be at least 8, got {max_length}")
        if (token_budget is not None and token_budget < 1) or max_batch < 1:
            raise ConfigError(f"{self.name}: token_budget and max_batch must be positive")
        self.model, self.gguf_file = model, gguf_file
        self.device, self.dtype, self.quantization = device, dtype, quantization
        self.trust_remote_code, self.revision = bool(trust_remote_code), revision
        self.max_length, self.max_batch = int(max_length), int(max_batch)
        self.token_budget = None if token_budget is None else int(token_budget)
        self._lm: LoadedModel | None = None

    @property
    def resources(self) -> dict[str, float]:  # type: ignore[override]
        if self.device.startswith("cuda"):
            return {"gpus": 1}
        if self.device == "auto":
            try:
                import torch

                if torch.cuda.is_available():
                    return {"gpus": 1}
            except ImportError:
                pass
        return {"cpus": 1}

    def model_config(self) -> dict[str, Any]:
        src, gguf = resolve_source(self.model, self.gguf_file) if self.model.lower().endswith(".gguf") \
            else (self.model, self.gguf_file)
        return {"model": src, "gguf_file": gguf, "dtype": self.dtype, "quantization": self.quantization,
                "revision": self.revision, "max_length": self.max_length}

    def load(self, model: str | None = None) -> LoadedModel:
        return load_model(model or self.model, gguf_file=None if model else self.gguf_file, device=self.device,
                          dtype=self.dtype, quantization=self.quantization,
                          trust_remote_code=self.trust_remote_code, revision=self.revision)

    def setup(self) -> None:
        self._lm = self.load()

    @property
    def lm(self) -> LoadedModel:
        if self._lm is None:
            self.setup()
        assert self._lm is not None
        return self._lm

    def effective_token_budget(self, lm: LoadedModel) -> int:
        """Padded tokens per forward batch: ``token_budget`` when given, else a per-device default. On a GPU
        large batches pay (8192); on a CPU a forward pass is compute-bound already at batch size 1 and big
        padded batches only add memory traffic, so the default is small (see docs/scoring.md, measured)."""
        if self.token_budget is not None:
            return self.token_budget
        return GPU_TOKEN_BUDGET if str(lm.device).startswith("cuda") else CPU_TOKEN_BUDGET

    def context_length(self, lm: LoadedModel) -> int:
        return min(self.max_length, lm.max_positions) if lm.max_positions else self.max_length

    def __getstate__(self) -> dict[str, Any]:
        # never ship loaded models between processes (private attributes): setup() reloads them
        return {k: (None if k.startswith("_") else v) for k, v in self.__dict__.items()}


def conversations(batch: pa.Table) -> tuple[list[list[dict[str, str]]], np.ndarray]:
    """Per-record message lists and the index of each record's last assistant turn (-1 if none)."""
    fb = flatten(batch)
    convs: list[list[dict[str, str]]] = []
    last = np.full(fb.n, -1, dtype=np.int64)
    off = fb.offsets.tolist()
    for r in range(fb.n):
        s, e = off[r], off[r + 1]
        convs.append([{"role": fb.roles[j] or "user", "content": fb.contents[j] or ""} for j in range(s, e)])
        if fb.last_assistant[r] >= 0:
            last[r] = fb.last_assistant[r] - s
    return convs, last


def digit_ids(tokenizer: Any, digits: range) -> np.ndarray:
    """Token id of each rating digit, resolved from the tokenizer (never hard-coded).

    A digit must be a single vocabulary entry; otherwise the rating cannot be read from one next-token
    distribution and this fails loudly.
    """
    vocab = tokenizer.get_vocab()
    out = []
    for d in digits:
        tid = vocab.get(str(d))
        if tid is None:
            enc = tokenizer(str(d), add_special_tokens=False)["input_ids"]
            if len(enc) != 1 or enc[0] == tokenizer.unk_token_id:
                how = "the unknown token" if len(enc) == 1 else f"{len(enc)} tokens"
                raise ConfigError(f"the tokenizer has no single token for the digit {str(d)!r} (it encodes as "
                                  f"{how}); this model cannot be used as a rating scorer")
            tid = enc[0]
        out.append(int(tid))
    if len(set(out)) != len(out):
        raise ConfigError(f"rating digits map to repeated token ids {out}")
    return np.asarray(out, dtype=np.int64)


def reasons_array(reasons: list[str]) -> np.ndarray:
    return np.asarray(reasons, dtype=object)
