"""What an LLM signal cost: requests, retries, failures by reason, tokens, wall time and money.

One :class:`Usage` per signal fingerprint and process (``usage_for(key)``): every client that works for that
signal adds to it, and ``siftkit.signals.compute`` reports it in the manifest (``usage``). Counters are of
*this run*; the response cache adds what earlier (also killed) runs paid for (``ResponseCache.totals``).

Counters:

- ``requests``: HTTP requests sent (first tries, retries and repair requests); ``cache_hits``: requests answered
  from the response cache (not sent, not paid);
- ``retries`` / ``retries_by_reason``: requests sent again after a retryable fault (``rate_limited``,
  ``server_error``, ``timeout``, ``connection``, ``bad_body``);
- ``failures``: requests or records that ended without a usable answer, by reason code (``invalid_json``,
  ``bad_schema``, ``truncated``, ``http_400``, ``unavailable:<fault>``, ...);
- ``repairs``: repair requests sent after an answer that did not parse;
- ``prompt_tokens`` / ``completion_tokens``: as the server reported them in ``usage`` (paid requests only);
- ``wall_seconds``: time spent inside the client; ``cost``: tokens x the configured prices per 1M tokens.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Usage:
    requests: int = 0
    cache_hits: int = 0
    responses: int = 0
    retries: int = 0
    retries_by_reason: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    repairs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def retry(self, reason: str) -> None:
        with self._lock:
            self.retries += 1
            self.retries_by_reason[reason] = self.retries_by_reason.get(reason, 0) + 1

    def fail(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.failures[reason] = self.failures.get(reason, 0) + n

    def tokens(self, prompt: int, completion: int) -> None:
        with self._lock:
            self.prompt_tokens += int(prompt)
            self.completion_tokens += int(completion)

    def bump(self, name: str, n: float = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "cache_hits": self.cache_hits, "responses": self.responses,
                    "retries": self.retries, "retries_by_reason": dict(sorted(self.retries_by_reason.items())),
                    "failures": dict(sorted(self.failures.items())), "repairs": self.repairs,
                    "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                    "wall_seconds": round(self.wall_seconds, 3)}

    def take(self) -> dict[str, Any]:
        """``snapshot()`` and ``reset()`` at once: what was counted since the last take (a Ray worker sends
        this with each shard's done record; the driver adds it to its own counters with ``add``)."""
        with self._lock:
            snap = {"requests": self.requests, "cache_hits": self.cache_hits, "responses": self.responses,
                    "retries": self.retries, "retries_by_reason": dict(self.retries_by_reason),
                    "failures": dict(self.failures), "repairs": self.repairs,
                    "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                    "wall_seconds": self.wall_seconds}
            self.requests = self.cache_hits = self.responses = self.retries = self.repairs = 0
            self.prompt_tokens = self.completion_tokens = 0
            self.wall_seconds = 0.0
            self.retries_by_reason, self.failures = {}, {}
        return snap

    def add(self, snap: dict[str, Any]) -> None:
        """Add counters taken elsewhere (``take()`` in a worker process) to these."""
        with self._lock:
            for k in ("requests", "cache_hits", "responses", "retries", "repairs", "prompt_tokens",
                      "completion_tokens", "wall_seconds"):
                setattr(self, k, getattr(self, k) + snap.get(k, 0))
            for k in ("retries_by_reason", "failures"):
                mine = getattr(self, k)
                for reason, n in (snap.get(k) or {}).items():
                    mine[reason] = mine.get(reason, 0) + n

    def reset(self) -> None:
        with self._lock:
            self.requests = self.cache_hits = self.responses = self.retries = self.repairs = 0
            self.prompt_tokens = self.completion_tokens = 0
            self.wall_seconds = 0.0
            self.retries_by_reason, self.failures = {}, {}


def cost(prompt_tokens: int, completion_tokens: int, price_input: float | None,
         price_output: float | None) -> float | None:
    """Dollars (or whatever unit the prices are in) for the tokens at prices per 1M tokens; None if unpriced."""
    if price_input is None and price_output is None:
        return None
    return round(prompt_tokens * (price_input or 0.0) / 1e6 + completion_tokens * (price_output or 0.0) / 1e6, 6)


_USAGE: dict[str, Usage] = {}
_LOCK = threading.Lock()


def usage_for(key: str) -> Usage:
    """The process-wide usage counters of one signal (by fingerprint)."""
    with _LOCK:
        if key not in _USAGE:
            _USAGE[key] = Usage()
        return _USAGE[key]
