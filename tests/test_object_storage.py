"""Inputs, the signal cache and outputs on object storage: a real S3-compatible server (moto's, started on
127.0.0.1 by the ``s3_server`` / ``s3`` fixtures of conftest.py) and file:// URLs. Skips when moto is not installed (``pip install -e '.[dev]'``)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket

import pyarrow as pa
import pytest

from conftest import BUCKET, SECRET, convo, write_jsonl
from siftkit import fs
from siftkit.cli import main


def _pool(root) -> None:
    write_jsonl(root / "chat" / "a.jsonl", [convo(f"question {i}: what is {i}+{i}?", f"{i}+{i} is {2 * i}. " * (i % 7 + 1))
                                            for i in range(40)] + [convo("question 1: what is 1+1?", "1+1 is 2. " * 2)])
    raw = "".join(json.dumps({"instruction": f"Say {w} twice.", "input": "", "output": f"{w} {w}"}) + "\n"
                  for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta"))
    (root / "tasks").mkdir(parents=True)
    (root / "tasks" / "t.jsonl.gz").write_bytes(gzip.compress(raw.encode()))
    (root / "notes.txt").write_text("not data\n")
    import pyarrow.parquet as pq
    import zstandard

    pq.write_table(pa.table({"instruction": [f"Count to {n}." for n in range(3, 9)],
                             "output": [" ".join(map(str, range(1, n + 1))) for n in range(3, 9)]}),
                   root / "tasks" / "count.parquet")
    (root / "csv").mkdir()
    (root / "csv" / "qa.csv").write_text("instruction,output\nName a colour.,Blue.\nName a fruit.,A pear.\n")
    lines = "".join(json.dumps(convo(f"zstd question {i}", f"zstd answer {i} " * i)) + "\n" for i in range(1, 6))
    (root / "chat" / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))


def _upload(local, url) -> None:
    for dirpath, _d, files in os.walk(local):
        for name in files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, local).replace(os.sep, "/")
            with open(p, "rb") as fh:
                fs.write_atomic(f"{url}/{rel}", fh.read())


def _select(src, cache, out, *extra) -> int:
    return main(["--quiet", "select", src, "--budget", "12", "--method", "top", "--by", "tokens_response",
                 "--dedup", "exact", "--cache-dir", cache, "--out", out, "--report", *extra])


def _read(url) -> bytes:
    return fs.read_bytes(url)


def test_select_on_s3_matches_local_and_rerun_hits_cache(s3, tmp_path, capfd):
    check_select_on_store(s3, tmp_path, capfd, [SECRET, "AKIATESTINGKEYID0001"])


def check_select_on_store(root: str, tmp_path, capfd, secrets: list[str]) -> None:
    """A pool of JSONL (plain, gzip, zstd), Parquet and CSV read from ``root`` (a bucket URL), the signal
    cache and the output there: the selection is byte-identical to a run on local paths, a rerun computes
    nothing, and none of ``secrets`` reaches a manifest, the cache's JSON files or the log."""
    local = tmp_path / "pool"
    _pool(local)
    _upload(local, f"{root}/pool")
    assert _select(str(local), str(tmp_path / "cache"), str(tmp_path / "out")) == 0
    capfd.readouterr()
    assert _select(f"{root}/pool/", f"{root}/cache", f"{root}/out") == 0
    for rel in ("selected.jsonl", "_siftkit/selection.parquet"):
        assert _read(f"{root}/out/{rel}") == (tmp_path / "out" / rel).read_bytes(), rel
    m = json.loads(_read(f"{root}/out/manifest.json"))
    assert m["counts"] == json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    assert {i["path"] for i in m["inputs"]} == {f"{root}/pool/{r}" for r in (
        "chat/a.jsonl", "chat/z.jsonl.zst", "tasks/t.jsonl.gz", "tasks/count.parquet", "csv/qa.csv")}
    assert m["counts"]["records"] == 41 + 5 + 6 + 6 + 2 and m["counts"]["skipped_files"] == 1
    assert fs.isfile(f"{root}/out/report.html")
    assert "signals" in fs.listdir(f"{root}/cache")          # the signal cache lives in the bucket
    assert any(rel.endswith(".parquet") for _u, rel, _n in fs.walk_files(f"{root}/cache/signals"))
    assert sum(v["computed"] for v in m["cache"].values()) > 0

    # A rerun computes nothing: every signal comes from the bucket's cache.
    assert _select(f"{root}/pool", f"{root}/cache", f"{root}/out", "--verbose", "--log-format", "json") == 0
    log = capfd.readouterr()
    m2 = json.loads(_read(f"{root}/out/manifest.json"))
    assert m2["cache"] and all(v["computed"] == 0 for v in m2["cache"].values()), m2["cache"]
    assert _read(f"{root}/out/selected.jsonl") == (tmp_path / "out" / "selected.jsonl").read_bytes()
    blob = _read(f"{root}/out/manifest.json").decode() + log.out + log.err
    for url, _rel, _n in fs.walk_files(f"{root}/cache"):
        if url.endswith(".json"):
            blob += _read(url).decode()
    assert not [x for x in secrets if x in blob]


def test_report_and_read_on_urls(s3, tmp_path):
    local = tmp_path / "pool"
    _pool(local)
    _upload(local, f"{s3}/pool")
    assert _select(f"{s3}/pool", f"{s3}/cache", f"{s3}/out") == 0
    fs.remove(f"{s3}/out/report.html")
    assert main(["--quiet", "report", f"{s3}/out"]) == 0
    assert b"<html" in _read(f"{s3}/out/report.html")[:2000].lower()
    assert main(["--quiet", "read", f"{s3}/pool/chat/a.jsonl", "--out", f"{s3}/canonical.parquet"]) == 0
    assert fs.read_table(f"{s3}/canonical.parquet").num_rows == 41


def test_overwriting_an_s3_output_leaves_no_stale_files(s3, tmp_path):
    check_outputs_replaced_whole(s3, tmp_path)


def check_outputs_replaced_whole(root: str, tmp_path) -> None:
    """An output folder under ``root`` (a bucket URL) is replaced whole (no stale file of the last run), a
    half-published one (only ``_siftkit/``) is refused by a reader and replaced by the next run, and a folder
    of someone else's data, even one holding only subfolders, is refused."""
    local = tmp_path / "pool"
    _pool(local)
    _upload(local, f"{root}/pool")
    assert _select(f"{root}/pool", f"{root}/cache", f"{root}/out") == 0          # with report.html
    assert main(["--quiet", "select", f"{root}/pool", "--budget", "5", "--method", "random", "--cache-dir",
                 f"{root}/cache", "--out", f"{root}/out"]) == 0
    names = {rel for _u, rel, _n in fs.walk_files(f"{root}/out")}
    assert "report.html" not in names and "manifest.json" in names
    assert len(_read(f"{root}/out/selected.jsonl").splitlines()) == 5
    # A run killed while publishing (only the side folder is there): a reader refuses it, and the next
    # run recognises it as a siftkit output and replaces it.
    for rel in names - {"_siftkit/selection.parquet"}:
        fs.remove(f"{root}/out/{rel}")
    assert fs.listdir(f"{root}/out") == ["_siftkit"]
    assert main(["--quiet", "report", f"{root}/out"]) == 3
    assert main(["--quiet", "select", f"{root}/pool", "--budget", "4", "--cache-dir", f"{root}/cache",
                 "--out", f"{root}/out"]) == 0
    assert len(_read(f"{root}/out/selected.jsonl").splitlines()) == 4
    assert fs.isfile(f"{root}/out/manifest.json")
    # A folder of someone else's data, even one holding only subfolders, is not overwritten.
    fs.write_atomic(f"{root}/foreign/data/part-0.csv", b"a,b\n")
    rc = main(["--quiet", "select", f"{root}/pool", "--budget", "5", "--cache-dir", f"{root}/cache",
               "--out", f"{root}/foreign"])
    assert rc == 2 and [rel for _u, rel, _n in fs.walk_files(f"{root}/foreign")] == ["data/part-0.csv"]


def check_missing_urls(root: str, tmp_path, capfd, cache_hint: str | None = None) -> None:
    """A missing folder, object or bucket as input (exit 3), cache or output (exit 2): one-line errors that
    name the URL, no traceback. ``root``: a bucket URL of a running store (``s3://b``, ``gs://b``)."""
    scheme = root.split("://", 1)[0]
    nobucket = f"{scheme}://no-such-bucket-xyz"
    local = tmp_path / "pool"
    _pool(local)
    cases = [(["select", f"{root}/nothing-here/"], 3, f"{root}/nothing-here"),
             (["select", f"{root}/pool/missing.jsonl"], 3, f"{root}/pool/missing.jsonl"),
             (["select", f"{nobucket}/pool/a.jsonl"], 3, f"{nobucket}/pool/a.jsonl"),
             (["select", str(local), "--method", "top", "--by", "tokens_response", "--cache-dir",
               f"{nobucket}/cache"], 2, f"{nobucket}/cache"),
             (["select", str(local), "--cache-dir", str(tmp_path / "c"), "--out", f"{nobucket}/out"], 2,
              f"{nobucket}/out")]
    for args, code, url in cases:
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "o")]
        rc = main([*args[:2], "--budget", "3", *args[2:]])
        err = capfd.readouterr().err
        assert rc == code and url in err and "Traceback" not in err, (args, err)
        if "--cache-dir" in args and url.endswith("/cache") and cache_hint:
            assert cache_hint in err, err
    assert not (tmp_path / "o").exists()


def test_missing_inputs_and_buckets_name_the_url(s3, tmp_path, capfd):
    check_missing_urls(s3, tmp_path, capfd)


def test_unreachable_store_is_a_clean_error(s3, tmp_path, monkeypatch, capfd):
    with socket.socket() as s:                      # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    rc = main(["select", f"{s3}/pool", "--budget", "3", "--out", str(tmp_path / "o")])
    err = capfd.readouterr().err
    assert rc == 2 and f"{s3}/pool" in err and "cannot reach the store" in err
    assert "Traceback" not in err and SECRET not in err


def test_bad_credentials_are_a_clean_error(s3_server, monkeypatch, tmp_path, capfd):
    """moto with request signing checked (INITIAL_NO_AUTH_ACTION_COUNT=0): unknown keys are refused."""
    settings = pytest.importorskip("moto.settings")
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    rc = main(["select", f"s3://{BUCKET}/pool", "--budget", "3", "--out", str(tmp_path / "o")])
    err = capfd.readouterr().err
    assert rc == 2 and "access denied" in err and f"s3://{BUCKET}/pool" in err, err
    assert "Traceback" not in err and SECRET not in err


def test_file_urls(tmp_path):
    local = tmp_path / "pool"
    _pool(local)
    assert _select(str(local), str(tmp_path / "c1"), str(tmp_path / "o1")) == 0
    assert _select(f"file://{local}/", f"file://{tmp_path}/c2", f"file://{tmp_path}/o2") == 0
    for rel in ("selected.jsonl", "_siftkit/selection.parquet"):
        assert (tmp_path / "o1" / rel).read_bytes() == (tmp_path / "o2" / rel).read_bytes()
    assert (tmp_path / "c2" / "signals").is_dir()
    assert fs.local_path(f"file://{tmp_path}/x%20y") == f"{tmp_path}/x y"


def test_fs_helpers_on_s3(s3, tmp_path):
    fs.write_atomic(f"{s3}/d/a.parquet", pa.table({"x": [1, 2]}))
    fs.write_atomic(f"{s3}/d/sub/b.txt", b"hello")
    assert fs.exists(f"{s3}/d/a.parquet") and fs.isdir(f"{s3}/d") and not fs.exists(f"{s3}/d/zz")
    assert fs.listdir(f"{s3}/d") == ["a.parquet", "sub"]
    assert fs.glob(f"{s3}/d/**/*.txt") == [f"{s3}/d/sub/b.txt"]
    assert fs.glob(f"{s3}/d/*.txt") == []
    assert fs.read_table(f"{s3}/d/a.parquet").column("x").to_pylist() == [1, 2]
    with fs.open_input(f"{s3}/d/sub/b.txt", seekable=True) as fh:
        fh.seek(1)
        assert fh.read() == b"ello"
    p1 = fs.local_copy(f"{s3}/d/sub/b.txt")
    assert fs.read_bytes(p1) == b"hello" and fs.local_copy(f"{s3}/d/sub/b.txt") == p1
    fs.write_atomic(f"{s3}/d/sub/b.txt", b"changed!")       # another size: downloaded again
    p2 = fs.local_copy(f"{s3}/d/sub/b.txt")
    assert p2 != p1 and fs.read_bytes(p2) == b"changed!"
    fs.write_atomic(f"{s3}/d/odd name%41.txt", b"literal")   # keys are literal: no %-decoding
    assert [u for u, _r, _n in fs.walk_files(f"{s3}/d") if "odd" in u] == [f"{s3}/d/odd name%41.txt"]
    assert fs.read_bytes(f"{s3}/d/odd name%41.txt") == b"literal" and not fs.exists(f"{s3}/d/odd nameA.txt")
    fs.remove_tree(f"{s3}/d")
    assert not fs.exists(f"{s3}/d/a.parquet")
    shutil.rmtree(tmp_path / "local-cache", ignore_errors=True)


def test_vectors_cached_on_s3_match_local(s3, tmp_path):
    check_vectors_on_store(s3, tmp_path)


def check_vectors_on_store(root: str, tmp_path) -> None:
    """Embedding shards in the bucket ``root`` (the pool matrix is assembled and memory-mapped locally);
    another machine (no local download cache) reads them back: the same selection, nothing computed, no
    shard rewritten (a PUT gives an object a new modification time)."""
    pytest.importorskip("static_model")
    local = tmp_path / "pool"
    _pool(local)
    args = ["--quiet", "select", "--budget", "6", "--method", "k-center"]
    assert main([*args, str(local), "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 0
    assert main([*args, str(local), "--cache-dir", f"{root}/cache", "--out", f"{root}/out"]) == 0
    assert _read(f"{root}/out/selected.jsonl") == (tmp_path / "o" / "selected.jsonl").read_bytes()
    shards = [rel for _u, rel, _n in fs.walk_files(f"{root}/cache/vectors")]
    assert any(r.endswith(".npy") and "/shard-" in r for r in shards), shards
    assert not any("/pool-" in r for r in shards)            # the pool matrix stays on local disk
    before = {u: fs.stat_key(u) for u, _r, _n in fs.walk_files(f"{root}/cache/vectors")}
    shutil.rmtree(tmp_path / "local-cache")                 # another machine: downloads the shards again
    assert main([*args, str(local), "--cache-dir", f"{root}/cache", "--out", f"{root}/out2"]) == 0
    m = json.loads(_read(f"{root}/out2/manifest.json"))
    assert _read(f"{root}/out2/selected.jsonl") == (tmp_path / "o" / "selected.jsonl").read_bytes()
    assert all(v["computed"] == 0 for v in m["cache"].values()), m["cache"]
    assert {u: fs.stat_key(u) for u, _r, _n in fs.walk_files(f"{root}/cache/vectors")} == before


def test_remote_inputs_are_hashed_while_read(s3, tmp_path):
    """The manifest's sha256 of a remote input is the hash of its bytes, computed during the one read."""
    import hashlib

    from siftkit.io import readers as R
    from siftkit.io.pool import read_pool

    local = tmp_path / "pool"
    _pool(local)
    _upload(local, f"{s3}/pool")
    R.REMOTE_SHA256.clear()
    pool = read_pool(f"{s3}/pool")
    for f in pool.files:
        rel = f.path[len(f"{s3}/pool/"):]
        assert f.sha256 == hashlib.sha256((local / rel).read_bytes()).hexdigest(), rel
        assert f.size == (local / rel).stat().st_size
    assert not R.REMOTE_SHA256       # every hash taken during reading was used


def test_ray_engine_with_cache_on_s3_matches_local(s3, tmp_path, capfd):
    """``--engine ray`` with the pool, the cache and the output in the bucket: the workers PUT the pool's
    Arrow files to ``<cache>/_pool``, the driver and the workers memory-map local copies; the result is
    byte-identical to the local engine on local paths, and a rerun computes nothing. The local Ray instance
    is started here, after the fixture set the endpoint and the dummy credentials, which its workers
    inherit (a cluster would get them through ``ray: runtime_env: env_vars``)."""
    check_ray_on_store(s3, tmp_path, [SECRET, "AKIATESTINGKEYID0001"])


def check_ray_on_store(root: str, tmp_path, secrets: list[str]) -> None:
    """``--engine ray`` with pool, cache and output under ``root`` (a bucket URL) against the local engine on
    local paths: one Arrow file (and its side file) per data file in ``<cache>/_pool``, one local copy of
    each, byte-identical outputs, a rerun that computes nothing, no ``secrets`` in the manifests."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if ray.is_initialized():   # a Ray started before the endpoint was set would not pass it to its workers
        ray.shutdown()
    local = tmp_path / "pool"
    _pool(local)
    _upload(local, f"{root}/pool")
    assert _select(str(local), str(tmp_path / "cache"), str(tmp_path / "out")) == 0
    try:
        assert _select(f"{root}/pool", f"{root}/cache", f"{root}/out", "--engine", "ray") == 0
        pool_files = [u for u, _r, _n in fs.walk_files(f"{root}/cache/_pool")]
        arrow = sorted(u for u in pool_files if u.endswith(".arrow"))      # one per data file, and its side
        assert len(arrow) == 5 and sorted(pool_files) == sorted(arrow + [u[:-6] + ".json" for u in arrow])
        # The driver and the workers share one downloaded copy of each (one machine here).
        copies = os.listdir(fs.local_folder(f"{root}/cache", "_pool"))
        assert len(copies) == 5 and all(c.endswith(".arrow") for c in copies), copies
        for rel in ("selected.jsonl", "_siftkit/selection.parquet"):
            assert _read(f"{root}/out/{rel}") == (tmp_path / "out" / rel).read_bytes(), rel
        m = json.loads(_read(f"{root}/out/manifest.json"))
        assert m["counts"] == json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
        assert sum(v["computed"] for v in m["cache"].values()) > 0
        # The rerun (output local this time) reads every signal from the bucket's cache.
        assert _select(f"{root}/pool", f"{root}/cache", str(tmp_path / "out2"), "--engine", "ray") == 0
        m2 = json.loads((tmp_path / "out2" / "manifest.json").read_text())
        assert m2["cache"] and all(v["computed"] == 0 for v in m2["cache"].values()), m2["cache"]
        for rel in ("selected.jsonl", "_siftkit/selection.parquet"):
            assert (tmp_path / "out2" / rel).read_bytes() == (tmp_path / "out" / rel).read_bytes(), rel
        blob = _read(f"{root}/out/manifest.json").decode() + (tmp_path / "out2" / "manifest.json").read_text()
        assert not [x for x in secrets if x in blob]
    finally:
        ray.shutdown()
