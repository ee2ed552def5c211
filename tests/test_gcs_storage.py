"""Inputs, the signal cache and outputs on gs:// URLs against a real GCS emulator (gcp-storage-emulator, a
JSON-API server from PyPI) that this module starts on 127.0.0.1; siftkit reaches it through
``STORAGE_EMULATOR_HOST`` with pyarrow's GcsFileSystem. Skips when the emulator is not installed
(``pip install -e '.[dev]'``).

The emulator runs in a child process, not in a thread of the test process: pyarrow's GCS client makes some
requests while holding the GIL (the lazy first read of a random-access file), which would deadlock a
Python server that needs the GIL to answer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from siftkit import fs
from siftkit.cli import main
from test_object_storage import (
    _pool,
    _upload,
    check_missing_urls,
    check_outputs_replaced_whole,
    check_ray_on_store,
    check_select_on_store,
    check_vectors_on_store,
)

KEY_SECRET = "gcs-private-key-sEcReT-0123456789abcdef"


# The emulator's own entry point (create_server + run), in memory, killed with this process if it dies.
_SERVE = """import sys
from siftkit.workers import die_with_parent
die_with_parent(int(sys.argv[1]))
from gcp_storage_emulator.server import create_server
create_server("127.0.0.1", int(sys.argv[2]), in_memory=True).run()
"""


_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))    # 127.0.0.1: never through a proxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(url: str) -> bool:
    try:
        with _HTTP.open(url + "/", timeout=1) as r:     # the emulator's health check
            return r.status == 200 and r.read() == b"OK"
    except OSError:
        return False


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory):
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator is not installed (dev extra)")
    log = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    for _attempt in range(3):     # the free port may be taken before the emulator binds it (it then hangs)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(os.getpid()), str(port)],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline and not _up(url):
            time.sleep(0.05)
        if proc.poll() is None and _up(url):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail(f"the GCS emulator did not start: {log.read_text()[-2000:]}")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _create_bucket(host: str, name: str) -> None:
    """A bucket through the JSON API's buckets.insert (as ``gcloud storage buckets create`` does)."""
    req = urllib.request.Request(f"http://{host}/storage/v1/b?project=siftkit-test",
                                 data=json.dumps({"name": name}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with _HTTP.open(req, timeout=10) as r:
        assert r.status == 200


@pytest.fixture
def gcs(gcs_server, monkeypatch, tmp_path):
    """The emulator in the environment, a service-account file that must never be read or copied (the
    emulator is reached anonymously), a new empty bucket and a fresh local download cache. Yields the
    bucket's URL."""
    bucket = f"siftkit-{uuid.uuid4().hex[:12]}"
    _create_bucket(gcs_server, bucket)
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": KEY_SECRET}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    for var in ("NO_PROXY", "no_proxy"):         # pyarrow's GCS client (libcurl) honours http_proxy
        monkeypatch.setenv(var, ",".join(filter(None, [os.environ.get(var), "127.0.0.1"])))
    monkeypatch.setenv("SIFTKIT_LOCAL_CACHE", str(tmp_path / "local-cache"))
    yield f"gs://{bucket}"


def _manifest(url: str) -> dict:
    return json.loads(fs.read_bytes(f"{url}/manifest.json"))


def test_select_on_gcs_matches_local_and_rerun_hits_cache(gcs, gcs_server, tmp_path, capfd):
    # Neither the credentials file (its path or its key) nor the endpoint reaches a manifest, the cache or
    # the log.
    check_select_on_store(gcs, tmp_path, capfd,
                          [KEY_SECRET, os.environ["GOOGLE_APPLICATION_CREDENTIALS"], gcs_server])


def test_parquet_and_jsonl_files_read_from_gcs(gcs, tmp_path):
    """One Parquet file and one JSONL file read from the bucket by ``siftkit read`` (written back to the
    bucket) give the canonical tables of the same files read from disk; a selection from the Parquet file
    equals the local one."""
    local = tmp_path / "pool"
    _pool(local)
    _upload(local, f"{gcs}/pool")
    for rel, n in (("tasks/count.parquet", 6), ("chat/a.jsonl", 41)):
        assert main(["--quiet", "read", f"{gcs}/pool/{rel}", "--out", f"{gcs}/canonical.parquet"]) == 0
        assert main(["--quiet", "read", str(local / rel), "--out", str(tmp_path / "canonical.parquet")]) == 0
        got, want = fs.read_table(f"{gcs}/canonical.parquet"), pq.read_table(tmp_path / "canonical.parquet")
        assert got.num_rows == n and got.equals(want), rel
    args = ["--quiet", "select", "--budget", "4", "--method", "random", "--seed", "3"]
    assert main([*args, str(local / "tasks" / "count.parquet"), "--cache-dir", str(tmp_path / "c"),
                 "--out", str(tmp_path / "o")]) == 0
    assert main([*args, f"{gcs}/pool/tasks/count.parquet", "--cache-dir", f"{gcs}/c", "--out",
                 str(tmp_path / "o2")]) == 0
    got, want = (pq.read_table(tmp_path / d / "_siftkit" / "selection.parquet").select(["id", "status", "rank"])
                 for d in ("o2", "o"))
    assert got.column("status").to_pylist().count("selected") == 4 and got.equals(want)
    assert (tmp_path / "o2" / "selected.jsonl").read_bytes() == (tmp_path / "o" / "selected.jsonl").read_bytes()
    m = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert [i["path"] for i in m["inputs"]] == [f"{gcs}/pool/tasks/count.parquet"]


def test_fs_helpers_on_gcs(gcs, tmp_path):
    fs.write_atomic(f"{gcs}/d/a.parquet", pa.table({"x": [1, 2]}))
    fs.write_atomic(f"{gcs}/d/sub/b.txt", b"hello")
    assert fs.exists(f"{gcs}/d/a.parquet") and fs.isdir(f"{gcs}/d") and not fs.exists(f"{gcs}/d/zz")
    assert fs.isdir(f"{gcs}/d/sub") and not fs.isfile(f"{gcs}/d/sub") and fs.isfile(f"{gcs}/d/sub/b.txt")
    # A folder that exists only as the prefix of its objects (no marker object) is listed too.
    assert fs.listdir(f"{gcs}/d") == ["a.parquet", "sub"]
    assert fs.listdir(gcs) == ["d"]
    with pytest.raises(FileNotFoundError):
        fs.listdir(f"{gcs}/nothing")
    assert fs.glob(f"{gcs}/d/**/*.txt") == [f"{gcs}/d/sub/b.txt"] and fs.glob(f"{gcs}/d/*.txt") == []
    assert fs.read_table(f"{gcs}/d/a.parquet").column("x").to_pylist() == [1, 2]
    with fs.open_input(f"{gcs}/d/sub/b.txt", seekable=True) as fh:
        fh.seek(1)
        assert fh.read() == b"ello"
    assert b"".join(fs.iter_chunks(f"{gcs}/d/sub/b.txt", chunk=2)) == b"hello"
    big = os.urandom(3 << 20)                       # more than one upload chunk of the client
    fs.write_atomic(f"{gcs}/big.bin", big)
    assert fs.size(f"{gcs}/big.bin") == len(big) and fs.read_bytes(f"{gcs}/big.bin") == big
    key = fs.stat_key(f"{gcs}/d/sub/b.txt")
    time.sleep(0.01)
    fs.write_atomic(f"{gcs}/d/sub/b.txt", b"hello")          # the same bytes PUT again: a new version
    assert fs.stat_key(f"{gcs}/d/sub/b.txt") != key
    p1 = fs.local_copy(f"{gcs}/d/sub/b.txt")
    assert fs.read_bytes(p1) == b"hello" and fs.local_copy(f"{gcs}/d/sub/b.txt") == p1
    fs.write_atomic(f"{gcs}/d/sub/b.txt", b"changed!")       # another size: downloaded again
    p2 = fs.local_copy(f"{gcs}/d/sub/b.txt")
    assert p2 != p1 and fs.read_bytes(p2) == b"changed!"
    assert fs.bucket_missing("gs://no-such-bucket-xyz/x") and not fs.bucket_missing(f"{gcs}/x")
    fs.remove(f"{gcs}/d/a.parquet")
    fs.remove(f"{gcs}/d/a.parquet")                          # missing is fine
    assert not fs.exists(f"{gcs}/d/a.parquet") and fs.listdir(f"{gcs}/d") == ["sub"]
    fs.remove_tree(f"{gcs}/d")
    assert not fs.exists(f"{gcs}/d/sub/b.txt") and not fs.isdir(f"{gcs}/d")
    fs.remove_tree(f"{gcs}/d")                               # missing is fine


def test_outputs_on_gcs_are_replaced_whole_and_foreign_folders_refused(gcs, tmp_path):
    check_outputs_replaced_whole(gcs, tmp_path)


def test_missing_bucket_or_object_names_the_url(gcs, tmp_path, capfd):
    check_missing_urls(gcs, tmp_path, capfd, cache_hint="bucket does not exist")


def test_vectors_cached_on_gcs_match_local(gcs, tmp_path):
    check_vectors_on_store(gcs, tmp_path)


def test_unreachable_emulator_is_a_clean_error(gcs, tmp_path, monkeypatch, capfd):
    """Nothing listens on the endpoint: a clean error naming the URL once the client's retries (limited by
    ``fs.GCS_RETRY_SECONDS``, shortened here) are spent, not a hang."""
    monkeypatch.setattr(fs, "GCS_RETRY_SECONDS", 1)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"127.0.0.1:{_free_port()}")
    t0 = time.monotonic()
    rc = main(["select", f"{gcs}/pool", "--budget", "3", "--out", str(tmp_path / "o")])
    err = capfd.readouterr().err
    assert rc == 2 and f"{gcs}/pool" in err and "cannot reach the store" in err, err
    assert "Traceback" not in err and KEY_SECRET not in err
    assert time.monotonic() - t0 < 30


def test_ray_engine_with_cache_on_gcs_matches_local(gcs, gcs_server, tmp_path):
    """``--engine ray`` on a local Ray instance with the pool, the cache and the output in the bucket: the
    workers (which inherit STORAGE_EMULATOR_HOST: Ray is started here, after the fixture set it) write the
    cache; the selection is byte-identical to the local engine's and a rerun computes nothing."""
    check_ray_on_store(gcs, tmp_path, [KEY_SECRET, gcs_server])
