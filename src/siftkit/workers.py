"""The one way siftkit starts worker processes: a process pool whose workers die with their parent.

On Linux each worker asks the kernel for ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``)
and exits at once if the parent is already gone (it died between the fork and the prctl). So a killed
``siftkit`` (SIGKILL, OOM killer) never leaves workers behind, blocked on a result pipe nobody reads.
Elsewhere this is a plain process pool.

Results travel through the executor's pipe, which its manager thread drains as they arrive, so a worker
never blocks on a full pipe while the parent lives; big results should still be spilled to files (the
reader does: Arrow IPC files the parent memory-maps).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2


def mp_context() -> Any:
    """fork where available: no re-import of the user's __main__ (scripts without a main guard work)."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def die_with_parent(parent_pid: int) -> None:
    """Make this process get SIGKILL when its parent dies (Linux); exit now if the parent is gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def parent_death_signal() -> int:
    """This process's parent-death signal (0 when none or not Linux): lets tests check the setting."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    sig = ctypes.c_int(0)
    libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0)
    return int(sig.value)


def _init(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def process_pool(workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple = ()) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes that die with this process (use as a context
    manager). Every process pool in siftkit comes from here."""
    return ProcessPoolExecutor(max(1, int(workers)), mp_context=mp_context(), initializer=_init,
                               initargs=(os.getpid(), initializer, initargs))
