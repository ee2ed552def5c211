"""Resume: SIGKILL a scoring run mid-way, rerun the same command: completed shards are not recomputed and
the result is identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from scoring_tiny import SAMPLES, build_tiny_lm, pool_table
from siftkit.signals.compute import build_signal
from siftkit.signals.store import SignalStore

N, SHARD = 60, 4

CHILD = textwrap.dedent("""
    import json, os, sys, time
    import pyarrow.parquet as pq
    from siftkit.signals.compute import compute_signals
    if os.environ.get("SLOW_SHARDS"):          # slow the run down so the parent can kill it mid-way
        import siftkit.engines.local as loc
        real = loc.compute_shard
        def slow(sig, shard, *args, **kwargs):
            out = real(sig, shard, *args, **kwargs)
            time.sleep(0.4)
            return out
        loc.compute_shard = slow
    pool_path, cache, model, out = sys.argv[1:5]
    stats = {}
    res = compute_signals(pq.read_table(pool_path), [{"name": "lm_loss", "model": model}], cache,
                          shard_size=__SHARD_SIZE__, stats=stats)
    pq.write_table(res, out)
    with open(out + ".json", "w") as fh:
        json.dump(stats, fh)
""").replace("__SHARD_SIZE__", str(SHARD))


def run_child(tmp, cache, model, out, slow=False):
    env = dict(os.environ, SLOW_SHARDS="1" if slow else "")
    return subprocess.Popen([sys.executable, "-c", CHILD, str(tmp / "pool.parquet"), str(cache), model, str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_then_resume(tmp_path):
    model = str(build_tiny_lm(tmp_path / "tiny"))
    convs = [[dict(m, content=f"{m['content']} ({i})") for m in SAMPLES[i % len(SAMPLES)]] for i in range(N)]
    pq.write_table(pool_table(convs, ids=[f"rec{i:03d}" for i in range(N)]), tmp_path / "pool.parquet")
    cache = tmp_path / "cache"
    store = SignalStore(str(cache))
    sig = build_signal({"name": "lm_loss", "model": model})

    proc = run_child(tmp_path, cache, model, tmp_path / "killed.parquet", slow=True)
    deadline = time.time() + 120
    while len(store.parts(sig)) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no shard finished in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "killed.parquet").exists()
    done = {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in store.parts(sig)}
    assert 3 <= len(done) < N // SHARD

    resumed = run_child(tmp_path, cache, model, tmp_path / "resumed.parquet")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    stats = json.loads((tmp_path / "resumed.parquet.json").read_text())["lm_loss"]
    assert stats["computed"] == N - SHARD * len(done) and stats["cached"] == SHARD * len(done)
    for p, st in done.items():                       # completed shards untouched
        assert (os.stat(p).st_ino, os.stat(p).st_mtime_ns) == st

    clean = run_child(tmp_path, tmp_path / "clean_cache", model, tmp_path / "clean.parquet")
    assert clean.wait(timeout=300) == 0, clean.stderr.read().decode()[-2000:]
    a, b = pq.read_table(tmp_path / "resumed.parquet"), pq.read_table(tmp_path / "clean.parquet")
    assert a.num_rows == N and a.equals(b)
    assert a.column("lm_loss").null_count == 0
