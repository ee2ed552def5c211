"""One client for OpenAI-compatible servers (``/v1/chat/completions``, ``/v1/completions``), built on httpx.

Works with vLLM ``serve``, SGLang, llama.cpp's server, TGI and hosted APIs. ``Client.complete(bodies)`` sends
many request bodies at once (asyncio, at most ``concurrency`` in flight), each answered from the response
cache when it holds it, else sent and stored in the cache *before* it is returned.

Faults and what happens (the reason codes are counted in ``Usage``):

====================================  ===================  ==================================================
what the server did                   reason               then
====================================  ===================  ==================================================
HTTP 429                              ``rate_limited``     retried after ``Retry-After`` (seconds or a date) if
                                                           sent, else exponential backoff with jitter
HTTP 5xx                              ``server_error``     retried (``Retry-After`` honoured too)
no answer within ``timeout``          ``timeout``          retried
connection refused / reset / cut      ``connection``       retried (a body cut short of its Content-Length too)
HTTP 200, body not JSON or no choice  ``bad_body``         retried (truncated or malformed JSON bodies)
HTTP 401 / 403 / 404                  -                    :class:`EndpointError` at once (key, URL or model)
other HTTP 4xx (e.g. 400 too long)    ``http_<code>``      that request fails (not retried, not cached)
still failing after ``max_retries``   ``unavailable:<r>``  that request fails (not cached); the judge then
                                                           stops the run with EndpointError (exit 6)
====================================  ===================  ==================================================

Backoff before retry ``i`` (0-based): ``min(backoff_max, backoff * 2**i) * uniform(0.5, 1.0)``. Optional
``rpm`` / ``tpm`` limits (requests / tokens per minute, tokens estimated as characters / 4 + max_tokens)
hold requests back in a token bucket. The API key is read from the environment variable named by
``api_key_env`` when the client is made; only the variable's *name* is ever part of a config, and the key
is never written to a cache, manifest, log or error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from .. import progress
from ..errors import ConfigError, EndpointError, MissingDependencyError
from .cache import ResponseCache, request_key
from .usage import Usage

APIS = {"chat": "/chat/completions", "completions": "/completions"}
RETRYABLE = ("rate_limited", "server_error", "timeout", "connection", "bad_body")
RETRY_AFTER_MAX = 300.0


@dataclass
class Endpoint:
    """Where and how to send requests (everything here but the URL and the key name changes answers only
    through ``model``)."""

    url: str | None = None            # base URL, e.g. http://127.0.0.1:8080/v1
    model: str = ""
    api: str = "chat"                 # "chat" or "completions"
    api_key_env: str | None = None    # the NAME of the variable holding the key
    timeout: float = 60.0             # seconds per request
    max_retries: int = 4
    backoff: float = 0.5              # seconds, doubled per retry
    backoff_max: float = 30.0
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    price_input: float | None = None   # per 1M prompt tokens
    price_output: float | None = None  # per 1M completion tokens

    def ready(self, who: str, need_url: bool = False) -> Endpoint:
        """Check the settings and, when no model is named, take the first one the server lists (one
        ``GET /models`` per URL and process). ``need_url``: a missing endpoint URL is a config error."""
        self.check(who)
        if need_url and not self.url:
            raise ConfigError(f"{who}: give endpoint=URL of an OpenAI-compatible server "
                              f"(e.g. http://127.0.0.1:8080/v1)")
        if not self.model and self.url:
            self.model = first_model(self.url, self.api_key(who))
        return self

    def check(self, who: str) -> None:
        if self.api not in APIS:
            raise ConfigError(f"{who}: api must be 'chat' or 'completions', got {self.api!r}")
        if self.url is not None and not (isinstance(self.url, str) and self.url.startswith(("http://", "https://"))):
            raise ConfigError(f"{who}: endpoint must be an http(s) URL such as http://127.0.0.1:8080/v1, "
                              f"got {self.url!r}")
        for k in ("timeout", "backoff", "backoff_max"):
            if not float(getattr(self, k)) > 0:
                raise ConfigError(f"{who}: {k} must be positive")
        if int(self.max_retries) < 0 or int(self.concurrency) < 1:
            raise ConfigError(f"{who}: max_retries must be >= 0 and concurrency >= 1")
        for k in ("rpm", "tpm", "price_input", "price_output"):
            v = getattr(self, k)
            if v is not None and not float(v) >= 0:
                raise ConfigError(f"{who}: {k} must be a non-negative number")
        if self.api_key_env is not None and not (isinstance(self.api_key_env, str) and self.api_key_env.strip()):
            raise ConfigError(f"{who}: api_key_env must name an environment variable")

    def public(self) -> dict[str, Any]:
        return asdict(self)

    def api_key(self, who: str) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"{who}: the environment variable {self.api_key_env} (api_key_env) is not set")
        return key


@dataclass
class Outcome:
    response: dict[str, Any] | None    # the server's JSON answer (None on failure)
    reason: str = ""                   # "" or a reason code (see the table above)
    cached: bool = False


def require_httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise MissingDependencyError("httpx", "llm", "LLM endpoints") from None
    return httpx


_MODELS: dict[str, str] = {}


def first_model(url: str, api_key: str | None = None, timeout: float = 10.0) -> str:
    """The first model id the server lists at ``GET {url}/models`` (remembered per URL)."""
    if url in _MODELS:
        return _MODELS[url]
    httpx = require_httpx()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(url.rstrip("/") + "/models", headers=headers, timeout=timeout)
        r.raise_for_status()
        data = r.json().get("data") or []
        model = str(data[0]["id"])
    except Exception as e:  # noqa: BLE001 - any failure means: name the model yourself
        raise ConfigError(f"no model given and none could be listed at {url}/models ({type(e).__name__}); "
                          f"give model=NAME") from None
    _MODELS[url] = model
    return model


class _Bucket:
    """Token bucket refilled at ``per_minute / 60`` per second (capacity one minute's worth)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, float(per_minute))
        self.level = self.capacity
        self.t = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n: float) -> None:
        n = min(float(n), self.capacity)
        async with self.lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
                self.t = now
                if self.level >= n:
                    self.level -= n
                    return
                await asyncio.sleep((n - self.level) / self.rate)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), capped at 300."""
    if not value:
        return None
    try:
        return min(RETRY_AFTER_MAX, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(RETRY_AFTER_MAX, max(0.0, when.timestamp() - time.time()))


def backoff_delay(ep: Endpoint, attempt: int, rng: random.Random) -> float:
    return min(ep.backoff_max, ep.backoff * (2 ** attempt)) * rng.uniform(0.5, 1.0)


def _well_formed(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    ch = data.get("choices")
    if not isinstance(ch, list) or not ch or not isinstance(ch[0], dict):
        return False
    c = ch[0]
    if isinstance(c.get("message"), dict):
        return isinstance(c["message"].get("content"), str)
    return isinstance(c.get("text"), str)


class Client:
    """Cached, retried, rate-limited requests to one endpoint (or one in-process vLLM engine)."""

    def __init__(self, ep: Endpoint, cache: ResponseCache | None, usage: Usage, *, tag: str = "",
                 who: str = "llm", backend: Any = None):
        ep.check(who)
        self.ep, self.cache, self.usage, self.tag, self.who = ep, cache, usage, tag, who
        self.backend = backend      # an object with .complete(bodies) -> responses (vLLM offline), or None
        if backend is None:
            if not ep.url:
                raise ConfigError(f"{who}: give endpoint=URL (an OpenAI-compatible server), or backend=vllm")
            self._key = ep.api_key(who)
        else:
            self._key = None
        self._rng = random.Random(0x5EED)

    def key_of(self, body: dict[str, Any]) -> str:
        return request_key(self.ep.api, self.ep.model, body)

    def complete(self, bodies: Sequence[dict[str, Any]]) -> list[Outcome]:
        """Answers for ``bodies`` (request bodies without ``model``), in order. Identical bodies are sent once
        (the copies count as cache hits)."""
        t0 = time.perf_counter()
        out: list[Outcome | None] = [None] * len(bodies)
        todo: list[int] = []
        first: dict[str, int] = {}        # identical requests in one call are sent once
        same: list[tuple[int, int]] = []
        for i, b in enumerate(bodies):
            key = self.key_of(b)
            if key in first:
                same.append((i, first[key]))
                continue
            first[key] = i
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                out[i] = Outcome(hit, "", True)
            else:
                todo.append(i)
        self.usage.bump("cache_hits", len(bodies) - len(todo))
        try:
            if todo:
                if self.backend is not None:
                    got = self._complete_backend([bodies[i] for i in todo])
                else:
                    got = _run_async(self._complete_http([bodies[i] for i in todo]))
                for i, o in zip(todo, got):
                    out[i] = o
        finally:
            self.usage.bump("wall_seconds", time.perf_counter() - t0)
        for i, j in same:
            o = out[j]
            assert o is not None
            out[i] = Outcome(o.response, o.reason, True)
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ storing

    def _store(self, body: dict[str, Any], data: dict[str, Any]) -> Outcome:
        if self.cache is not None:     # committed before anyone uses the answer
            self.cache.put(self.key_of(body), self.ep.api, self.ep.model, self.tag, data)
        use = data.get("usage") or {}
        self.usage.tokens(int(use.get("prompt_tokens") or 0), int(use.get("completion_tokens") or 0))
        self.usage.bump("responses")
        return Outcome(data, "", False)

    def _complete_backend(self, bodies: list[dict[str, Any]]) -> list[Outcome]:
        self.usage.bump("requests", len(bodies))
        return [self._store(b, d) for b, d in zip(bodies, self.backend.complete(bodies))]

    # ------------------------------------------------------------------ HTTP

    async def _complete_http(self, bodies: list[dict[str, Any]]) -> list[Outcome]:
        httpx = require_httpx()
        ep = self.ep
        sem = asyncio.Semaphore(int(ep.concurrency))
        rpm = _Bucket(ep.rpm) if ep.rpm else None
        tpm = _Bucket(ep.tpm) if ep.tpm else None
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        limits = httpx.Limits(max_connections=int(ep.concurrency), max_keepalive_connections=int(ep.concurrency))
        async with httpx.AsyncClient(base_url=ep.url.rstrip("/"), headers=headers, limits=limits,
                                     timeout=httpx.Timeout(float(ep.timeout))) as http:
            async def one(body: dict[str, Any]) -> Outcome:
                async with sem:
                    return await self._send(http, httpx, body, rpm, tpm)

            return list(await asyncio.gather(*(one(b) for b in bodies)))

    async def _send(self, http: Any, httpx: Any, body: dict[str, Any], rpm: _Bucket | None,
                    tpm: _Bucket | None) -> Outcome:
        ep = self.ep
        payload = orjson.dumps({"model": ep.model, **body})
        est = len(payload) / 4 + int(body.get("max_tokens") or 0)
        path = APIS[ep.api]
        for attempt in range(int(ep.max_retries) + 1):
            if rpm is not None:
                await rpm.take(1)
            if tpm is not None:
                await tpm.take(est)
            self.usage.bump("requests")
            wait: float | None = None
            try:
                r = await http.post(path, content=payload)
            except httpx.TimeoutException:
                fault = "timeout"
            except httpx.TransportError:
                fault = "connection"
            else:
                code = r.status_code
                if code == 200:
                    try:
                        data = orjson.loads(r.content)
                    except orjson.JSONDecodeError:
                        data = None
                    if _well_formed(data):
                        return self._store(body, data)
                    fault = "bad_body"
                elif code == 429:
                    fault, wait = "rate_limited", retry_after(r.headers.get("retry-after"))
                elif code >= 500:
                    fault, wait = "server_error", retry_after(r.headers.get("retry-after"))
                elif code in (401, 403):
                    raise EndpointError(f"{self.who}: {ep.url} refused the request (HTTP {code}): check the key "
                                        f"in ${ep.api_key_env}" if ep.api_key_env else
                                        f"{self.who}: {ep.url} refused the request (HTTP {code}): it needs an API "
                                        f"key (set api_key_env to the variable that holds it)")
                elif code == 404:
                    raise EndpointError(f"{self.who}: {ep.url}{path} answered 404 (wrong URL, api, or model "
                                        f"{ep.model!r})")
                else:
                    reason = f"http_{code}"
                    self.usage.fail(reason)
                    return Outcome(None, reason)
            if attempt == int(ep.max_retries):
                reason = f"unavailable:{fault}"
                self.usage.fail(reason)
                return Outcome(None, reason)
            self.usage.retry(fault)
            delay = wait if wait is not None else backoff_delay(ep, attempt, self._rng)
            progress.debug(f"{self.who}: {fault}, retry {attempt + 1}/{ep.max_retries} in {delay:.2f}s")
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _run_async(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also when an event loop already runs (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]
