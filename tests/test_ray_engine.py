"""The Ray engine (local Ray instance on CPU) gives results identical to the local engine: one plan per run,
the workers write the cache, settings are validated, and cluster problems are clean errors (exit 6)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from scoring_tiny import SAMPLES, pool_table
from siftkit.engines.ray import (
    RaySettings,
    auto_shard_size,
    gpus_for,
    parse_ray_settings,
    plan_passes,
    run_plan,
)
from siftkit.errors import ConfigError
from siftkit.signals.compute import build_signal, compute_signals
from siftkit.signals.store import SignalStore

CHEAP = ["text_stats", "exact_hash", "compression", "quality", "special_tokens", "repetition"]


def big_pool(n: int) -> pa.Table:
    convs = [SAMPLES[i % len(SAMPLES)] for i in range(n)]
    convs = [[dict(m, content=f"{m['content']} #{i}") if m["role"] == "user" else m for m in c]
             for i, c in enumerate(convs)]
    return pool_table(convs, ids=[f"id{i:04d}" for i in range(n)])


def test_cheap_signal_identical(local_ray, tmp_path):
    pool = big_pool(300)
    spec = ["text_stats"]
    a = compute_signals(pool, spec, str(tmp_path / "local"), shard_size=64)
    b = compute_signals(pool, spec, str(tmp_path / "ray"), shard_size=64, engine="ray")
    assert a.num_rows == 300 and a.equals(b)


def test_plan_one_pass_workers_write_the_cache(local_ray, tmp_path):
    """Every cheap signal in one pass; the parts are written by the workers (the driver only gets done
    records), one part per shard and signal; values equal the local engine's."""
    pool = big_pool(300)
    sigs = [build_signal(s) for s in CHEAP]
    todo = [(s, np.arange(300)) for s in sigs]
    passes = plan_passes(todo, pool, RaySettings(), {"CPU": 2.0}, shard_size=64)
    assert len(passes) == 1 and [s.name for s in passes[0].signals] == CHEAP
    assert len(passes[0].shards) == 5 and passes[0].actors == 2
    cache = str(tmp_path / "ray")
    done = run_plan(todo, pool, cache, shard_size=64)
    assert all(set(d) == {"shard", "signal", "fingerprint", "rows", "seconds"} for d in done)
    assert len(done) == 5 * len(sigs)
    for s in sigs:
        assert sum(d["rows"] for d in done if d["fingerprint"] == s.fingerprint()) == 300
        assert len(SignalStore(cache).parts(s)) == 5
    a = compute_signals(pool, CHEAP, str(tmp_path / "local"), shard_size=64)
    stats: dict = {}
    b = compute_signals(pool, CHEAP, cache, engine="ray", stats=stats)   # all from the cache
    assert a.equals(b) and all(v["computed"] == 0 for v in stats.values())


def test_plan_mixed_missing_rows_and_resume(local_ray, tmp_path):
    """Signals that lack different rows share shards (each computes only its own rows); a lost part is
    recomputed alone (resume by shard), and the table equals the local engine's."""
    pool = big_pool(260)
    cache = str(tmp_path / "ray")
    one = RaySettings(actors=1)
    compute_signals(pool.slice(0, 100), ["text_stats"], cache, engine="ray", shard_size=50, ray=one)
    compute_signals(pool.slice(60, 120), ["exact_hash"], cache, engine="ray", shard_size=50, ray=one)
    stats: dict = {}
    b = compute_signals(pool, ["text_stats", "exact_hash", "quality"], cache, engine="ray", stats=stats,
                        shard_size=64)
    assert {k: v["computed"] for k, v in stats.items()} == {"text_stats": 160, "exact_hash": 140, "quality": 260}
    a = compute_signals(pool, ["text_stats", "exact_hash", "quality"], str(tmp_path / "local"))
    assert a.equals(b)
    q = build_signal("quality")
    parts = SignalStore(cache).parts(q)
    assert len(parts) == 5                               # 260 rows in shards of 64
    import os

    os.remove(parts[2])                                  # a killed run that lost one shard
    stats = {}
    c = compute_signals(pool, ["text_stats", "exact_hash", "quality"], cache, engine="ray", stats=stats, ray=one)
    assert {k: v["computed"] for k, v in stats.items()} == {"text_stats": 0, "exact_hash": 0, "quality": 64}
    assert c.equals(a)


def test_auto_shard_size():
    assert auto_shard_size(1_000_000, 16) == 15_625      # 4 shards per actor
    assert auto_shard_size(200_000, 2) == 25_000
    assert auto_shard_size(3_000, 8) == 1_024            # a call and a part cost a few ms: not smaller
    assert auto_shard_size(100_000_000, 4) == 65_536     # bounded memory per call


def test_gpu_request_from_declared_resources():
    lm = build_signal({"name": "lm_loss", "model": "/nonexistent"})          # device auto: never probed
    assert gpus_for(lm, RaySettings()) == 0.0
    assert gpus_for(lm, parse_ray_settings({"gpus_per_actor": 0.5})) == 0.5
    assert gpus_for(build_signal({"name": "lm_loss", "model": "/x", "device": "cuda"}), RaySettings()) == 1.0
    emb = build_signal({"name": "embedding", "backend": "static"})
    assert gpus_for(emb, parse_ray_settings({"gpus_per_actor": {"embedding": 0.25}})) == 0.25
    assert gpus_for(build_signal("text_stats"), parse_ray_settings({"gpus_per_actor": 1})) == 0.0
    pool = big_pool(10)
    passes = plan_passes([(build_signal("text_stats"), np.arange(10)), (lm, np.arange(10))], pool,
                         parse_ray_settings({"gpus_per_actor": 0.5, "actors": {"lm_loss": 3}}),
                         {"CPU": 4.0, "GPU": 1.0})
    assert [(p.label, p.gpus, p.actors) for p in passes] == [("text_stats", 0.0, 1), ("lm_loss", 0.5, 1)]
    assert len(passes[1].shards) == 1                    # lm_loss keeps its own shard size (2,048)
    with pytest.raises(ConfigError, match="asks for 2 GPU"):
        plan_passes([(lm, np.arange(10))], pool, parse_ray_settings({"gpus_per_actor": 2}), {"CPU": 4.0})


@pytest.mark.parametrize("ray_section, message", [
    ({"adress": "x:1"}, r"ray: unknown key\(s\) \['adress'\]"),
    ({"actors": 0}, "ray.actors: expected a positive integer"),
    ({"actors": {"tokens": 1.5}}, "ray.actors.tokens: expected a positive integer"),
    ({"gpus_per_actor": {"lm_loss": -1}}, r"ray.gpus_per_actor.lm_loss: expected a number >= 0"),
    ({"cpus_per_actor": "two"}, "ray.cpus_per_actor: expected a number"),
    ({"runtime_env": ["pip"]}, "ray.runtime_env: expected a mapping"),
    ({"address": ""}, "ray.address"),
    ({"connect_timeout_s": 0}, "ray.connect_timeout_s: expected a positive number"),
    ("ray://x", "ray: expected a mapping"),
])
def test_ray_section_errors_name_the_key(ray_section, message):
    from siftkit.config import build_config

    with pytest.raises(ConfigError, match=f"recipe.yaml: {message}"):
        build_config({"inputs": ["x.jsonl"], "engine": "ray", "ray": ray_section}, "recipe.yaml")


def test_ray_section_parsed_and_secrets_kept_out_of_the_manifest_config():
    from siftkit.config import build_config

    cfg = build_config({"inputs": ["x.jsonl"], "engine": "ray", "shard_size": 4096,
                        "ray": {"address": "ray://head:10001", "actors": {"default": 4, "lm_loss": 2},
                                "gpus_per_actor": {"lm_loss": 0.5}, "cpus_per_actor": 2,
                                "runtime_env": {"env_vars": {"HF_TOKEN": "hf_secret"}}}}, "r.yaml")
    assert cfg.shard_size == 4096 and cfg.ray.address == "ray://head:10001"
    assert cfg.ray.pick("actors", "lm_loss") == 2 and cfg.ray.pick("actors", "tokens") == 4
    assert cfg.ray.pick("gpus_per_actor", "tokens") is None and cfg.ray.pick("cpus_per_actor", "x") == 2
    assert cfg.ray.runtime_env == {"env_vars": {"HF_TOKEN": "hf_secret"}}     # given to Ray
    assert "hf_secret" not in repr(cfg.raw)                                    # not written anywhere
    with pytest.raises(ConfigError, match="shard_size must be a positive integer"):
        build_config({"inputs": ["x.jsonl"], "shard_size": 0}, "r.yaml")


@pytest.mark.slow
def test_model_signal_identical_and_cached(local_ray, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scoring_tiny import build_tiny_lm

    folder = build_tiny_lm(tmp_path / "tiny")
    pool = big_pool(40)
    spec = {"name": "lm_loss", "model": str(folder)}
    a = compute_signals(pool, [spec], str(tmp_path / "local"), shard_size=7)
    stats: dict = {}
    b = compute_signals(pool, [spec], str(tmp_path / "ray"), shard_size=7, engine="ray", stats=stats)
    assert stats["lm_loss"]["computed"] == 40
    assert a.equals(b)                                  # bit-identical, not just close
    assert np.isfinite(b.column("lm_ifd").to_numpy()).all()
    from siftkit.signals.compute import build_signal

    assert len(SignalStore(str(tmp_path / "ray")).parts(build_signal(spec))) == 6   # one part per shard
    stats = {}
    c = compute_signals(pool, [spec], str(tmp_path / "ray"), shard_size=7, engine="ray", stats=stats)
    assert stats["lm_loss"]["computed"] == 0 and c.equals(b)


def test_vector_signal_identical(local_ray, tmp_path):
    pytest.importorskip("static_model", reason="tokenlearn-static-model provides the static embeddings")
    from siftkit.signals.vectors import load_or_compute_vectors

    pool = big_pool(200)
    spec = {"name": "embedding", "backend": "static", "segment": "query"}
    a = load_or_compute_vectors(pool, spec, str(tmp_path / "local"), shard_size=64)
    b = load_or_compute_vectors(pool, spec, str(tmp_path / "ray"), shard_size=64, engine="ray")
    assert a.shape[0] == 200 and a.shape[1] > 0
    assert np.array_equal(np.asarray(a), np.asarray(b))
    from siftkit.signals.vectors import VectorLoader

    rows = np.arange(5, 200, 3)                          # a selector's candidates: the plan takes pool rows
    pool2 = big_pool(230)
    c = VectorLoader(pool2, str(tmp_path / "ray"), engine="ray")(spec, rows=rows)
    d = VectorLoader(pool2, str(tmp_path / "local2"))(spec, rows=rows)
    assert c.shape[0] == len(rows) and np.array_equal(np.asarray(c), np.asarray(d))


LOOPBACK_PROBE = """
import json, sys, psutil
from siftkit.engines.ray import init_ray
ray = init_ray()
me = psutil.Process()
seen = set()
for p in [me] + me.children(recursive=True):
    try:
        for c in p.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                seen.add(c.laddr.ip)
    except psutil.Error:
        pass
print(json.dumps({"node": ray.util.get_node_ip_address(), "listen": sorted(seen)}))
ray.shutdown()
"""


def test_local_instance_listens_on_loopback_only(tmp_path):
    """The Ray instance siftkit starts itself (no RAY_ADDRESS) is reachable from this machine only."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("psutil")
    from conftest import REPO

    drop = ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(REPO / "src")
    r = subprocess.run([sys.executable, "-c", LOOPBACK_PROBE], capture_output=True, text=True, env=env,
                       check=False, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["node"] == "127.0.0.1"
    assert got["listen"], "no listening sockets found"
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in got["listen"]), got["listen"]


def _siftkit(args: list[str], cwd, extra_env: dict | None = None):
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"PYTHONPATH": str(REPO / "src"), "HOME": str(cwd)}, **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "siftkit.cli", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=120, cwd=cwd)


def _one_record(tmp_path):
    from conftest import convo, write_jsonl

    return str(write_jsonl(tmp_path / "a.jsonl", [convo("hi", "hello")]))


def test_unreachable_cluster_is_a_clean_error(tmp_path):
    """A closed port: exit 6 with the address in a second or two, not minutes of Ray retries."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                            # nothing listens there now
    r = _siftkit(["score", _one_record(tmp_path), "--signals", "text_stats", "--engine", "ray",
                  "--ray-address", f"127.0.0.1:{port}", "--cache-dir", str(tmp_path / "c")], tmp_path)
    assert r.returncode == 6, r.stderr[-2000:]
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
    recipe = tmp_path / "r.yaml"                         # a recipe's ray.address, overridden by --ray-address
    recipe.write_text("inputs: [a.jsonl]\nengine: ray\nray: {address: 127.0.0.1:1, actors: 2}\n"
                      "steps: [{select: random}]\nbudget: 1\ncache_dir: c\n")
    r = _siftkit(["run", str(recipe), "--ray-address", f"127.0.0.1:{port}", "--shard-size", "1024", "-o",
                  str(tmp_path / "o")], tmp_path)
    assert r.returncode == 6 and f"at 127.0.0.1:{port}:" in r.stderr, r.stderr[-2000:]


def test_missing_auth_token_is_a_clean_error(tmp_path):
    """Token authentication on and no token (Ray's AuthenticationError): exit 6, and how to give one."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _siftkit(["score", _one_record(tmp_path), "--signals", "text_stats", "--engine", "ray",
                      "--ray-address", f"127.0.0.1:{port}", "--cache-dir", str(tmp_path / "c")], tmp_path,
                     {"RAY_AUTH_MODE": "token"})
    assert r.returncode == 6, r.stderr[-2000:]
    assert "refused the credentials" in r.stderr and "RAY_AUTH_TOKEN" in r.stderr
    assert "Traceback" not in r.stderr


def test_selection_outputs_byte_identical_to_local(local_ray, tmp_path):
    """select with --engine ray writes the same selected.jsonl and selection.parquet as --engine local."""
    from conftest import convo, write_jsonl
    from siftkit.cli import main

    rows = [convo(f"question {i % 37} about item {i}", f"answer {'x' * (i % 11)} {i % 5}") for i in range(240)]
    rows += rows[:20]                                    # exact duplicates for the dedup step
    write_jsonl(tmp_path / "pool" / "a.jsonl", rows[:130])
    write_jsonl(tmp_path / "pool" / "b" / "c.jsonl", rows[130:] + [convo("no answer", "")])
    with open(tmp_path / "pool" / "a.jsonl", "a") as fh:
        fh.write('{"messages": [{"role": "user", "content": "broken\n')       # a malformed line: rejected
    outs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"out-{engine}"
        rc = main(["--quiet", "select", str(tmp_path / "pool"), "--on-error", "skip", "-n", "50", "--method", "top", "--by",
                   "tokens_response", "--dedup", "first", "--filter", "tokens_total >= 5", "--engine", engine,
                   "--cache-dir", str(tmp_path / f"cache-{engine}"), "-o", str(out),
                   *(["--shard-size", "64"] if engine == "ray" else [])])
        assert rc == 0
        outs[engine] = out
    names = sorted(str(p.relative_to(outs["local"])) for p in outs["local"].rglob("*") if p.is_file())
    assert "selected.jsonl" in names and "_siftkit/selection.parquet" in names
    for name in ("selected.jsonl", "_siftkit/selection.parquet", "_siftkit/rejects.jsonl", "README.md"):
        assert (outs["local"] / name).read_bytes() == (outs["ray"] / name).read_bytes(), name
    import json

    ml, mr = (json.loads((outs[e] / "manifest.json").read_text()) for e in ("local", "ray"))
    assert ml["counts"] == mr["counts"] and ml["counts"]["duplicates"] == 20
    assert ml["counts"]["rejected"] == 2 and ml["inputs"] == mr["inputs"]
    # the files were read on the workers: one Arrow file per file task in the shared cache
    assert len(list((tmp_path / "cache-ray" / "_pool").glob("*.arrow"))) == 2


def test_bad_record_read_on_a_worker_names_file_and_line(local_ray, tmp_path, capsys):
    from conftest import convo, write_jsonl
    from siftkit.cli import main

    write_jsonl(tmp_path / "pool" / "a.jsonl", [convo("q", "a"), convo("q2", "a2")])
    with open(tmp_path / "pool" / "a.jsonl", "a") as fh:
        fh.write('{"messages": oops}\n')
    rc = main(["--quiet", "select", str(tmp_path / "pool"), "-n", "1", "--engine", "ray",
               "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 3 and "a.jsonl:3" in err, err


def test_actors_reused_across_passes(local_ray, tmp_path):
    """A second pass with the same resources reuses the first pass's actors (no new worker processes);
    reading on the workers releases them (they hold the CPUs its tasks need)."""
    from siftkit.engines import ray as ray_engine

    pool = big_pool(200)
    cache = str(tmp_path / "ray")
    compute_signals(pool, ["text_stats"], cache, engine="ray", shard_size=64)
    first = [a._actor_id for a in ray_engine._POOL["actors"]]
    assert len(first) == 2
    b = compute_signals(pool, ["exact_hash"], cache, engine="ray", shard_size=64)
    assert [a._actor_id for a in ray_engine._POOL["actors"]] == first
    assert b.equals(compute_signals(pool, ["exact_hash"], str(tmp_path / "local")))
    ray_engine.release_actors(ray)
    assert ray_engine._POOL["actors"] == []


def test_progress_per_signal_and_shard(local_ray, tmp_path, capsys):
    """Under Ray each signal is its own progress stage (rows done as its shards come back), plus one debug
    event per shard, as the local engine reports it."""
    import json

    from siftkit import progress

    pool = big_pool(200)
    progress.configure(verbose=True, log_format="json", interval=0.0)
    try:
        compute_signals(pool, ["text_stats", "exact_hash"], str(tmp_path / "c"), engine="ray", shard_size=64)
    finally:
        progress.configure()
    ev = [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]
    ends = {e["stage"]: e for e in ev if e["event"] == "stage_end"}
    assert ends["signal:text_stats"]["records"] == 200 and ends["signal:exact_hash"]["records"] == 200
    assert ends["signal:text_stats"]["engine"] == "ray" and ends["signals:ray"]["records"] == 400
    shards = [e for e in ev if e["event"] == "debug" and "shard" in e and e.get("stage") == "signal:text_stats"]
    assert sorted(e["shard"] for e in shards) == [0, 1, 2, 3] and shards[-1]["done"] == 200
    prog = [e for e in ev if e["event"] == "stage_progress" and e["stage"] == "signal:exact_hash"]
    done = [e["done"] for e in prog]     # a line per shard back (any order), more if a shard reports inside
    assert len(done) >= 4 and done == sorted(set(done)) and done[-1] == 200


def test_llm_usage_summed_from_workers(local_ray, server, tmp_path):
    """An LLM signal's usage (requests, tokens) is counted in the workers, sent back with each shard's done
    record and summed on the driver: the manifest's usage equals a local run's."""
    from scoring_tiny import msgs
    from test_llm import FAST

    pool = pool_table([msgs(("user", "What is 2+2?"), ("assistant", "4")),
                       msgs(("user", "Name a fruit."), ("assistant", "Apple")),
                       msgs(("user", "Say hi."), ("assistant", "Hi!"))])
    spec = {"name": "judge", "endpoint": server.url, **FAST}
    local: dict = {}
    on_ray: dict = {}
    a = compute_signals(pool, [spec], str(tmp_path / "local"), stats=local)
    b = compute_signals(pool, [spec], str(tmp_path / "ray"), engine="ray", stats=on_ray, shard_size=2)
    ul, ur = local["judge"]["usage"], on_ray["judge"]["usage"]
    assert ur["requests"] == ul["requests"] >= 3 and ur["responses"] == ul["responses"]
    assert ur["prompt_tokens"] == ul["prompt_tokens"] > 0 and ur["completion_tokens"] > 0
    assert ur["cached_responses"]["responses"] == ur["responses"]
    assert a.column("judge_reason").to_pylist() == b.column("judge_reason").to_pylist()


def _two_file_pool(tmp_path):
    from conftest import convo, write_jsonl

    rows = [convo(f"question {i % 41} on thing {i}", f"answer {'z' * (i % 13)} {i % 7}") for i in range(260)]
    write_jsonl(tmp_path / "pool" / "a.jsonl", rows[:150])
    write_jsonl(tmp_path / "pool" / "b.jsonl", rows[150:])
    return str(tmp_path / "pool")


def test_cheap_signals_computed_while_reading(local_ray, tmp_path):
    """With the Ray engine the reading tasks compute the run's cheap signals on the records they have just
    read: one cache part per file and signal (not per plan shard), counted as computed by this run, values
    equal to the local engine's; a rerun reads them from the cache and writes no part."""
    import siftkit

    pool = _two_file_pool(tmp_path)
    opts = {"method": "top", "by": "tokens_response", "filters": ["tokens_total >= 5"], "dedup": "first"}
    local = siftkit.select(pool, 40, cache_dir=str(tmp_path / "cl"), **opts)
    cache = str(tmp_path / "cr")
    sel = siftkit.select(pool, 40, cache_dir=cache, engine="ray", shard_size=64, **opts)
    assert sel.ids == local.ids
    assert sel.cache_hits() == local.cache_hits() and all(v == {"computed": 260, "cached": 0}
                                                      for v in sel.cache_hits().values())
    for name in sel.signal_stats:
        sig = build_signal(name if name != "tokens" else {"name": "tokens"})
        assert len(SignalStore(cache).parts(sig)) == 2, name      # one per file: written by the reading tasks
    assert sel.signals.equals(local.signals)
    again = siftkit.select(pool, 40, cache_dir=cache, engine="ray", shard_size=64, **opts)
    assert again.ids == local.ids and all(v["computed"] == 0 for v in again.cache_hits().values())
    assert all(len(SignalStore(cache).parts(build_signal(n))) == 2 for n in again.signal_stats if n != "tokens")


def test_signal_with_cached_parts_left_to_the_plan(local_ray, tmp_path):
    """A signal whose cache already holds parts (another run, a pool that grew) is not computed while
    reading: the plan computes exactly the ids it lacks, and the values equal the local engine's."""
    from siftkit.engines.ray import RaySettings, read_signals
    from siftkit.io.pool import read_pool

    pool = _two_file_pool(tmp_path)
    table = read_pool(pool).table
    cache = str(tmp_path / "c")
    compute_signals(table.slice(0, 100), ["exact_hash"], cache)          # 100 of 260 cached, one part
    sigs = [build_signal(s) for s in ("exact_hash", "text_stats", {"name": "embedding", "backend": "static"})]
    assert sigs[2].kind == "vector" and sigs[2].parallel        # cheap, but a matrix: the vector plan's
    assert [s.name for s in read_signals(sigs, cache, RaySettings())] == ["text_stats"]
    import siftkit

    stats = siftkit.score(pool, ["exact_hash", "text_stats"], cache_dir=cache, engine="ray", shard_size=64)
    assert stats.equals(compute_signals(table, ["exact_hash", "text_stats"], str(tmp_path / "local")))
    assert len(SignalStore(cache).parts(build_signal("exact_hash"))) == 1 + 3   # the first + 160 rows in 64s
    assert len(SignalStore(cache).parts(build_signal("text_stats"))) == 2       # while reading, per file


def test_rerun_reuses_the_workers_reading(local_ray, tmp_path, capsys):
    """A rerun over the same files with the same read options maps the pool files the first run wrote
    (no reading task runs): same pool, rejects and file infos; a changed file is read again."""
    import json
    import os

    from siftkit import progress
    from siftkit.engines.ray import ray_task_reader
    from siftkit.io.pool import read_pool

    pool = _two_file_pool(tmp_path)
    with open(os.path.join(pool, "a.jsonl"), "a") as fh:
        fh.write('{"messages": oops}\n')                                   # a reject, kept with the reading
    cache = str(tmp_path / "c")
    first = read_pool(pool, on_error="skip", run_tasks=ray_task_reader(cache))
    progress.configure(verbose=True, log_format="json", interval=0.0)
    try:
        capsys.readouterr()
        second = read_pool(pool, on_error="skip", run_tasks=ray_task_reader(cache))
        ev = [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]
        assert any(e.get("reused") == 2 for e in ev)
        assert second.table.equals(first.table) and second.rejects == first.rejects
        assert [f.__dict__ for f in second.files] == [f.__dict__ for f in first.files]
        assert second.spill == first.spill and second.counts() == first.counts()
        with open(os.path.join(pool, "b.jsonl"), "a") as fh:          # b changes: read again, a reused
            fh.write(json.dumps({"messages": [{"role": "user", "content": "new q"},
                                              {"role": "assistant", "content": "new a"}]}) + "\n")
        third = read_pool(pool, on_error="skip", run_tasks=ray_task_reader(cache))
        ev = [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]
    finally:
        progress.configure()
    assert any(e.get("reused") == 1 for e in ev)
    assert len(third) == len(first) + 1 and third.table.slice(0, 150).equals(first.table.slice(0, 150))
    assert third.table.equals(read_pool(pool, on_error="skip").table)


def test_jsonl_ranges_numbered_by_the_workers(local_ray, tmp_path, monkeypatch):
    """A JSON Lines file cut into ranges for the reading tasks: the workers count each range's newlines
    (the driver reads no more than a line at each cut) and the pool equals the local read, ids included."""
    from conftest import convo, write_jsonl
    from siftkit.engines.ray import ray_task_reader
    from siftkit.io import pool as pool_mod
    from siftkit.io.pool import read_pool

    f = write_jsonl(tmp_path / "big.jsonl", [convo(f"q{i} " + "v" * (i % 29), f"a{i}") for i in range(1200)])
    whole = read_pool(str(f))
    monkeypatch.setattr(pool_mod, "JSONL_CHUNK_BYTES", 16_000)   # the driver cuts; the workers count and read
    reader = ray_task_reader(str(tmp_path / "c"))
    counted: list = []
    count = reader.count_lines
    monkeypatch.setattr(reader, "count_lines", lambda jobs: counted.append(len(jobs)) or count(jobs))
    got = read_pool(str(f), run_tasks=reader)
    assert counted and counted[0] >= 4
    assert got.table.equals(whole.table)
    assert len(got.spill) == counted[0] + 1
