"""LLM usage counters taken in one process (a Ray worker) and added in another (the driver)."""

from __future__ import annotations

from siftkit.llm.usage import Usage


def test_take_resets_and_add_sums():
    w = Usage()
    w.bump("requests", 3)
    w.bump("responses", 2)
    w.tokens(100, 7)
    w.retry("timeout")
    w.fail("invalid_json")
    w.bump("wall_seconds", 0.5)
    snap = w.take()
    assert snap["requests"] == 3 and snap["prompt_tokens"] == 100 and snap["retries_by_reason"] == {"timeout": 1}
    assert w.snapshot()["requests"] == 0 and w.take()["failures"] == {}     # taken: counted once only
    d = Usage()
    d.fail("invalid_json")
    d.add(snap)
    d.add(snap)
    s = d.snapshot()
    assert (s["requests"], s["responses"], s["prompt_tokens"], s["completion_tokens"]) == (6, 4, 200, 14)
    assert s["failures"] == {"invalid_json": 3} and s["retries_by_reason"] == {"timeout": 2}
    assert s["retries"] == 2 and s["wall_seconds"] == 1.0
