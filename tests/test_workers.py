"""Worker processes die with their parent: SIGKILL of a `siftkit ... --workers 2` leaves no child behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, convo, write_jsonl
from siftkit.workers import parent_death_signal, process_pool

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def _square(x: int) -> int:
    return x * x


@linux_only
def test_pool_workers_get_sigkill_when_the_parent_dies():
    with process_pool(2) as ex:
        assert ex.submit(parent_death_signal).result() == signal.SIGKILL
        assert list(ex.map(_square, range(5))) == [0, 1, 4, 9, 16]


@linux_only
def test_sigkill_of_the_cli_leaves_no_worker(tmp_path):
    psutil = pytest.importorskip("psutil")
    pool = tmp_path / "pool"
    filler = "lorem ipsum dolor sit amet " * 40
    for f in range(8):                   # ~8 x 4 MB: the two readers are busy for a few seconds
        write_jsonl(pool / f"part{f}.jsonl",
                    [convo(f"file {f} question {i}: {filler}", f"answer {i}: {filler}") for i in range(1800)])
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "siftkit.cli", "-q", "select", str(pool), "--budget", "10",
                             "--workers", "2", "--out", str(tmp_path / "out"), "--cache-dir",
                             str(tmp_path / "c")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent = psutil.Process(proc.pid)
    children: list = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            workers = [c for c in parent.children(recursive=True) if c.is_running()]
        except psutil.NoSuchProcess:
            break
        if len(workers) >= 2:
            children = parent.children(recursive=True)
            break
        time.sleep(0.01)
    if not children:
        proc.kill()
        pytest.fail(f"the CLI never had 2 worker processes (exit {proc.poll()}): "
                    f"{proc.stderr.read().decode(errors='replace')[-500:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=15)
    for p in alive:                      # never leave them behind, even when the test fails
        p.kill()
    assert not alive, f"{len(alive)} of {len(children)} worker(s) outlived the killed parent"
