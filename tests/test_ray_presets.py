"""``engine: ray`` writes the same bytes as ``engine: local`` across presets and selectors.

A representative, cheap subset of siftkit's presets and selectors (exact dedup + stratified by length,
cleaning, ZIP, k-means, k-center, facility location, repr filter, MinHash + SemDeDup, an IFD preset with a
tiny causal LM) runs on one synthetic pool with the local engine and with the Ray engine (one local Ray
instance, 2 CPUs, shards of 64 records so every signal spans several shards); ``selected.jsonl`` and
``_siftkit/selection.parquet`` must be byte-identical, and a rerun on the Ray engine's cache, or on the local
engine's cache, must compute nothing and give the same bytes. The whole matrix on a real 3,000-record
pool is ``benchmarks/bench_ray_parity.py`` (docs/scale.md, "What was checked")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from conftest import convo, write_jsonl
from siftkit import api

OUTPUTS = ("selected.jsonl", "_siftkit/selection.parquet")
EMB = {"backend": "static"}

CASES: dict[str, dict[str, Any]] = {
    "preset:longest-per-source": {"preset": "longest-per-source"},
    "preset:clean": {"preset": "clean"},
    "preset:zip": {"preset": {"name": "zip", "k1": 60, "k2": 20, "k3": 5}},
    "preset:length-kmeans": {"preset": {"name": "length-kmeans", "k": 8}},
    "select:k-center": {"steps": [{"select": "k-center", "embedding": EMB}]},
    "select:facility-location": {"steps": [{"select": "facility-location", "embedding": EMB}]},
    "select:repr-filter": {"steps": [{"select": "repr-filter", "by": "tokens_total", "embedding": EMB}]},
    "step:semdedup+minhash": {"steps": [{"dedup": "minhash", "threshold": 0.7},
                                        {"step": "semdedup", "eps": 0.1, "k": 6, "embedding": EMB},
                                        {"select": "random"}]},
}


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> str:
    """Two sources in two formats, lengths and vocabularies that vary, exact and near duplicates."""
    root = tmp_path_factory.mktemp("ray_presets") / "pool"
    topics = ["rivers", "prime numbers", "bread", "chess", "volcanoes", "tax forms", "poetry", "rust code"]
    rows = []
    for i in range(180):
        t = topics[i % len(topics)]
        words = " ".join(f"{t.split()[0]}{(i * j) % 23}" for j in range(3 + (i * 7) % 40))
        rows.append(convo(f"Explain {t}, case {i}, briefly." if i % 5 else f"Tell me about {t}.",
                          f"About {t}: {words}." + (" Sure thing." * (i % 3))))
    rows += rows[:12]                                                    # exact duplicates
    rows += [convo(r["messages"][0]["content"] + " Please.", r["messages"][1]["content"]) for r in rows[20:30]]
    write_jsonl(root / "chat" / "a.jsonl", rows[:110])
    write_jsonl(root / "chat" / "b.jsonl", rows[110:])
    with open(root / "tasks.json", "w") as fh:
        json.dump([{"instruction": f"Add {i} and {i * 3}.", "input": "",
                    "output": f"{i} + {i * 3} = {4 * i}" + " because addition" * (i % 4)} for i in range(40)], fh)
    return str(root)


def run(pool: str, frag: dict[str, Any], engine: str, cache: Path, out: Path,
        shard_size: int | None = 64) -> dict[str, Any]:
    """One run; with the Ray engine, shards of ``shard_size`` records (the local engine: its defaults)."""
    recipe = {"inputs": [pool], "budget": 30, "seed": 0, "engine": engine, "cache_dir": str(cache),
              "output": {"dir": str(out)}, **frag}
    if engine == "ray" and shard_size:
        recipe["shard_size"] = shard_size
    _, manifest = api.run(recipe)
    assert manifest is not None
    return manifest


def outputs(out: Path) -> list[bytes]:
    return [(out / f).read_bytes() for f in OUTPUTS]


def cache_parts(cache: Path) -> dict[str, tuple[int, int]]:
    """Every signal and vector file of a cache (not the Ray reader's ``_pool`` files) with size and mtime:
    a run that computes nothing leaves this unchanged (the manifest's ``cache`` counts scalar signals only)."""
    return {str(p.relative_to(cache)): (p.stat().st_size, p.stat().st_mtime_ns) for p in cache.rglob("*")
            if p.is_file() and p.relative_to(cache).parts[0] != "_pool"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ray_writes_the_local_engines_bytes(local_ray, pool, tmp_path, name):
    frag = CASES[name]
    run(pool, frag, "local", tmp_path / "c_local", tmp_path / "o_local")
    want = outputs(tmp_path / "o_local")
    assert want[0].count(b"\n") == 30 or name.startswith("step:")
    run(pool, frag, "ray", tmp_path / "c_ray", tmp_path / "o_ray")
    assert outputs(tmp_path / "o_ray") == want
    parts = cache_parts(tmp_path / "c_ray")
    assert parts                                                        # the workers wrote the cache
    m = run(pool, frag, "ray", tmp_path / "c_ray", tmp_path / "o_rerun")
    assert outputs(tmp_path / "o_rerun") == want
    assert all(v["computed"] == 0 for v in m["cache"].values()), m["cache"]
    assert cache_parts(tmp_path / "c_ray") == parts                     # nothing recomputed, vectors included


def test_ray_on_the_local_engines_cache(local_ray, pool, tmp_path):
    """A cache filled by the local engine (other shard sizes) serves the Ray engine: nothing is computed."""
    frag = CASES["preset:length-kmeans"]
    run(pool, frag, "local", tmp_path / "c", tmp_path / "o_local")
    shutil.copytree(tmp_path / "c", tmp_path / "c_copy")
    parts = cache_parts(tmp_path / "c_copy")
    m = run(pool, frag, "ray", tmp_path / "c_copy", tmp_path / "o_ray")
    assert outputs(tmp_path / "o_ray") == outputs(tmp_path / "o_local")
    assert m["cache"] and all(v["computed"] == 0 for v in m["cache"].values()), m["cache"]
    assert cache_parts(tmp_path / "c_copy") == parts


def test_ifd_preset_with_a_model(local_ray, pool, tmp_path_factory, tmp_path):
    """cherry-ifd with a tiny causal LM: the model pass runs on the Ray actors, same bytes as local. A
    model's float results depend on the batch a record is padded with, so both engines cut the signal's own
    shards (ModelSignal.shard_size; a --shard-size different from the local run's gives other batches)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scoring_tiny import build_tiny_lm

    lm = build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))
    frag = {"preset": {"name": "cherry-ifd", "model": str(lm), "lm_loss": {"max_length": 128}}}
    run(pool, frag, "local", tmp_path / "c_local", tmp_path / "o_local")
    run(pool, frag, "ray", tmp_path / "c_ray", tmp_path / "o_ray", shard_size=None)
    assert outputs(tmp_path / "o_ray") == outputs(tmp_path / "o_local")


@pytest.mark.parametrize("backend", ["sentence-transformers", "causal-lm"])
def test_torch_vectors_cut_the_same_shards_on_both_engines(backend):
    """A torch encoder's floats depend on the batch a text is padded with, and batches are cut within a
    shard: the torch embedding backends have their own shard size, so the Ray engine's plan cuts the local
    engine's shards (without it Ray cut about four shards per actor and the local engine one of up to 65,536,
    and MiniLM vectors differed in the last bits). Static embeddings are per text and need none."""
    import numpy as np
    import pyarrow as pa

    from siftkit.engines.ray import RaySettings, plan_passes
    from siftkit.signals.compute import SHARD_SIZE, build_signal, make_shards

    sig = build_signal({"name": "embedding", "backend": backend, **({"model": "m"} if backend == "causal-lm" else {})})
    pool = pa.table({"id": [f"r{i}" for i in range(5000)]})
    todo = np.arange(5000)
    local = [t.num_rows for t in make_shards(pool, todo, sig.shard_size or SHARD_SIZE)]
    (p,) = plan_passes([(sig, todo)], pool, RaySettings(), {"CPU": 2.0})
    assert p.sizes == local == [2048, 2048, 904]
    assert build_signal({"name": "embedding", "backend": "static"}).shard_size is None
