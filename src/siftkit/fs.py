"""Paths and URLs: one way to read, list and write local paths, ``file://``, ``s3://``, ``gs://`` and
``hdfs://`` (through ``pyarrow.fs``; other fsspec protocols such as ``az://`` through fsspec when installed).

Every function takes a local path or a URL. Local paths and ``file://`` URLs use the local file system
(atomic writes by temporary file + rename, see :mod:`siftkit.fsutil`); the others use an object store or
HDFS, where a write is one PUT of the whole object (S3 and GCS make an object visible whole or not at all;
there is no atomic rename of a folder, see docs/outputs.md).

Credentials come from the usual environment of each store and are never read, logged or written by
siftkit: S3 from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``
and ``~/.aws``, or the instance role; GCS from ``GOOGLE_APPLICATION_CREDENTIALS`` or the metadata server;
HDFS from the Hadoop configuration (``HADOOP_HOME``, ``CLASSPATH``, Kerberos ticket cache). A GCS emulator
is reached by ``STORAGE_EMULATOR_HOST`` (anonymous). An S3-compatible
store (MinIO, Ceph, R2, ...) is reached by setting ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
(e.g. ``http://127.0.0.1:9000``) and the region by ``AWS_REGION``/``AWS_DEFAULT_REGION``. A URL holding a
password (``s3://KEY:SECRET@bucket``) is refused, and error messages are scrubbed of the values of
secret-looking environment variables.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any

from .errors import ConfigError, SiftkitError
from .fsutil import atomic_write

__all__ = [
    "abspath",
    "basename",
    "bucket_missing",
    "check_location",
    "describe_error",
    "digest",
    "dirname",
    "display",
    "error_kind",
    "exists",
    "fs_error",
    "glob",
    "is_remote",
    "is_url",
    "isdir",
    "isfile",
    "iter_chunks",
    "join",
    "listdir",
    "local_cache_dir",
    "local_copy",
    "local_folder",
    "local_path",
    "makedirs",
    "open_input",
    "parquet_bytes",
    "read_bytes",
    "read_table",
    "remove",
    "remove_tree",
    "resolve",
    "scrub",
    "size",
    "stat_key",
    "upload_tree",
    "walk_files",
    "write_atomic",
    "write_table",
]

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://")
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|(^|_)KEY($|_)|ACCESS_KEY",
                          re.IGNORECASE)
_FS_CACHE: dict[tuple, Any] = {}
REMOTE_READ_BYTES = 16 << 20   # bytes fetched per request when reading a remote file
GCS_RETRY_SECONDS = 60         # how long the GCS client retries one call (its default, 15 minutes, makes an
                               # unreachable endpoint look like a hang)
_ENV_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "STORAGE_EMULATOR_HOST",
             "GOOGLE_APPLICATION_CREDENTIALS")


# ------------------------------------------------------------------ names

def scheme(s: str | os.PathLike) -> str:
    """The URL scheme in lower case ('' for a local path; one letter is a Windows drive, not a scheme)."""
    m = _SCHEME.match(os.fspath(s)) if isinstance(s, (str, os.PathLike)) else None
    return m.group("scheme").lower() if m else ""


def is_url(s: Any) -> bool:
    """``scheme://...`` (``file://`` included)."""
    return isinstance(s, (str, os.PathLike)) and bool(scheme(s))


def is_remote(s: Any) -> bool:
    """A URL that is not on the local file system (anything but ``file://``)."""
    return is_url(s) and scheme(s) != "file"


def local_path(s: str | os.PathLike) -> str:
    """A local path for a local path or a ``file://`` URL (``file:///a/b`` -> ``/a/b``); URLs of other
    schemes are returned unchanged."""
    s = os.fspath(s)
    if scheme(s) == "file":
        u = urllib.parse.urlsplit(s)
        if u.netloc not in ("", "localhost"):
            raise ConfigError(f"{s}: a file:// URL names a local path (file:///abs/path), not host "
                              f"{u.netloc!r}")
        return urllib.parse.unquote(u.path) or "/"
    return s


def _check_no_password(uri: str) -> None:
    u = urllib.parse.urlsplit(uri)
    if u.password is not None:
        raise ConfigError(f"{display(uri)}: credentials in a URL are not accepted (they would end up in "
                          f"manifests and logs); set them in the environment (e.g. AWS_ACCESS_KEY_ID and "
                          f"AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS)")


def display(uri: str | os.PathLike) -> str:
    """``uri`` as shown in messages and manifests: a password in it is replaced by ``***``."""
    uri = os.fspath(uri)
    if not is_remote(uri):
        return uri
    u = urllib.parse.urlsplit(uri)
    if u.password is None:
        return uri
    host = u.hostname or ""
    netloc = f"{u.username}:***@{host}" + (f":{u.port}" if u.port else "")
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def join(base: str | os.PathLike, *parts: str) -> str:
    """``os.path.join`` for local paths; ``/``-joined for URLs."""
    base = os.fspath(base)
    if not is_remote(base):
        return os.path.join(local_path(base), *parts)
    out = base.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


def basename(uri: str | os.PathLike) -> str:
    uri = os.fspath(uri)
    return uri.rstrip("/").rsplit("/", 1)[-1] if is_remote(uri) else os.path.basename(local_path(uri))


def dirname(uri: str | os.PathLike) -> str:
    uri = os.fspath(uri)
    if not is_remote(uri):
        return os.path.dirname(local_path(uri))
    head = uri.rstrip("/")
    root = head[:len(scheme(uri)) + 3]
    rest = head[len(root):]
    return root + rest.rsplit("/", 1)[0] if "/" in rest else head


def abspath(s: str | os.PathLike) -> str:
    """``os.path.abspath`` for local paths and ``file://`` URLs; other URLs unchanged (password hidden)."""
    s = os.fspath(s)
    return display(s.rstrip("/") or s) if is_remote(s) else os.path.abspath(local_path(s))


# ------------------------------------------------------------------ file systems

def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _make_fs(sch: str, netloc: str) -> Any:
    import pyarrow.fs as pafs

    if sch in ("s3", "s3a"):
        kw: dict[str, Any] = {}
        ep = _endpoint()
        if ep:
            kw["endpoint_override"] = ep
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kw["region"] = region
        elif ep:
            kw["region"] = "us-east-1"   # S3-compatible stores ignore it; skips the region lookup
        return pafs.S3FileSystem(**kw)
    if sch in ("gs", "gcs"):
        import datetime

        retry = datetime.timedelta(seconds=GCS_RETRY_SECONDS)
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")   # gcp-storage-emulator, fake-gcs-server, ...
        if emulator:
            u = urllib.parse.urlsplit(emulator if "://" in emulator else "http://" + emulator)
            return pafs.GcsFileSystem(anonymous=True, scheme=u.scheme, endpoint_override=u.netloc,
                                      retry_time_limit=retry)
        return pafs.GcsFileSystem(retry_time_limit=retry)
    if sch in ("hdfs", "viewfs"):
        return pafs.FileSystem.from_uri(f"{sch}://{netloc}/")[0]
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"unknown URL scheme {sch}:// (siftkit reads s3://, gs://, hdfs:// and file://; "
                          f"others through fsspec, which is not installed)") from None
    try:
        f = fsspec.filesystem(sch)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"unknown URL scheme {sch}:// ({e})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(f))


def resolve(uri: str | os.PathLike) -> tuple[Any, str]:
    """``(pyarrow.fs.FileSystem, path inside it)`` for a local path or URL. File systems are made once per
    process (and per endpoint), so a forked or Ray worker makes its own."""
    import pyarrow.fs as pafs

    uri = os.fspath(uri)
    if not is_remote(uri):
        return pafs.LocalFileSystem(), os.path.abspath(local_path(uri))
    _check_no_password(uri)
    sch = scheme(uri)
    u = urllib.parse.urlsplit(uri)
    env = "\x00".join(os.environ.get(k, "") for k in _ENV_KEYS)     # a changed setting: a new client
    key = (os.getpid(), sch, u.netloc if sch in ("hdfs", "viewfs") else "",
           hashlib.sha256(env.encode()).hexdigest())
    f = _FS_CACHE.get(key)
    if f is None:
        try:
            f = _FS_CACHE[key] = _make_fs(sch, u.netloc)
        except SiftkitError:
            raise
        except Exception as e:  # noqa: BLE001 - libhdfs missing, bad endpoint, ...
            raise ConfigError(f"cannot open the file system of {display(uri)}: {describe_error(e)}") from None
    rest = uri[len(sch) + 3:]    # keys are taken literally (as the aws and gcloud tools do): no %-decoding
    if sch in ("s3", "s3a", "gs", "gcs"):
        path = rest.rstrip("/")
    elif sch in ("hdfs", "viewfs"):
        path = "/" + rest.split("/", 1)[1].rstrip("/") if "/" in rest else "/"
    else:
        path = uri[len(sch) + 3:].rstrip("/")
    return f, path


def scrub(text: str) -> str:
    """``text`` with the values of secret-looking environment variables (``*SECRET*``, ``*TOKEN*``,
    ``*_KEY``, ...) replaced by ``***``."""
    for name, value in os.environ.items():
        if len(value) >= 6 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    return text


def error_kind(e: BaseException) -> str:
    """``missing`` (no such object, folder or bucket), ``denied`` (credentials, permissions), ``network``
    (store unreachable) or ``""`` (anything else)."""
    low = str(e).lower()
    if (isinstance(e, FileNotFoundError) or "no such file" in low or "no_such_bucket" in low
            or "nosuchbucket" in low or "bucket does not exist" in low or "path does not exist" in low):
        return "missing"
    if any(k in low for k in ("access_denied", "accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch",
                              "forbidden", "http 403", "invalid_access_key", "unauthorized", "credentials",
                              "permission denied", "expiredtoken")) or isinstance(e, PermissionError):
        return "denied"
    if any(k in low for k in ("network_connection", "could not resolve", "couldn't connect", "connection refused",
                              "failed to connect", "could not connect", "timed out", "curlcode")):
        return "network"
    return ""


def describe_error(e: BaseException) -> str:
    """A one-line reason for a file system error, with a hint for the common causes (no credentials in it)."""
    msg = " ".join(str(e).split())
    kind = error_kind(e)
    if kind == "missing":
        low = msg.lower()
        why = ("the bucket does not exist" if "bucket" in low and ("no_such_bucket" in low or "does not exist"
                                                                    in low or "nosuchbucket" in low)
               else "not found")
    elif kind == "denied":
        why = ("access denied: check the credentials in the environment (AWS_ACCESS_KEY_ID / "
               "AWS_SECRET_ACCESS_KEY / AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, Kerberos) and the "
               "bucket's permissions")
    elif kind == "network":
        why = ("cannot reach the store (check the network and the endpoint: AWS_ENDPOINT_URL / "
               "AWS_ENDPOINT_URL_S3 for S3-compatible stores, STORAGE_EMULATOR_HOST for a GCS emulator)")
    else:
        why = ""
    detail = scrub(msg)[:300]
    return f"{why} ({detail})" if why else detail


def fs_error(uri: str | os.PathLike, e: BaseException, what: str = "cannot read",
             missing: type[SiftkitError] = ConfigError) -> SiftkitError:
    """A siftkit error naming ``uri`` for an OSError/Arrow error of a file system call: ``missing`` (e.g.
    InputDataError for inputs, exit 3) when the object or bucket does not exist, else ConfigError (exit 2:
    credentials, permissions, endpoint)."""
    cls = missing if error_kind(e) == "missing" else ConfigError
    return cls(f"{what} {display(os.fspath(uri))}: {describe_error(e)}")


def _info(uri: str | os.PathLike) -> Any:
    f, p = resolve(uri)
    return f.get_file_info(p)


# ------------------------------------------------------------------ queries

def bucket_missing(uri: str | os.PathLike) -> bool:
    """True when ``uri`` is on S3 or GCS and its bucket does not exist (False for other file systems)."""
    import pyarrow.fs as pafs

    uri = os.fspath(uri)
    if scheme(uri) not in ("s3", "s3a", "gs", "gcs"):
        return False
    f, p = resolve(uri)
    return f.get_file_info(p.split("/", 1)[0]).type == pafs.FileType.NotFound


def check_location(uri: str | os.PathLike, what: str) -> None:
    """Before a run: a remote folder's store must be reachable with the environment's credentials and its
    bucket must exist (ConfigError naming ``uri`` otherwise). Local paths: nothing to check."""
    if not is_remote(uri):
        return
    try:
        if bucket_missing(uri):
            raise ConfigError(f"{what} {display(os.fspath(uri))}: the bucket does not exist (create it first)")
        _info(uri)
    except OSError as e:
        raise fs_error(uri, e, f"cannot use {what}") from None


def exists(uri: str | os.PathLike) -> bool:
    if not is_remote(uri):
        return os.path.exists(local_path(uri))
    import pyarrow.fs as pafs

    return _info(uri).type != pafs.FileType.NotFound


def isdir(uri: str | os.PathLike) -> bool:
    """A folder (on an object store: a prefix holding at least one object, or a bucket)."""
    if not is_remote(uri):
        return os.path.isdir(local_path(uri))
    import pyarrow.fs as pafs

    return _info(uri).type == pafs.FileType.Directory


def isfile(uri: str | os.PathLike) -> bool:
    if not is_remote(uri):
        return os.path.isfile(local_path(uri))
    import pyarrow.fs as pafs

    return _info(uri).type == pafs.FileType.File


def size(uri: str | os.PathLike) -> int:
    if not is_remote(uri):
        return os.path.getsize(local_path(uri))
    info = _info(uri)
    if info.size is None:
        raise FileNotFoundError(2, "No such file", display(os.fspath(uri)))
    return int(info.size)


def stat_key(uri: str | os.PathLike) -> str:
    """What identifies one version of a file: its size and modification time (``size:mtime_ns``)."""
    if not is_remote(uri):
        st = os.stat(local_path(uri))
        return f"{st.st_size}:{st.st_mtime_ns}"
    info = _info(uri)
    if info.size is None:
        raise FileNotFoundError(2, "No such file", display(os.fspath(uri)))
    return f"{info.size}:{info.mtime_ns or 0}"


def _list(uri: str, recursive: bool) -> tuple[str, list[Any]]:
    """``(path inside the file system, FileInfos under it)``; a missing folder raises FileNotFoundError
    (pyarrow's GCS file system raises a plain OSError "No such file or directory" for a missing prefix)."""
    import pyarrow.fs as pafs

    f, p = resolve(uri)
    try:
        return p, f.get_file_info(pafs.FileSelector(p, recursive=recursive, allow_not_found=False))
    except FileNotFoundError:
        raise
    except OSError as e:
        if scheme(uri) in ("gs", "gcs") and str(e).startswith("No such file or directory"):
            raise FileNotFoundError(2, "No such file or directory", display(uri)) from None
        raise


def listdir(uri: str | os.PathLike) -> list[str]:
    """Sorted names of the entries directly in a folder; a missing folder raises FileNotFoundError."""
    if not is_remote(uri):
        return sorted(os.listdir(local_path(uri)))
    uri = os.fspath(uri)
    if scheme(uri) in ("gs", "gcs"):
        # pyarrow's GCS listing of one level returns the objects and the folder-marker objects there, not
        # the prefixes of deeper objects PUT without markers (as siftkit and most tools write them): list
        # the whole prefix and keep the first component of each name.
        p, infos = _list(uri, recursive=True)
        return sorted({i.path[len(p):].lstrip("/").split("/", 1)[0] for i in infos} - {""})
    _p, infos = _list(uri, recursive=False)
    return sorted(i.base_name for i in infos)


def walk_files(uri: str | os.PathLike) -> list[tuple[str, str, int]]:
    """Every file under a remote folder: sorted ``(url, path relative to the folder, size)``. A missing
    folder raises FileNotFoundError."""
    import pyarrow.fs as pafs

    uri = os.fspath(uri).rstrip("/")
    p, infos = _list(uri, recursive=True)
    out = []
    for i in infos:
        if i.type != pafs.FileType.File:
            continue
        rel = i.path[len(p):].lstrip("/")
        out.append((uri + "/" + rel, rel, int(i.size or 0)))
    return sorted(out, key=lambda x: x[1])


def glob(pattern: str) -> list[str]:
    """Sorted URLs matching a remote glob (``*`` stays inside one folder, ``**`` crosses folders)."""
    root = pattern
    while any(ch in root for ch in "*?["):
        root = dirname(root)
    regex = _glob_regex(pattern[len(root):].lstrip("/"))
    try:
        files = walk_files(root)
    except FileNotFoundError:
        return []
    return [u for u, rel, _ in files if regex.match(rel)]


def _glob_regex(pat: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pat.startswith("**", i):
            out += ".*"
            i += 2
        elif pat[i] == "*":
            out += "[^/]*"
            i += 1
        elif pat[i] == "?":
            out += "[^/]"
            i += 1
        elif pat[i] == "[":
            j = pat.find("]", i + 1)
            if j < 0:
                out += re.escape(pat[i])
                i += 1
            else:
                out += fnmatch.translate(pat[i:j + 1])[4:-3]
                i = j + 1
        else:
            out += re.escape(pat[i])
            i += 1
    return re.compile(out + r"\Z")


# ------------------------------------------------------------------ reading

def open_input(uri: str | os.PathLike, seekable: bool = False) -> IO[bytes]:
    """A binary file: ``open(path, 'rb')`` locally. For URLs a stream read front to back, or with
    ``seekable`` a random-access file; both fetch :data:`REMOTE_READ_BYTES` per request (each request costs
    a round trip, so small reads would be slow)."""
    if not is_remote(uri):
        return open(local_path(uri), "rb")
    f, p = resolve(uri)
    raw = f.open_input_file(p) if seekable else f.open_input_stream(p, compression=None)
    return io.BufferedReader(raw, buffer_size=REMOTE_READ_BYTES)  # type: ignore[arg-type]


def read_bytes(uri: str | os.PathLike) -> bytes:
    if not is_remote(uri):
        with open(local_path(uri), "rb") as fh:
            return fh.read()
    f, p = resolve(uri)
    with f.open_input_file(p) as fh:     # the size is known: one request (a stream's read() is slow)
        return fh.read()


def read_table(uri: str | os.PathLike) -> Any:
    """A Parquet file as a pyarrow Table."""
    import pyarrow.parquet as pq

    if not is_remote(uri):
        return pq.read_table(local_path(uri))
    f, p = resolve(uri)
    return pq.read_table(p, filesystem=f)


# ------------------------------------------------------------------ writing

def makedirs(uri: str | os.PathLike) -> None:
    """Create a folder and its parents (a no-op on object stores, whose prefixes need no creating)."""
    if not is_remote(uri):
        os.makedirs(local_path(uri), exist_ok=True)
        return
    if scheme(uri) in ("hdfs", "viewfs"):
        f, p = resolve(uri)
        f.create_dir(p, recursive=True)


def write_atomic(uri: str | os.PathLike, data: bytes | Any) -> None:
    """Write bytes (or a pyarrow Table, as zstd Parquet) so a reader sees the old file or the whole new one:
    temporary file + rename locally, one PUT of the whole object on object stores."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = parquet_bytes(data)
    if not is_remote(uri):
        atomic_write(local_path(uri), bytes(data))
        return
    f, p = resolve(uri)
    if scheme(uri) in ("hdfs", "viewfs"):   # HDFS has a real rename
        tmp = p + f".tmp{os.getpid()}"
        with f.open_output_stream(tmp, compression=None) as out:
            out.write(data)
        f.move(tmp, p)
        return
    with f.open_output_stream(p, compression=None) as out:
        out.write(data)


def write_table(uri: str | os.PathLike, table: Any) -> None:
    """A Table as zstd Parquet at ``uri`` (atomically, as :func:`write_atomic`)."""
    write_atomic(uri, parquet_bytes(table))


def parquet_bytes(table: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def remove(uri: str | os.PathLike) -> None:
    """Remove a file; missing is fine."""
    if not is_remote(uri):
        try:
            os.remove(local_path(uri))
        except FileNotFoundError:
            pass
        return
    f, p = resolve(uri)
    try:
        f.delete_file(p)
    except FileNotFoundError:
        pass


def remove_tree(uri: str | os.PathLike) -> None:
    """Remove a folder and all it holds; missing is fine."""
    if not is_remote(uri):
        from .fsutil import remove_path

        remove_path(local_path(uri))
        return
    import pyarrow.fs as pafs

    f, p = resolve(uri)
    try:
        f.delete_dir(p)
    except FileNotFoundError:
        pass
    except OSError:   # GCS: "No such directory" is a plain OSError
        if f.get_file_info(p).type != pafs.FileType.NotFound:
            raise


def upload_tree(local_dir: str, uri: str, last: str = "manifest.json", first: str = "") -> list[str]:
    """Copy every file of ``local_dir`` to the folder ``uri`` (each one PUT): those whose relative name
    starts with ``first`` before the others, ``last`` after all. Returns the relative names written."""
    rels = []
    for dirpath, _dirs, files in os.walk(local_dir):
        for name in files:
            rels.append(os.path.relpath(os.path.join(dirpath, name), local_dir).replace(os.sep, "/"))
    rels.sort(key=lambda r: (r == last, not (first and r.startswith(first)), r))
    f, p = resolve(uri)
    for rel in rels:
        with open(os.path.join(local_dir, rel), "rb") as src, \
                f.open_output_stream(p + "/" + rel, compression=None) as out:
            while chunk := src.read(8 << 20):
                out.write(chunk)
    return rels


# ------------------------------------------------------------------ local copies

def local_cache_dir() -> str:
    """Where downloaded copies of remote files live: ``$SIFTKIT_LOCAL_CACHE``, else
    ``$XDG_CACHE_HOME/siftkit/remote`` (``~/.cache/siftkit/remote``)."""
    base = os.environ.get("SIFTKIT_LOCAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "siftkit", "remote")
    os.makedirs(base, exist_ok=True)
    return base


def local_folder(base: str | os.PathLike, *parts: str) -> str:
    """A local folder for what cannot live on an object store (the LLM response cache's SQLite file, model
    checkpoints): ``base/parts`` for a local ``base``; for a URL, a folder of :func:`local_cache_dir` named
    by a hash of the URL (so each machine keeps its own, reused by every run with the same cache URL)."""
    base = os.fspath(base)
    if not is_remote(base):
        return os.path.join(local_path(base), *parts)
    key = hashlib.sha256(base.rstrip("/").encode()).hexdigest()[:16]
    return os.path.join(local_cache_dir(), "folders", key, *parts)


def local_copy(uri: str | os.PathLike, cache_dir: str | None = None) -> str:
    """A local path holding the bytes of ``uri``: the path itself for local files; for URLs a copy
    downloaded once into ``cache_dir`` (default :func:`local_cache_dir`), named by a hash of the URL and the
    object's size and mtime, so a changed object is downloaded again and an unchanged one never."""
    uri = os.fspath(uri)
    if not is_remote(uri):
        return local_path(uri)
    key = hashlib.sha256(f"{uri}\x00{stat_key(uri)}".encode()).hexdigest()[:32]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", basename(uri))[-80:]
    folder = cache_dir or local_cache_dir()
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, f"{key}-{name}")
    if os.path.exists(dest):
        return dest
    f, p = resolve(uri)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".dl-", suffix=f".tmp{os.getpid()}")
    try:
        with os.fdopen(fd, "wb") as out, f.open_input_stream(p, compression=None) as src:
            while chunk := src.read(REMOTE_READ_BYTES):
                out.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return dest


def digest(uri: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``sha256`` or ``xxh3_64``, as :func:`siftkit.fsutil.file_digest`)."""
    from .fsutil import file_digest

    if not is_remote(uri):
        return file_digest(local_path(uri), algorithm)
    if algorithm == "xxh3_64":
        import xxhash

        h: Any = xxhash.xxh3_64()
    else:
        h = hashlib.new(algorithm)
    for b in iter_chunks(uri):
        h.update(b)
    return h.hexdigest()


def iter_chunks(uri: str | os.PathLike, chunk: int = 1 << 23) -> Iterator[bytes]:
    """The bytes of a file in chunks."""
    with open_input(uri) as fh:
        while b := fh.read(chunk):
            yield b
