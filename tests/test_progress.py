"""Progress and logs: the CLI in a subprocess with stderr piped (not a terminal), -q/-v anywhere, json events."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, convo, write_jsonl
from siftkit import progress
from siftkit.cli import build_parser
from siftkit.signals.base import Signal

SRC = str(REPO / "src")


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    return subprocess.run([sys.executable, "-m", "siftkit.cli", *args], capture_output=True, text=True,
                          env=e, timeout=300, check=False)


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    rows = [convo(f"question number {i} " + "word " * (i % 17), f"answer {i} " + "tok " * (i % 29))
            for i in range(300)]
    write_jsonl(tmp_path / "pool" / "chat" / "a.jsonl", rows)
    write_jsonl(tmp_path / "pool" / "more" / "b.jsonl", rows[:40] + [{"messages": []}])
    return tmp_path / "pool"


def select_args(pool_dir: Path, tmp_path: Path, out: str = "out") -> list[str]:
    return ["select", str(pool_dir), "--on-error", "skip", "--budget", "25", "--method", "top",
            "--by", "tokens_response", "--dedup", "first", "--out", str(tmp_path / out),
            "--cache-dir", str(tmp_path / "cache"), "--report"]


def test_piped_stderr_gets_one_line_per_stage(pool_dir, tmp_path):
    r = cli(*select_args(pool_dir, tmp_path))
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert "\r" not in err and "it/s" not in err                 # no tqdm bar when stderr is not a terminal
    lines = err.splitlines()
    for stage in ("read", "signal:tokens", "signal:exact_hash", "dedup:dedup", "select:top", "write", "report"):
        starts = [ln for ln in lines if re.search(rf"\] {re.escape(stage)}: start", ln)]
        ends = [ln for ln in lines if re.search(rf"\] {re.escape(stage)}: done: ", ln)]
        assert len(starts) == 1 and len(ends) == 1, (stage, err)
    read_end = next(ln for ln in lines if "] read: done: " in ln)
    # 340 records + 1 rejected = 341 items; records and rejects are named separately
    assert "341 items" in read_end and "records 340" in read_end and "rejected 1" in read_end
    tok_end = next(ln for ln in lines if "] signal:tokens: done: " in ln)
    assert re.search(r"340 rec in \d+\.\ds", tok_end) and "cached 0" in tok_end
    sel_end = next(ln for ln in lines if "] select:top: done: " in ln)
    assert "300 rec" in sel_end and "kept 25" in sel_end
    dd_end = next(ln for ln in lines if "] dedup:dedup: done: " in ln)
    assert "340 rec" in dd_end and "kept 300, dropped (exact_duplicate 40)" in dd_end
    assert not any(ln.startswith("debug:") for ln in lines)
    # a second run: every signal comes from the cache, so no signal stage lines at all (they show with -v)
    r2 = cli(*select_args(pool_dir, tmp_path, "out2"))
    assert r2.returncode == 0 and "signal:tokens" not in r2.stderr


def test_quiet_and_verbose_after_the_subcommand(pool_dir, tmp_path):
    q = cli(*select_args(pool_dir, tmp_path), "-q")
    assert q.returncode == 0 and q.stderr == "" and q.stdout == ""
    q2 = cli("read", str(pool_dir), "--on-error", "skip", "--quiet")
    assert q2.returncode == 0 and q2.stderr == ""
    v = cli(*select_args(pool_dir, tmp_path, "out2"), "-v")
    assert v.returncode == 0, v.stderr
    debug = [ln for ln in v.stderr.splitlines() if ln.startswith("debug: ")]
    assert any(re.search(r"signal:tokens: fingerprint [0-9a-f]{16}, 340 cached, 0 to compute", ln) for ln in debug)
    assert any(re.search(r"workers: 1 \(of \d+ cores\)", ln) for ln in debug)
    v2 = cli("-v", "list", "signals")                       # before the subcommand too
    assert v2.returncode == 0 and "debug: siftkit" in v2.stderr


def test_json_log_format_events(pool_dir, tmp_path):
    r = cli("--log-format", "json", *select_args(pool_dir, tmp_path))
    assert r.returncode == 0, r.stderr
    events = [json.loads(ln) for ln in r.stderr.splitlines()]    # every line is one JSON event
    assert events and all(isinstance(e, dict) and "event" in e and "t" in e for e in events)
    assert events[0]["event"] == "command_start" and events[-1] == {**events[-1], "event": "command_end",
                                                                    "exit_code": 0}
    ends = {e["stage"]: e for e in events if e["event"] == "stage_end"}
    starts = {e["stage"] for e in events if e["event"] == "stage_start"}
    assert {"read", "signal:tokens", "dedup:dedup", "select:top", "write", "report"} <= set(ends) and \
        {"read", "signal:tokens", "select:top"} <= starts
    assert ends["read"]["records"] == 340 and ends["read"]["rejected"] == 1 and ends["read"]["done"] == 341
    assert ends["signal:tokens"]["records"] == 340 and ends["signal:tokens"]["cached"] == 0
    assert all(isinstance(e["seconds"], float) and e["seconds"] >= 0 for e in ends.values())
    assert ends["select:top"]["kept"] == 25 and ends["write"]["records"] == 25
    assert ends["dedup:dedup"]["records"] == 340 and ends["dedup:dedup"]["kept"] == 300
    # cached signals still end with a json event (computed 0), after the subcommand as well
    r2 = cli(*select_args(pool_dir, tmp_path, "out2"), "--log-format", "json")
    ev2 = [json.loads(ln) for ln in r2.stderr.splitlines()]
    tok = [e for e in ev2 if e.get("stage") == "signal:tokens" and e["event"] == "stage_end"]
    assert tok and tok[0]["records"] == 0 and tok[0]["cached"] == 340


def test_json_errors_are_events(tmp_path):
    r = cli("read", str(tmp_path / "missing.jsonl"), "--log-format", "json")
    assert r.returncode in (2, 3)
    events = [json.loads(ln) for ln in r.stderr.splitlines()]
    err = [e for e in events if e["event"] == "error"]
    assert len(err) == 1 and err[0]["exit_code"] == r.returncode and "missing.jsonl" in err[0]["message"]


@pytest.mark.parametrize("cmd", ["read", "score", "inspect", "select", "run", "report", "list", "bench"])
def test_global_flags_parse_on_every_subcommand(cmd):
    p = build_parser()
    extra = {"read": ["x"], "score": ["x"], "inspect": ["x"], "select": ["x", "-n", "1", "-o", "o"],
             "run": ["r.yaml"], "report": ["o"], "list": [], "bench": ["b.yaml"]}[cmd]
    a = p.parse_args([cmd, *extra, "-q", "-v", "--log-format", "json"])
    assert a.quiet and a.verbose and a.log_format == "json"
    b = p.parse_args(["-q", "--log-format", "json", cmd, *extra])     # before: not reset by the subparser
    assert b.quiet and not b.verbose and b.log_format == "json"
    c = p.parse_args([cmd, *extra])
    assert not c.quiet and not c.verbose and c.log_format == "text"


def test_stage_lines_at_most_every_interval(capsys):
    progress.configure(interval=0.0)               # a progress line at every update
    try:
        with progress.stage("demo", total=10) as st:
            for _ in range(3):
                st.update(2)
            st.set(kept=4)
        err = capsys.readouterr().err.splitlines()
        assert re.search(r"demo: start, 10 rec$", err[0])
        assert [re.search(r"demo: (\d+)/10 rec \((\d+)%\)", ln).groups() for ln in err[1:4]] == \
            [("2", "20"), ("4", "40"), ("6", "60")]
        assert "ETA" in err[1] and re.search(r"demo: done: 6 rec in [\d.]+s.*, kept 4$", err[4])
        progress.configure(interval=3600.0)         # a long interval: only start and end
        with progress.stage("demo", total=10) as st:
            st.update(10)
        assert len(capsys.readouterr().err.splitlines()) == 2
        progress.configure(log_format="json", interval=0.0)
        with pytest.raises(RuntimeError), progress.stage("boom", total=5) as st:
            st.update(1)
            raise RuntimeError("x")
        ev = [json.loads(ln) for ln in capsys.readouterr().err.splitlines()]
        assert [e["event"] for e in ev] == ["stage_start", "stage_progress", "stage_end"]
        assert ev[1]["done"] == 1 and ev[1]["total"] == 5 and ev[2]["failed"] is True
    finally:
        progress.configure()


class _Lengths(Signal):
    """A tiny signal with small batches (not registered)."""

    name = "test_progress_lengths"
    batch_size = 64

    def columns(self):
        import pyarrow as pa

        return {"n_turns": pa.int64()}

    def compute(self, batch):
        import numpy as np

        return {"n_turns": np.asarray([len(m) for m in batch.column("messages").to_pylist()], dtype=np.int64)}


def test_signal_progress_moves_within_a_shard(tmp_path):
    """One shard of 300 records in batches of 64: progress comes per batch, in this process and from workers."""
    from siftkit.engines.local import compute_shard, run_shards
    from siftkit.io import read_pool

    write_jsonl(tmp_path / "a.jsonl", [convo(f"q {i}", f"a {i}") for i in range(300)])
    pool = read_pool(str(tmp_path / "a.jsonl")).table.select(["id", "messages"])
    seen: list[int] = []
    out = compute_shard(_Lengths(), pool, seen.append)
    assert seen == [64, 64, 64, 64, 44] and out["n_turns"].tolist() == [2] * 300
    shards = [pool.slice(0, 150), pool.slice(150)]
    got: dict[int, int] = {}
    ticks: list[int] = []
    run_shards(_Lengths(), shards, lambda i, v: got.__setitem__(i, len(v["n_turns"])), workers=2,
               on_progress=ticks.append)
    assert got == {0: 150, 1: 150} and sum(ticks) == 300
