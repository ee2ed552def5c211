"""On-disk response cache: every LLM answer, keyed by a hash of what was asked, stored before it is used.

One SQLite file (``<cache_dir>/llm/responses.sqlite``, WAL journal): a row per request with the key, the
answer as the server sent it (re-serialised canonically), its token counts and a tag (the fingerprint of the
signal that paid for it). Each row is committed as soon as its answer arrives, before the caller sees it, so
a run killed at any point (SIGKILL included) has paid for exactly the rows it holds and a rerun sends only
the requests that are not there. Reruns read the same bytes, so they give byte-identical results.

The key is the xxh3-128 of the canonical JSON of ``{"api", "model", "body"}``: the model name as sent, and the
whole request body (messages or prompt, temperature, seed, max_tokens, logprobs, response_format, ...).
The endpoint URL and the API key are not part of it (a server restarted on another port, or a rotated key,
still hits the cache); the API key is never stored.

Only complete, well-formed answers are stored; transport faults, HTTP errors and unparseable bodies never
are, so they are retried by the next run.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

import orjson
import xxhash

from ..errors import DiskFullError
from ..fsutil import disk_guard, free_bytes

SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, api TEXT NOT NULL, model TEXT NOT NULL, tag TEXT NOT NULL,
    response BLOB NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL)"""


def request_key(api: str, model: str, body: dict[str, Any]) -> str:
    blob = orjson.dumps({"api": api, "model": model, "body": body}, option=orjson.OPT_SORT_KEYS)
    return xxhash.xxh3_128_hexdigest(blob)


def canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


class ResponseCache:
    def __init__(self, folder: str | os.PathLike):
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.path = os.path.join(self.folder, "responses.sqlite")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: a committed row survives a process kill
        self._db.execute(SCHEMA)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def put(self, key: str, api: str, model: str, tag: str, response: dict[str, Any]) -> None:
        use = response.get("usage") or {}
        blob = canonical(response)
        with self._lock, disk_guard(self.path, len(blob)):
            try:
                self._db.execute("INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (key, api, model, tag, blob, int(use.get("prompt_tokens") or 0),
                                  int(use.get("completion_tokens") or 0), time.time()))
            except sqlite3.OperationalError as e:
                if "full" in str(e):
                    raise DiskFullError(self.path, len(blob), free_bytes(self.path), approx=True) from None
                raise

    def totals(self, tag: str | None = None) -> dict[str, int]:
        """Responses held (for one tag, or all) and the tokens they were paid with."""
        q = "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) FROM responses"
        with self._lock:
            row = self._db.execute(q + (" WHERE tag = ?" if tag else ""), (tag,) if tag else ()).fetchone()
        return {"responses": int(row[0]), "prompt_tokens": int(row[1]), "completion_tokens": int(row[2])}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"])  # type: ignore[misc]
