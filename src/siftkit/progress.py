"""Progress bars and status messages on stderr, silenced by ``--quiet`` (``set_quiet(True)``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    return _QUIET


def info(msg: str) -> None:
    if not _QUIET:
        print(msg, file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    """Warnings are shown even with --quiet."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def bar(desc: str, total: int | None = None, unit: str = "rec") -> Iterator[object]:
    """A tqdm bar on stderr; disabled with --quiet and when stderr is not a terminal (logs stay clean)."""
    if _QUIET:
        yield _NullBar()
        return
    from tqdm import tqdm

    b = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, leave=False,
             dynamic_ncols=True, mininterval=0.5, disable=None)
    try:
        yield b
    finally:
        b.close()
