"""Progress under the Ray engine comes per batch from the workers (``engines.ray.WorkerProgress``: a counter
actor the workers report to, polled by the driver), inside a shard and inside a reading task; it only grows,
never passes the done records' counts and ends exactly at them, a retried shard counted once."""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from scoring_tiny import SAMPLES, pool_table
from siftkit import progress
from siftkit.signals.base import Signal
from siftkit.signals.compute import compute_signals

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import this test module


@pytest.fixture(scope="module")
def local_ray(local_ray):
    """conftest's local Ray instance with its progress counter up (as after a run's first long call: a run
    makes it once a call has run ``COUNTER_AFTER_S``, then it takes a worker process's start, ~1-2 s here)."""
    from siftkit.engines.ray import _progress_counter

    ray.get(_progress_counter(ray).snapshot.remote(), timeout=60)
    yield


class _Slow(Signal):
    """A cheap CPU signal whose batches take a while: the number of turns, ``delay`` seconds per batch."""

    name = "test_ray_progress_slow"
    batch_size = 20

    def __init__(self, delay: float = 0.05, batch: int = 20):
        self.delay = delay
        self.batch_size = batch

    def config(self):
        return {"delay": self.delay, "batch": self.batch_size}

    def columns(self):
        import pyarrow as pa

        return {"slow_turns": pa.int64()}

    def compute(self, batch):
        time.sleep(self.delay)
        return {"slow_turns": np.asarray([len(m) for m in batch.column("messages").to_pylist()], dtype=np.int64)}


def _pool(n: int):
    convs = [SAMPLES[i % len(SAMPLES)] for i in range(n)]
    return pool_table(convs, ids=[f"id{i:05d}" for i in range(n)])


def _events(capsys) -> list[dict]:
    return [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]


def _progress_of(ev: list[dict], stage: str) -> list[int]:
    return [e["done"] for e in ev if e["event"] == "stage_progress" and e["stage"] == stage]


@pytest.fixture
def json_log():
    progress.configure(verbose=True, log_format="json", interval=0.0)
    yield
    progress.configure()


def test_progress_inside_one_large_shard(local_ray, tmp_path, capsys, json_log):
    """One shard of 1,000 rows, batches of 25 at 0.05 s: the signal's stage moves while the shard runs
    (several progress events before its done record), only grows and ends at the exact total."""
    pool = _pool(1000)
    sig = _Slow(delay=0.05, batch=25)                              # 40 batches: ~2 s
    out = compute_signals(pool, [sig], str(tmp_path / "c"), engine="ray", shard_size=1000)
    ev = _events(capsys)
    stage = f"signal:{sig.name}"
    assert out.column("slow_turns").to_pylist() == [len(m) for m in pool.column("messages").to_pylist()]
    done_at = next(i for i, e in enumerate(ev) if e["event"] == "debug" and e.get("stage") == stage
                   and e.get("shard") == 0)
    before = _progress_of(ev[:done_at], stage)
    assert len([d for d in before if d < 1000]) >= 2, before        # inside the shard, not only at its end
    assert before == sorted(set(before)) and before[-1] == 1000      # monotonic, reconciled with the record
    assert _progress_of(ev, stage) == before                        # nothing after the done record
    ends = {e["stage"]: e for e in ev if e["event"] == "stage_end"}
    assert ends[stage]["records"] == 1000 and ends["signals:ray"]["records"] == 1000
    overall = _progress_of(ev, "signals:ray")
    assert overall == sorted(set(overall)) and overall[-1] == 1000


def test_progress_inside_one_reading_task(local_ray, tmp_path, capsys, json_log):
    """One reading task (a gzipped JSON Lines file is never split) of 45,000 records of 8 exchanges (~2 s
    to read), a slow signal computed while reading: the ``read`` stage (items) and the signal's stage move
    inside the task, only grow and end exactly at the records read."""
    import gzip

    from siftkit.engines.ray import ray_task_reader
    from siftkit.io.pool import read_pool

    n = 45_000
    src = tmp_path / "pool" / "a.jsonl.gz"
    src.parent.mkdir()
    turns = [[{"role": r, "content": f"{r[0]}{k}"} for k in range(8) for r in ("user", "assistant")]]
    with gzip.open(src, "wt", compresslevel=1) as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"r{i}", "messages": turns[0]}) + "\n")
    sig = _Slow(delay=0.05, batch=2250)                           # 20 batches: ~1 s after the reading
    reader = ray_task_reader(str(tmp_path / "c"), signals=[sig])
    got = read_pool(str(src), run_tasks=reader)
    ev = _events(capsys)
    assert len(got) == n and [r["rows"] for r in reader.scored] == [n]
    ends = {e["stage"]: e for e in ev if e["event"] == "stage_end"}
    for stage in ("read", f"signal:{sig.name}"):
        seen = _progress_of(ev, stage)
        assert len([d for d in seen if d < n]) >= 2, (stage, seen)
        assert seen == sorted(set(seen)) and seen[-1] == n, (stage, seen)
    assert ends["read"]["done"] == n and ends["read"]["records"] == n
    assert ends[f"signal:{sig.name}"]["records"] == n and ends[f"signal:{sig.name}"]["while_reading"] is True


def test_retried_shard_is_not_counted_twice(local_ray, tmp_path, capsys, json_log):
    """The actor running the only shard is killed half-way (a lost node): the shard is retried on a new
    actor; its stage never goes back, never passes the total and ends exactly at it."""
    from siftkit.engines import ray as ray_engine

    ray_engine.release_actors(ray)
    pool = _pool(600)
    sig = _Slow()                                                  # 30 batches of 0.05 s: ~1.5 s a try

    killed: list = []

    def kill_soon() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if any(e.get("stage") == f"signal:{sig.name}" and e["event"] == "stage_progress"
                   for e in _seen):
                break
        for a in ray_engine._POOL.get("actors", []):
            killed.append(a._actor_id)
            ray.kill(a)

    _seen: list[dict] = []
    real_event = progress.event

    def spy(name, **fields):
        _seen.append({"event": name, **fields})
        real_event(name, **fields)

    progress.event = spy
    killer = threading.Thread(target=kill_soon, daemon=True)
    killer.start()
    try:
        out = compute_signals(pool, [sig], str(tmp_path / "c"), engine="ray", shard_size=600)
    finally:
        progress.event = real_event
        killer.join()
    ev = _events(capsys)
    stage = f"signal:{sig.name}"
    seen = _progress_of(ev, stage)
    assert seen and seen[0] < 600 and seen == sorted(set(seen)) and seen[-1] == 600, seen
    assert {e["stage"]: e for e in ev if e["event"] == "stage_end"}[stage]["records"] == 600
    assert out.column("slow_turns").to_pylist() == [len(m) for m in pool.column("messages").to_pylist()]
    assert killed and not {a._actor_id for a in ray_engine._POOL["actors"]} & set(killed)   # it was retried


def test_counter_made_only_for_a_long_call(local_ray):
    """No counter actor for calls shorter than ``COUNTER_AFTER_S`` (a run of short shards pays nothing);
    once a call has run that long, a poll makes it under the name its workers were given."""
    from siftkit.engines import ray as engine

    old = dict(engine._COUNTER)
    engine._COUNTER.clear()                                     # as in a fresh Ray session
    try:
        wp = engine.WorkerProgress(ray, lambda ch, n: None)
        name, _ = wp.start(wp.key("p", 0, 0), {"fp": 10})
        wp.poll()
        assert wp.counter is None and engine._COUNTER["actor"] is None
        with pytest.raises(ValueError):
            ray.get_actor(name)
        wp.t0[wp.key("p", 0, 0)] -= engine.COUNTER_AFTER_S      # the call has now run that long
        wp.poll()
        assert wp.counter is not None and ray.get(ray.get_actor(name).snapshot.remote(), timeout=60) == {}
        ray.kill(wp.counter)
    finally:
        engine._COUNTER.clear()
        engine._COUNTER.update(old)


def test_worker_progress_reconciles_with_the_done_records(local_ray):
    """``WorkerProgress`` against the real counter actor: reports are capped at the call's rows, a failed
    try's reports are dropped, a report after the done record is ignored; the sum is the records' exactly."""
    from siftkit.engines.ray import WorkerProgress

    got: dict[str, int] = {}
    wp = WorkerProgress(ray, lambda ch, n: got.__setitem__(ch, got.get(ch, 0) + n))

    def settle() -> None:                  # a snapshot asked at one poll is read at a later one
        wp.last = 0.0
        wp.poll()
        if wp.asked is not None:
            ray.wait([wp.asked], timeout=10)
        wp.poll()

    a0, b0 = wp.key("p", 0, 0), wp.key("p", 1, 0)
    name, _ = wp.start(a0, {"fp": 100})
    wp.start(b0, {"fp": 50})
    counter = ray.get_actor(name)                      # the session's counter, as a worker finds it
    ray.get([counter.report.remote(a0, {"fp": 70}), counter.report.remote(b0, {"fp": 500})])  # b0 over its cap
    settle()
    assert got == {"fp": 70 + 50}
    wp.drop(a0)                                        # shard 0's actor died: retried as attempt 1
    a1 = wp.key("p", 0, 1)
    wp.start(a1, {"fp": 100})
    ray.get(counter.report.remote(a1, {"fp": 30}))
    settle()
    assert got == {"fp": 120}                           # shown never goes back (30 + 50 < 120)
    wp.finish(b0, {"fp": 50})
    ray.get(counter.report.remote(b0, {"fp": 40}))      # late: after its done record
    settle()
    assert got == {"fp": 120}
    assert b0 not in ray.get(counter.snapshot.remote())  # the stale report was forgotten
    wp.finish(a1, {"fp": 100})
    assert got == {"fp": 150} and not wp.live
