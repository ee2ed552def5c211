"""The Ray engine (local Ray instance on CPU) gives results identical to the local engine."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from scoring_tiny import SAMPLES, pool_table
from siftkit.engines.ray import _to_arrow, _to_numpy
from siftkit.signals.compute import compute_signals
from siftkit.signals.store import SignalStore


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    if started:
        ray.shutdown()


def big_pool(n: int) -> pa.Table:
    convs = [SAMPLES[i % len(SAMPLES)] for i in range(n)]
    convs = [[dict(m, content=f"{m['content']} #{i}") if m["role"] == "user" else m for m in c]
             for i, c in enumerate(convs)]
    return pool_table(convs, ids=[f"id{i:04d}" for i in range(n)])


def test_roundtrip_helpers():
    vec = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(_to_numpy(pa.chunked_array([_to_arrow(vec)])), vec)
    s = np.asarray(["", "too_long", "", "x"], dtype=object)
    assert list(_to_numpy(pa.chunked_array([_to_arrow(s)]))) == list(s)


def test_cheap_signal_identical(local_ray, tmp_path):
    pool = big_pool(300)
    spec = ["text_stats"]
    a = compute_signals(pool, spec, str(tmp_path / "local"), shard_size=64)
    b = compute_signals(pool, spec, str(tmp_path / "ray"), shard_size=64, engine="ray")
    assert a.num_rows == 300 and a.equals(b)


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
