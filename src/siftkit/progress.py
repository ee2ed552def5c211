"""Progress, status lines and machine-readable logs on stderr: the one place siftkit reports what it is doing.

Three outputs, chosen once per command (``configure``, from ``-q`` / ``-v`` / ``--log-format``):

- **terminal** (stderr is a TTY, text format): a tqdm bar per stage (records/s, ETA), status lines;
- **plain lines** (stderr piped or redirected, text format): one line when a stage starts, one when it ends
  (counts, elapsed time, rate), and between them a progress line at most every ``interval`` seconds
  (default 30; ``SIFTKIT_PROGRESS_INTERVAL`` overrides it);
- **json** (``--log-format json``): one JSON object per line, no bars: ``stage_start``, ``stage_progress``
  (at most every ``interval`` seconds), ``stage_end`` (``records``/``done``, ``seconds``, ``rate`` and the
  stage's own counts), ``info``, ``debug``, ``warning`` and ``error`` events.

``-q`` silences everything but warnings and errors; ``-v`` adds debug lines (cache hits, fingerprints, worker
counts). Library code reports through ``stage``/``bar`` (a context manager yielding an object with
``update(n)``, ``set_postfix_str(s)``, ``set(**fields)``), ``info``, ``debug``, ``warn`` and ``event``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

QUIET, NORMAL, VERBOSE = 0, 1, 2
LOG_FORMATS = ("text", "json")

_LEVEL = NORMAL
_FORMAT = "text"
_INTERVAL: float | None = None      # None: from the environment, else 30 s
_T0 = time.monotonic()


def configure(*, quiet: bool = False, verbose: bool = False, log_format: str = "text",
              interval: float | None = None) -> None:
    """Set the verbosity (``quiet`` wins over ``verbose``), the log format and the plain-line interval."""
    global _LEVEL, _FORMAT, _INTERVAL, _T0
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    _LEVEL = QUIET if quiet else VERBOSE if verbose else NORMAL
    _FORMAT = log_format
    _INTERVAL = interval
    _T0 = time.monotonic()


def set_quiet(quiet: bool) -> None:
    global _LEVEL
    _LEVEL = QUIET if quiet else (NORMAL if _LEVEL == QUIET else _LEVEL)


def is_quiet() -> bool:
    return _LEVEL == QUIET


def is_verbose() -> bool:
    return _LEVEL >= VERBOSE


def log_format() -> str:
    return _FORMAT


def interval() -> float:
    if _INTERVAL is not None:
        return _INTERVAL
    try:
        return float(os.environ.get("SIFTKIT_PROGRESS_INTERVAL", "30"))
    except ValueError:
        return 30.0


def _elapsed() -> float:
    return time.monotonic() - _T0


def _tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _write(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):  # pragma: no cover - stderr closed under us
        pass


def event(name: str, **fields: Any) -> None:
    """A json-mode event (``{"event": name, "t": seconds since start, **fields}``); nothing in text mode."""
    if _FORMAT != "json" or (_LEVEL == QUIET and name not in ("warning", "error")):
        return
    import orjson

    rec = {"event": name, "t": round(_elapsed(), 3), **fields}
    _write(orjson.dumps(rec, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode())


def info(msg: str) -> None:
    if _LEVEL == QUIET:
        return
    if _FORMAT == "json":
        event("info", message=msg)
    else:
        _write(msg)


def debug(msg: str, **fields: Any) -> None:
    """Shown with ``-v`` only (cache hits, fingerprints, worker counts)."""
    if _LEVEL < VERBOSE:
        return
    if _FORMAT == "json":
        event("debug", message=msg, **fields)
    else:
        _write(f"debug: {msg}")


def warn(msg: str) -> None:
    """Warnings are shown even with --quiet."""
    if _FORMAT == "json":
        event("warning", message=msg)
    else:
        _write(f"warning: {msg}")


def error(msg: str, **fields: Any) -> None:
    """An error line (always shown): ``siftkit: error: msg``, or an ``error`` event in json mode."""
    if _FORMAT == "json":
        event("error", message=msg, **fields)
    else:
        _write(f"siftkit: error: {msg}")


# ---------------------------------------------------------------- stages

def _num(n: float) -> str:
    return f"{int(n):,}" if float(n).is_integer() else f"{n:,.1f}"


def _field(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, float)):
        return _num(v)
    if isinstance(v, dict):
        return "(" + ", ".join(f"{k} {_field(x)}" for k, x in v.items()) + ")"
    return str(v)


def _rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 100 else f"{r:,.1f}" if r >= 1 else f"{r:.3g}"


def _dur(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(round(s), 60)
    return f"{m}m{sec:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


class Stage:
    """One unit of work with an optional total: a tqdm bar, plain lines or json events (see module doc).

    ``update(n)`` is cheap (an addition and a clock read; a line at most every ``interval`` seconds).
    ``set(**fields)`` attaches counts to the end line/event (e.g. ``kept=...``).
    """

    def __init__(self, name: str, total: int | None, unit: str, mode: str):
        self.name, self.total, self.unit, self.mode = name, total, unit, mode
        self.n = 0
        self.fields: dict[str, Any] = {}
        self.postfix = ""
        self.t0 = time.monotonic()
        self._every = interval()
        self._next = self.t0 + self._every
        self._bar: Any = None
        self._closed = False
        if mode == "tty":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=name, unit=unit, unit_scale=True, file=sys.stderr, leave=False,
                             dynamic_ncols=True, mininterval=0.5)
        elif mode == "lines":
            _write(f"[{_dur(_elapsed()):>7}] {name}: start" + (f", {_num(total)} {unit}" if total else ""))
        elif mode == "json":
            event("stage_start", stage=name, total=total, unit=unit)

    # tqdm-compatible surface
    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if self.mode in ("lines", "json"):
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self._every
                self._progress_line(now)

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s
        if self._bar is not None:
            self._bar.set_postfix_str(s, refresh=False)

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def set(self, **fields: Any) -> None:
        """Counts reported with the stage's end (``kept=…``, ``records=…``)."""
        self.fields.update(fields)

    @property
    def rate(self) -> float:
        dt = time.monotonic() - self.t0
        return self.n / dt if dt > 0 else 0.0

    def _progress_line(self, now: float) -> None:
        dt = now - self.t0
        rate = self.n / dt if dt > 0 else 0.0
        eta = (self.total - self.n) / rate if self.total and rate > 0 and self.total > self.n else None
        if self.mode == "json":
            event("stage_progress", stage=self.name, done=self.n, total=self.total, unit=self.unit,
                  seconds=round(dt, 3), rate=round(rate, 2), eta=None if eta is None else round(eta, 1))
            return
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        tot = f"/{_num(self.total)}" if self.total else ""
        _write(f"[{_dur(_elapsed()):>7}] {self.name}: {_num(self.n)}{tot} {self.unit}{pct}, "
               f"{_rate(rate)} {self.unit}/s" + (f", ETA {_dur(eta)}" if eta is not None else "")
               + (f", {self.postfix}" if self.postfix else ""))

    def close(self, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        dt = time.monotonic() - self.t0
        rate = self.n / dt if dt > 0 else 0.0
        if self._bar is not None:
            self._bar.close()
            if _LEVEL >= VERBOSE:
                _write(f"debug: {self.name}: {_num(self.n)} {self.unit} in {_dur(dt)}")
            return
        if self.mode == "json":
            counts = {"records": self.n} if self.unit == "rec" else {"done": self.n, "unit": self.unit}
            payload = {**counts, **self.fields, "seconds": round(dt, 3), "rate": round(rate, 2)}
            if failed:
                payload["failed"] = True
            event("stage_end", stage=self.name, **payload)
        elif self.mode == "lines":
            extra = "".join(f", {k} {_field(v)}" for k, v in self.fields.items() if v != {})
            what = "failed after" if failed else "done:"
            rate_s = f" ({_rate(rate)} {self.unit}/s)" if self.n and dt >= 0.05 else ""
            _write(f"[{_dur(_elapsed()):>7}] {self.name}: {what} {_num(self.n)} {self.unit} in {_dur(dt)}"
                   f"{rate_s}{extra}")


class _NullStage(Stage):
    def __init__(self, name: str = "", total: int | None = None, unit: str = "rec"):
        self.name, self.total, self.unit, self.mode = name, total, unit, "off"
        self.n, self.fields, self.postfix, self._closed, self._bar = 0, {}, "", True, None
        self.t0 = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self, failed: bool = False) -> None:
        pass


def _mode() -> str:
    if _LEVEL == QUIET:
        return "off"
    if _FORMAT == "json":
        return "json"
    return "tty" if _tty() else "lines"


@contextmanager
def stage(name: str, total: int | None = None, unit: str = "rec", show: bool = True) -> Iterator[Stage]:
    """Report one stage of work (see ``Stage``). ``show=False`` (inner loops run many times) reports nothing."""
    s = Stage(name, total, unit, _mode()) if show else _NullStage(name, total, unit)
    try:
        yield s
    except BaseException:
        s.close(failed=True)
        raise
    s.close()


bar = stage   # the older name, used across the code base
