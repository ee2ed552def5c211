"""Load a causal LM and its tokenizer: hub name, local folder, or a ``.gguf`` file.

The model class is resolved by transformers (``AutoModelForCausalLM``); remote code is never run unless
``trust_remote_code=True`` is passed explicitly. Loaded models are cached per process, so several signals
(or several batches) that use the same model share one copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, MissingDependencyError

DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANTIZATIONS = (None, "8bit", "4bit")


@dataclass
class LoadedModel:
    model: Any                 # transformers PreTrainedModel, eval mode
    tokenizer: Any             # a fast tokenizer (offsets are needed for span masks)
    device: str
    name: str
    n_params: int
    max_positions: int | None  # the model's context size, when its config states one
    fast_head: bool = True     # logits == lm_head(last hidden state): score only the positions needed
    extra: dict[str, Any] = field(default_factory=dict)


_CACHE: dict[tuple, LoadedModel] = {}


def require_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(e.name or "torch", "model", "model-based scoring") from None
    return torch


def resolve_source(model: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``path/to/x.gguf`` -> (folder, file name); anything else is passed to transformers as is."""
    if not model:
        raise ConfigError("a model-based signal needs a 'model' (hub name, local folder or .gguf file)")
    if model.lower().endswith(".gguf"):
        if not os.path.isfile(model):
            raise ConfigError(f"GGUF file not found: {model}")
        return os.path.dirname(os.path.abspath(model)), os.path.basename(model)
    if gguf_file and os.path.isdir(model) and not os.path.isfile(os.path.join(model, gguf_file)):
        raise ConfigError(f"GGUF file {gguf_file!r} not found in {model}")
    return model, gguf_file


def pick_device(device: str = "auto") -> str:
    torch = require_torch()
    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto``: bfloat16 on GPUs that support it, else float16 on GPU; float32 on CPU."""
    torch = require_torch()
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def load_model(model: str, *, gguf_file: str | None = None, device: str = "auto", dtype: str = "auto",
               quantization: str | None = None, trust_remote_code: bool = False,
               revision: str | None = None) -> LoadedModel:
    torch = require_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf = resolve_source(model, gguf_file)
    dev = pick_device(device)
    key = (source, gguf, dev, dtype, quantization, trust_remote_code, revision)
    if key in _CACHE:
        return _CACHE[key]
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization {quantization!r} is not one of None, '8bit', '4bit'")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
    if gguf:
        kwargs["gguf_file"] = gguf
    tok_kwargs = dict(kwargs)
    kwargs["dtype"] = pick_dtype(dtype, dev)
    if quantization:
        if not dev.startswith("cuda"):
            raise ConfigError(f"quantization={quantization!r} needs a CUDA GPU (bitsandbytes)")
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise MissingDependencyError("bitsandbytes", None, f"{quantization} quantised loading") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=quantization == "8bit",
                                                           load_in_4bit=quantization == "4bit")
        kwargs["device_map"] = {"": dev}
    try:
        tok = AutoTokenizer.from_pretrained(source, **tok_kwargs)
        lm = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load model {model!r}: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"model {model!r}: siftkit needs a fast tokenizer (character offsets for span "
                          "masks); this one is a slow (Python) tokenizer")
    if not quantization:
        lm = lm.to(dev)
    lm.eval()
    cfg = lm.config
    max_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    n_params = sum(p.numel() for p in lm.parameters())
    loaded = LoadedModel(lm, tok, dev, model, int(n_params), int(max_pos) if max_pos else None)
    loaded.fast_head = _probe_fast_head(loaded, torch)
    _CACHE[key] = loaded
    return loaded


def _probe_fast_head(lm: LoadedModel, torch: Any) -> bool:
    """True when the model's logits are exactly ``lm_head(last_hidden_state)`` (no soft-capping or scaling).

    Then scoring applies the head only at the scored positions instead of over the whole (B, L, V) tensor.
    Checked once per model on a short input rather than assumed from the architecture.
    """
    head = lm.model.get_output_embeddings()
    base = getattr(lm.model, "base_model", None)
    if head is None or base is None or base is lm.model:
        return False
    ids = torch.arange(3, 11, device=lm.device).unsqueeze(0) % lm.model.config.vocab_size
    with torch.inference_mode():
        full = lm.model(input_ids=ids).logits.float()
        via = head(base(input_ids=ids).last_hidden_state).float()
    return bool(full.shape == via.shape and torch.allclose(full, via, rtol=1e-4, atol=1e-4))


def load_tokenizer(model: str, *, gguf_file: str | None = None, trust_remote_code: bool = False,
                   revision: str | None = None) -> LoadedModel:
    """Tokenizer only (``model`` is None): for backends that run the network elsewhere (vLLM)."""
    require_torch()
    from transformers import AutoTokenizer

    source, gguf = resolve_source(model, gguf_file)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the tokenizer of {model!r}: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"model {model!r}: siftkit needs a fast tokenizer (character offsets)")
    return LoadedModel(None, tok, "cuda", model, 0, None, fast_head=False)


def clear_cache() -> None:
    _CACHE.clear()
