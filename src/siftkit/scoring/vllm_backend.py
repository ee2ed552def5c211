"""GPU fast path: per-token NLL of prompt tokens from vLLM's prompt log-probs.

Used by ``lm_loss(backend="vllm")`` when vLLM is installed and a CUDA GPU is present. Sequences are built
exactly as in the transformers path (same template, same truncation, same token ids), then vLLM returns the
log-probability of every prompt token; the span classes turn them into the same sums and counts.
vLLM only exposes top-k log-probs, so the entropy column is NaN on this path.

UNTESTED in siftkit's CI (no GPU there): ``tests/test_scoring_vllm.py`` compares it with the transformers
path (tolerance 2e-3 relative on losses, float32 both sides) and runs only where vLLM and a GPU exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingDependencyError
from .model import resolve_source
from .nll import SpanStats

TOLERANCE = 2e-3   # relative, vLLM vs transformers losses (different kernels and reduction orders)


@dataclass
class VLLMModel:
    llm: Any
    name: str


_CACHE: dict[tuple, VLLMModel] = {}


def available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def load_vllm(model: str, *, gguf_file: str | None = None, dtype: str = "auto", max_length: int = 2048,
              trust_remote_code: bool = False, revision: str | None = None) -> VLLMModel:
    try:
        from vllm import LLM
    except ImportError:
        raise MissingDependencyError("vllm", None, "the vLLM scoring backend") from None
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("backend='vllm' needs a CUDA GPU; use backend='transformers'")
    src, gguf = resolve_source(model, gguf_file)
    key = (src, gguf, dtype, max_length, trust_remote_code, revision)
    if key not in _CACHE:
        path = f"{src}/{gguf}" if gguf else src
        llm = LLM(model=path, tokenizer=src if gguf else None, dtype=dtype, max_model_len=max_length,
                  trust_remote_code=trust_remote_code, revision=revision, enable_prefix_caching=False)
        _CACHE[key] = VLLMModel(llm, model)
    return _CACHE[key]


def score_vllm(vm: VLLMModel, ids: Sequence[np.ndarray], classes: Sequence[np.ndarray], n_classes: int) -> SpanStats:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    n = len(ids)
    st = SpanStats(np.zeros((n, n_classes)), np.full((n, n_classes), np.nan), np.zeros((n, n_classes), np.int64),
                   np.zeros((n, n_classes), np.int64), None)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
    outs = vm.llm.generate([TokensPrompt(prompt_token_ids=[int(t) for t in x]) for x in ids], params,
                           use_tqdm=False)
    for i, (x, cls, out) in enumerate(zip(ids, classes, outs)):
        lps = out.prompt_logprobs
        for t in np.flatnonzero(cls[1:] >= 0) + 1:
            entry = lps[t][int(x[t])]
            k = int(cls[t])
            st.nll[i, k] -= entry.logprob
            st.count[i, k] += 1
            st.top1[i, k] += int(entry.rank == 1)
    return st
