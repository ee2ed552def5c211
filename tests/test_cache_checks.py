"""The cache checks itself: a truncated or corrupted part (scalar or vector) is recomputed with a warning,
never a crash, and the results are identical to those of an intact cache."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

import siftkit
from conftest import convo, write_jsonl
from siftkit.signals.base import Signal
from siftkit.signals.compute import build_signal, compute_signals
from siftkit.signals.store import SignalStore, check_part
from siftkit.signals.vectors import VectorStore, load_or_compute_vectors, npy_problem

SIGNALS = ["text_stats", "exact_hash"]


@pytest.fixture
def pool(tmp_path) -> pa.Table:
    recs = [convo(f"question {i}: what is {i} squared?", f"{i} squared is {i * i}.") for i in range(120)]
    return siftkit.read(str(write_jsonl(tmp_path / "p.jsonl", recs))).table


def _damage(path: str, how: str) -> None:
    with open(path, "rb") as fh:
        data = fh.read()
    if how == "truncate":
        data = data[: len(data) // 2]
    else:                                   # flip bytes in the middle, same size
        mid = len(data) // 2
        data = data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 8]) + data[mid + 8:]
    with open(path, "wb") as fh:
        fh.write(data)


def test_part_names_carry_rows_and_checksum(pool, tmp_path):
    compute_signals(pool, SIGNALS, str(tmp_path / "c"), shard_size=50)
    parts = SignalStore(str(tmp_path / "c")).parts(build_signal("text_stats"))
    assert len(parts) == 3
    rows = sorted(int(os.path.basename(p).split("-n")[1].split("-")[0]) for p in parts)
    assert rows == [20, 50, 50]
    assert all(check_part(p)[1] == "" for p in parts)


@pytest.mark.parametrize("how", ["truncate", "corrupt"])
def test_damaged_part_is_recomputed_with_warning(pool, tmp_path, capsys, how):
    cache = str(tmp_path / "c")
    first = compute_signals(pool, SIGNALS, cache, shard_size=50)
    store = SignalStore(cache)
    sig = build_signal("text_stats")
    victim = store.parts(sig)[1]
    _damage(victim, how)
    capsys.readouterr()
    stats: dict = {}
    again = compute_signals(pool, SIGNALS, cache, shard_size=50, stats=stats)
    err = capsys.readouterr().err
    assert "is damaged" in err and os.path.basename(victim) in err and "recomputing" in err
    assert again.equals(first)
    assert stats["text_stats"]["computed"] in (20, 50) and stats["exact_hash"]["computed"] == 0
    assert all(check_part(p)[1] == "" for p in store.parts(sig)) and len(store.parts(sig)) == 3
    # a third run finds an intact cache
    stats = {}
    compute_signals(pool, SIGNALS, cache, shard_size=50, stats=stats)
    assert stats["text_stats"]["computed"] == 0 and "damaged" not in capsys.readouterr().err


def test_old_part_names_are_still_read(pool, tmp_path):
    cache = str(tmp_path / "c")
    first = compute_signals(pool, ["text_stats"], cache, shard_size=50)
    store = SignalStore(cache)
    sig = build_signal("text_stats")
    for p in store.parts(sig):              # rename to the layout before checksums: part-<key>.parquet
        os.rename(p, p.split("-n")[0] + ".parquet")
    stats: dict = {}
    assert compute_signals(pool, ["text_stats"], cache, shard_size=50, stats=stats).equals(first)
    assert stats["text_stats"]["computed"] == 0


class _Vec(Signal):
    """A deterministic vector signal: no model needed."""

    name, kind, version = "testvec", "vector", "1"

    def columns(self):
        return {"testvec": pa.float16()}

    def compute(self, batch):
        ids = batch.column("id").to_pylist()
        return {"testvec": np.asarray([[int(i[:4], 16) % 97, len(i), j % 7, 1.0] for j, i in enumerate(ids)],
                                      dtype=np.float32)}


@pytest.mark.parametrize("target", ["shard", "pool"])
def test_damaged_vector_cache_is_rebuilt(pool, tmp_path, capsys, target):
    cache = str(tmp_path / "c")
    sig = _Vec()
    first = np.array(load_or_compute_vectors(pool, sig, cache, shard_size=50))
    store = VectorStore(cache)
    if target == "shard":
        victim = store.shards(sig)[0] + ".npy"
        os.remove(store.pool_path(sig, pool.column("id").combine_chunks()) + ".npy")   # force re-assembly
    else:
        victim = store.pool_path(sig, pool.column("id").combine_chunks()) + ".npy"
    _damage(victim, "truncate")
    assert npy_problem(victim) != ""
    capsys.readouterr()
    again = np.array(load_or_compute_vectors(pool, sig, cache, shard_size=50))
    assert "is damaged" in capsys.readouterr().err
    assert np.array_equal(first, again)
    assert all(npy_problem(b + ".npy") == "" for b in store.shards(sig))


def test_corrupted_vector_shard_fails_its_checksum(pool, tmp_path, capsys):
    cache = str(tmp_path / "c")
    sig = _Vec()
    first = np.array(load_or_compute_vectors(pool, sig, cache, shard_size=50))
    store = VectorStore(cache)
    os.remove(store.pool_path(sig, pool.column("id").combine_chunks()) + ".npy")
    _damage(store.shards(sig)[1] + ".npy", "corrupt")
    capsys.readouterr()
    again = np.array(load_or_compute_vectors(pool, sig, cache, shard_size=50))
    assert "checksum mismatch" in capsys.readouterr().err
    assert np.array_equal(first, again)
