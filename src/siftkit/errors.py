"""Errors with exit codes. Every user-facing failure is a SiftkitError subclass.

Exit codes (documented in the README):
  0 success, 1 internal error, 2 usage/config error, 3 input data error, 4 empty result,
  5 disk full (no space left where an output or cache file is written),
  6 an LLM endpoint or the Ray cluster stayed unavailable or refused the credentials (work finished so far
    is cached: rerun).
"""

from __future__ import annotations


class SiftkitError(Exception):
    """Base error: message is shown to the user without a traceback.

    Picklable with every attribute (``file``, ``line``, ... of an ``InputDataError``, or a subclass's own),
    so an error raised in a worker process arrives whole: the default pickling would call the class with
    the formatted message as its only argument, losing keyword-only arguments or reformatting it."""

    exit_code = 1

    def __reduce__(self):
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_error(cls: type, args: tuple, state: dict) -> SiftkitError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class ConfigError(SiftkitError):
    """Bad flags, recipe keys, expressions or parameters."""

    exit_code = 2


class InputDataError(SiftkitError):
    """A problem with the user's data: unreadable file, malformed record, unknown format.

    ``location`` is ``file:line:column`` (or ``file#record``) when known.
    """

    exit_code = 3

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, record: int | None = None, field: str | None = None):
        self.file, self.line, self.column, self.record, self.field = file, line, column, record, field
        loc = self.location
        super().__init__(f"{loc}: {message}" if loc else message)
        self.reason = message

    @property
    def location(self) -> str:
        if self.file is None:
            return ""
        loc = str(self.file)
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        elif self.record is not None:
            loc += f"#record {self.record}"
        if self.field is not None:
            loc += f" (field '{self.field}')"
        return loc


class EmptyResultError(SiftkitError):
    """Nothing to select from, or nothing selected."""

    exit_code = 4


class MissingDependencyError(SiftkitError):
    exit_code = 2

    def __init__(self, package: str, extra: str | None = None, purpose: str = ""):
        hint = f"pip install 'siftkit[{extra}]'" if extra else f"pip install {package}"
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"{package} is needed{what} but is not installed: {hint}")


class DiskFullError(SiftkitError):
    """No space left on the device (or quota exceeded) while writing ``path``; temporaries are removed.

    ``needed`` is the size of the write in bytes when known, ``free`` the space left on that disk.
    """

    exit_code = 5

    def __init__(self, path: str, needed: int | None = None, free: int | None = None,
                 written: int | None = None, approx: bool = False):
        self.path, self.needed, self.free, self.written = path, needed, free, written
        what = (f"needs {'about ' if approx else ''}{needed:,} bytes" if needed is not None else
                f"failed after {written:,} bytes" if written is not None else "needs more space")
        room = f", {free:,} bytes free there" if free is not None else ""
        super().__init__(f"no space left on device writing {path}: {what}{room}. Free some space or "
                         f"choose another folder (--out, --cache-dir)")


class EndpointError(SiftkitError):
    """An LLM endpoint failed for good: refused the credentials, or stayed unavailable (429 / 5xx / timeouts /
    connection errors) after every retry. Responses received before are in the response cache, so a rerun
    resumes. The message never holds the API key."""

    exit_code = 6


class ClusterError(SiftkitError):
    """The Ray cluster could not be used: unreachable (no answer at the address, or no answer within the
    connection timeout), it refused this driver's credentials (Ray token authentication), or its workers
    kept dying. Shards finished before are in the cache, so a rerun resumes. Exit code 6, as an endpoint."""

    exit_code = 6
