"""File system helpers: atomic writes, disk-full errors, pre-allocation, leftovers of killed runs.

Every file siftkit writes goes through a temporary name and a rename, so a reader never sees half a file.
A write that runs out of space (``ENOSPC``/``EDQUOT``) raises :class:`~siftkit.errors.DiskFullError`
naming the path and the bytes needed (exit code 5), after removing its temporary file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import DiskFullError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Temporary files of a process: "<name>.tmp<pid>" (cache parts), "<name>.tmp" (inside staging folders).
_TMP_FILE = re.compile(r"\.tmp(?P<pid>\d*)$")


def is_no_space(exc: BaseException) -> bool:
    """An OSError (also pyarrow's, which may carry the errno only in its message) for a full disk."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in NO_SPACE:
        return True
    msg = str(exc)
    return "No space left on device" in msg or "Disk quota exceeded" in msg or "errno 28]" in msg


def free_bytes(path: str) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    p = os.path.abspath(path)
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def remove_path(path: str) -> None:
    """Remove a file or a folder tree; missing is fine."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


@contextlib.contextmanager
def disk_guard(path: str, needed: int | None = None, cleanup: Sequence[str] = (),
               approx: bool = True) -> Iterator[None]:
    """Turn a full disk while writing ``path`` into a DiskFullError; ``cleanup`` paths are removed first.
    ``needed``: the write's size in bytes (an estimate unless ``approx=False``)."""
    try:
        yield
    except OSError as e:
        if not is_no_space(e):
            raise
        written = None
        for c in cleanup:
            if written is None and os.path.isfile(c):
                written = os.path.getsize(c)
            remove_path(c)
        raise DiskFullError(path, needed, free_bytes(path), written, approx=approx) from None


def atomic_write(path: str, data: bytes) -> None:
    """Write via a temporary file and rename: readers never see a partial file, a killed run leaves none."""
    tmp = path + f".tmp{os.getpid()}"
    with disk_guard(path, len(data), [tmp], approx=False):
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)


def file_digest(path: str, algorithm: str = "xxh3_64") -> str:
    """Hex digest of a file's bytes, read in 4 MiB chunks: ``xxh3_64`` (cache part checksums) or any
    ``hashlib`` name (``sha256`` for input files in the manifest)."""
    if algorithm == "xxh3_64":
        import xxhash

        h: Any = xxhash.xxh3_64()
    else:
        import hashlib

        h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def file_xxh3(path: str) -> str:
    """xxh3-64 hex digest of a file's bytes (cache part checksums)."""
    return file_digest(path, "xxh3_64")


def preallocate(path: str, size: int) -> None:
    """Reserve ``size`` bytes for ``path`` (posix_fallocate), so writing through a memory map of it can
    never hit a full disk (which would be SIGBUS, not an error). Raises DiskFullError when there is no room.
    A file system without fallocate support falls back to the sparse file."""
    fn = getattr(os, "posix_fallocate", None)
    if fn is None or size <= 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        fn(fd, 0, size)
    except OSError as e:
        if is_no_space(e):
            raise DiskFullError(path, size, free_bytes(path)) from None
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(folder: str) -> int:
    """Remove ``*.tmp<pid>`` files of processes that are gone (a killed run's half-written parts).
    Returns how many were removed. ``*.tmp`` without a pid are left to their owner (see output folders)."""
    n = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for f in names:
        m = _TMP_FILE.search(f)
        if m and m.group("pid") and not pid_alive(int(m.group("pid"))):
            remove_path(os.path.join(folder, f))
            n += 1
    return n


# ------------------------------------------------------------------ folder swap

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``). False where unsupported."""
    if os.uname().sysname != "Linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), a)


def fsync_path(path: str) -> None:
    """Flush a file or folder to disk; errors (a vanished file, a filesystem without fsync) are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    fsync_path(path)
