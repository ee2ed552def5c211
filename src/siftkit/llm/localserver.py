"""A local OpenAI-compatible llama.cpp server for a ``.gguf`` model (``xllamacpp``, prebuilt CPU wheels).

``python -m siftkit.llm.localserver --model M.gguf --port 8080`` serves ``/v1/chat/completions`` and
``/v1/completions`` (with logprobs and JSON-schema constrained decoding) on 127.0.0.1 until killed.
``LocalServer(model, ...)`` starts that in a child process and waits until it answers (used by the tests
and ``benchmarks/bench_llm.py``); ``stop()`` / ``kill()`` end it. Needs the ``llm`` extra.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Self

from ..errors import ConfigError, MissingDependencyError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(model: str, port: int, *, parallel: int = 1, ctx: int = 4096, threads: int = 1,
          cache_prompt: bool = True) -> Any:
    try:
        import xllamacpp as xl
    except ImportError:
        raise MissingDependencyError("xllamacpp", "llm", "the local llama.cpp server") from None
    if not os.path.isfile(model):
        raise ConfigError(f"GGUF model not found: {model}")
    p = xl.CommonParams()
    p.model.path = model
    p.hostnames = ["127.0.0.1"]
    p.port = int(port)
    p.n_parallel = int(parallel)
    p.n_ctx = int(ctx) * int(parallel)      # llama.cpp splits n_ctx over the slots
    p.cpuparams.n_threads = int(threads)
    p.cpuparams_batch.n_threads = int(threads)
    p.cache_prompt = bool(cache_prompt)
    return xl.Server(p)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m siftkit.llm.localserver")
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--parallel", type=int, default=1, help="requests decoded together (server slots)")
    ap.add_argument("--ctx", type=int, default=4096, help="context tokens per slot")
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest on a busy machine")
    ap.add_argument("--no-cache-prompt", action="store_true")
    a = ap.parse_args(argv)
    server = serve(a.model, a.port, parallel=a.parallel, ctx=a.ctx, threads=a.threads,
                   cache_prompt=not a.no_cache_prompt)
    print(f"listening on {server.listening_address}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


class LocalServer:
    """A ``python -m siftkit.llm.localserver`` child process on a free 127.0.0.1 port."""

    def __init__(self, model: str, *, port: int | None = None, parallel: int = 1, ctx: int = 4096,
                 threads: int = 1, cache_prompt: bool = True, log: str | None = None):
        self.model, self.port = model, port or free_port()
        self.args = ["--parallel", str(parallel), "--ctx", str(ctx), "--threads", str(threads)]
        if not cache_prompt:
            self.args.append("--no-cache-prompt")
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LocalServer:
        import httpx

        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([sys.executable, "-m", "siftkit.llm.localserver", "--model", self.model,
                                      "--port", str(self.port), *self.args], stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited with {self.proc.returncode} (log: {self.log})")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the llama.cpp server did not answer within {timeout:.0f}s")

    def kill(self) -> None:
        """SIGKILL (a crash): nothing is flushed or closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
