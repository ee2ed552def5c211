"""LLM services against a real local llama.cpp server (xllamacpp) serving the offline SmolLM2 GGUF.

The server starts once per session on a free 127.0.0.1 port. Requests are tiny (a few records, max_tokens
<= 48) so the whole file stays near a minute on two busy cores.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_jsonl
from llm_helpers import FaultProxy
from scoring_tiny import msgs, pool_table
from siftkit.errors import ConfigError, EndpointError
from siftkit.llm import structured as S
from siftkit.llm.client import Endpoint, retry_after
from siftkit.llm.rubrics import builtin_rubrics, load_rubric
from siftkit.signals.compute import build_signal, compute_signals

pytest.importorskip("httpx")
SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = {"max_tokens": 40, "rationale_chars": 30}      # short answers: a request takes about a second


# the session-scoped `gguf` and `server` fixtures are in conftest.py (one server for every LLM test file)


def _records(n: int) -> list[dict]:
    qa = [("What is 2+2?", "4"), ("Name a primary colour.", "Red."), ("Translate 'cat' to French.", "chat"),
          ("Give an antonym of hot.", "cold"), ("What is the capital of Italy?", "Rome."),
          ("Write a haiku about rain.", "asdf qwer"), ("Spell 'dog' backwards.", "god"),
          ("Is 7 prime?", "Yes, 7 is prime.")]
    return [{"instruction": q, "input": "", "output": a} for q, a in qa[:n]]


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    return subprocess.run([sys.executable, "-m", "siftkit.cli", *args], check=False, capture_output=True, text=True, env=e,
                          **kw)


def _select_args(pool: Path, url: str, out: Path, cache: Path, budget: int = 3, *extra: str) -> list[str]:
    args = ["select", str(pool), "--preset", "alpagasus", "--param", f"endpoint={url}", "--budget", str(budget),
            "--out", str(out), "--cache-dir", str(cache), "--param", "min_value=0"]
    for k, v in FAST.items():
        args += ["--param", f"{k}={v}"]
    return args + list(extra)


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != "manifest.json"}


def _cached(cache: Path) -> int:
    db = cache / "llm" / "responses.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return int(c.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    except sqlite3.Error:
        return 0


# ---------------------------------------------------------------- pure pieces (no server)

def test_parse_reasons_and_scale():
    sch = S.schema(["overall"], 0, 5, 40)
    assert S.parse('{"overall": 4, "rationale": "ok"}', sch) == ({"overall": 4, "rationale": "ok"}, "")
    assert S.parse('```json\n{"overall": 3, "rationale": ""}\n```', sch)[1] == ""
    assert S.parse('{"overall": 4, "rationale": "o', sch, "length") == (None, S.TRUNCATED)
    assert S.parse('{"overall": 4, "rationale": "o', sch, "stop") == (None, S.INVALID_JSON)
    assert S.parse("[4]", sch) == (None, S.INVALID_JSON)
    assert S.parse('{"overall": 6, "rationale": "x"}', sch) == (None, S.BAD_SCHEMA)      # outside the scale
    assert S.parse('{"overall": "4", "rationale": "x"}', sch) == (None, S.BAD_SCHEMA)
    assert S.parse('{"overall": 4.5, "rationale": "x"}', sch) == (None, S.BAD_SCHEMA)
    assert S.parse('{"rationale": "x"}', sch) == (None, S.BAD_SCHEMA)


def test_expected_score_from_top_logprobs():
    text = '{"overall": 4, "rationale": "x"}'
    toks = ['{"', 'overall', '":', ' ', '4', ',', ' "', 'rationale', '":', ' "', 'x', '"}']
    assert "".join(toks) == text
    content = [{"token": t, "top_logprobs": [{"token": t, "logprob": 0.0}]} for t in toks]
    content[4]["top_logprobs"] = [{"token": "4", "logprob": math.log(0.5)}, {"token": "5", "logprob": math.log(0.3)},
                                  {"token": "x", "logprob": math.log(0.1)}, {"token": "9", "logprob": math.log(0.1)}]
    resp = {"choices": [{"message": {"content": text}, "logprobs": {"content": content}}]}
    ev = S.expected_scores(resp, text, ["overall"], 0, 5)
    assert ev["overall"] == pytest.approx((4 * 0.5 + 5 * 0.3) / 0.8)   # '9' is off the scale, 'x' no rating
    content[10]["token"] = "\ufffd"        # a garbled (split multi-byte) token after the score: still aligned
    assert S.expected_scores(resp, text, ["overall"], 0, 5)["overall"] == pytest.approx(ev["overall"])
    resp["choices"][0].pop("logprobs")
    assert S.expected_scores(resp, text, ["overall"], 0, 5) == {"overall": None}


def test_retry_after_and_endpoint_checks(monkeypatch):
    assert retry_after("2") == 2.0 and retry_after(None) is None and retry_after("soon") is None
    assert retry_after("100000") == 300.0
    assert 0 <= retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))) <= 4
    with pytest.raises(ConfigError, match="http"):
        Endpoint(url="127.0.0.1:8080").check("judge")
    monkeypatch.delenv("SIFTKIT_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="SIFTKIT_NO_SUCH_KEY"):
        Endpoint(url="http://127.0.0.1:9/v1", api_key_env="SIFTKIT_NO_SUCH_KEY").api_key("judge")


def test_rate_limit_bucket_holds_requests_back():
    import asyncio

    from siftkit.llm.client import _Bucket

    async def go() -> tuple[float, float]:
        b = _Bucket(600)                 # 600 per minute: a minute's worth at once, then 10 per second
        t0 = time.monotonic()
        await b.take(600)
        t1 = time.monotonic()
        await b.take(5)
        return t1 - t0, time.monotonic() - t1

    burst, wait = asyncio.run(go())
    assert burst < 0.1 and 0.4 <= wait < 1.5


def test_rubrics_builtin_and_override(tmp_path):
    names = set(builtin_rubrics())
    assert {"alpagasus", "deita", "question", "answer"} <= names
    assert load_rubric("question").keys == ["clarity", "difficulty", "meaningfulness"]
    assert load_rubric("answer").keys == ["correctness", "completeness", "helpfulness", "relevance"]
    assert load_rubric("deita").keys == ["complexity", "quality"] and load_rubric("deita").lo == 1
    f = tmp_path / "r.yaml"
    f.write_text("mine:\n  target: query\n  scale: [1, 3]\n  system: s\n  task: t\n  dimensions: {fun: how fun}\n")
    assert load_rubric("mine", str(f)).keys == ["fun"]
    with pytest.raises(ConfigError, match="unknown rubric 'nope'"):
        load_rubric("nope")
    with pytest.raises(ConfigError, match="scale"):
        load_rubric(None, inline={"scale": [3, 1], "system": "s", "task": "t", "dimensions": {"a": "b"}})


def test_judge_needs_httpx_cleanly(monkeypatch):
    from siftkit.preflight import MissingExtraError, check_signals

    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingExtraError, match=r"httpx.*siftkit\[llm\]"):
        check_signals([{"name": "judge", "endpoint": "http://127.0.0.1:9/v1", "model": "m"}])


def test_vllm_backend_is_a_clean_error_without_vllm():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    from siftkit.errors import MissingDependencyError
    from siftkit.preflight import MissingExtraError, check_signals

    spec = {"name": "judge", "backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct"}
    with pytest.raises(MissingExtraError, match=r"needs vllm \(the vLLM judge backend\): pip install vllm"):
        check_signals([spec])
    with pytest.raises(MissingDependencyError, match="vllm is needed for the vLLM judge backend"):
        build_signal(spec).compute(pool_table([msgs(("user", "a"), ("assistant", "b"))]))


# ---------------------------------------------------------------- against the real server

def test_judge_signal_scores_rubrics_and_reasons(server, tmp_path):
    pool = pool_table([msgs(("user", "What is 2+2?"), ("assistant", "4")),
                       msgs(("user", "Say hi."), ("assistant", "   ")),
                       msgs(("user", "Only a question, no answer")),
                       msgs(("user", "Hi"), ("assistant", "Hello!"), ("user", "Name a fruit."), ("assistant", "Apple"))])
    stats: dict = {}
    spec = {"name": "judge", "endpoint": server.url, **FAST}
    t = compute_signals(pool, [spec], str(tmp_path / "c"), stats=stats)
    assert t.column("judge_reason").to_pylist() == ["", "empty_response", "no_response", ""]
    v = np.asarray(t.column("judge_overall").to_pylist(), dtype=float)
    assert np.isfinite(v[[0, 3]]).all() and np.isnan(v[[1, 2]]).all()
    assert ((0 <= v[[0, 3]]) & (v[[0, 3]] <= 5)).all()
    # expected value over rating tokens: generally not a whole number
    assert any(abs(x - round(x)) > 1e-6 for x in v[[0, 3]])
    u = stats["judge"]["usage"]
    assert u["requests"] == u["responses"] >= 2 and u["retries"] == 0      # no faults: every request answered
    assert u["cache_hits"] == 0 and u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    assert u["cached_responses"]["responses"] == u["responses"]
    # a question-only rubric: the unanswered record is judged too, one column per dimension
    t2 = compute_signals(pool.slice(2, 1), [{"name": "judge", "endpoint": server.url, "rubric": "question",
                                             "prefix": "q", **FAST, "rationale_chars": 0}], str(tmp_path / "c"))
    assert {"q_clarity", "q_difficulty", "q_meaningfulness", "q_rationale"} <= set(t2.column_names)
    assert t2.column("q_reason").to_pylist() == [""]
    assert all(1 <= t2.column(f"q_{d}")[0].as_py() <= 5 for d in ("clarity", "difficulty", "meaningfulness"))
    # every turn: both pairs of the multi-turn record are judged, the score is their mean
    short = {"max_tokens": 24, "rationale_chars": 0}
    t3 = compute_signals(pool.slice(3, 1), [{"name": "judge", "endpoint": server.url, "turns": "each",
                                             "prefix": "e", **short}], str(tmp_path / "c"))
    assert t3.column("e_turns").to_pylist() == [2] and t3.column("e_reason").to_pylist() == [""]
    # /v1/completions: llama.cpp ignores response_format there; its own json_schema field via extra_body
    t4 = compute_signals(pool.slice(0, 1), [{"name": "judge", "endpoint": server.url, "api": "completions",
                                             "prefix": "c", "structured": "none", **short,
                                             "extra_body": {"json_schema": S.schema(["overall"], 0, 5, 0)}}],
                         str(tmp_path / "c"))
    assert t4.column("c_reason").to_pylist() == [""] and 0 <= t4.column("c_overall")[0].as_py() <= 5


def test_fault_proxy_retries_reasons_and_counts(server, tmp_path):
    upstream = server.url[: -len("/v1")]
    with FaultProxy(upstream, hang=5.5) as proxy:
        spec = {"name": "judge", "endpoint": proxy.url, "model": "smol", "concurrency": 1, "max_retries": 5,
                "backoff": 0.05, "backoff_max": 0.1, "timeout": 5.0, "max_tokens": 24, "rationale_chars": 0}
        # (short answers, so that a real request under load stays well inside the 5 s timeout)
        sig = build_signal(spec)
        pool = pool_table([msgs(("user", "What is 2+2?"), ("assistant", "4"))])
        sig.begin_run(str(tmp_path / "c"))
        # five retryable faults, then the real answer
        proxy.queue("429", "500", "timeout", "truncated", "malformed")
        t0 = time.perf_counter()
        out = sig.compute(pool)
        assert time.perf_counter() - t0 >= 1.0                       # Retry-After: 1 was honoured
        assert out["judge_reason"].tolist() == [""] and np.isfinite(out["judge_overall"]).all()
        u = sig.end_run()
        assert u["retries_by_reason"] == {"bad_body": 2, "rate_limited": 1, "server_error": 1, "timeout": 1}
        assert u["requests"] == 6 == proxy.received and u["responses"] == 1 and proxy.forwarded == 2
        assert u["failures"] == {} and u["cached_responses"]["responses"] == 1

        # a dropped body is a connection fault; a 400 fails that record without a retry
        sig.begin_run(str(tmp_path / "c"))
        proxy.reset_counts()
        proxy.queue("cut", "400")
        two = pool_table([msgs(("user", "Name a colour."), ("assistant", "Blue"))])
        out = sig.compute(two)
        u = sig.end_run()
        assert out["judge_reason"].tolist() == ["http_400"] and np.isnan(out["judge_overall"]).all()
        assert u["retries_by_reason"] == {"connection": 1} and u["failures"] == {"http_400": 1}
        assert u["requests"] == 2 == proxy.received and u["responses"] == 0

        # wrong schema: one repair request; if the repair is wrong too, NaN with the reason, counted once
        sig.begin_run(str(tmp_path / "c"))
        proxy.reset_counts()
        proxy.queue("wrong_schema", "wrong_schema")
        three = pool_table([msgs(("user", "Is 7 prime?"), ("assistant", "Yes"))])
        out = sig.compute(three)
        u = sig.end_run()
        assert out["judge_reason"].tolist() == ["bad_schema"] and np.isnan(out["judge_overall"]).all()
        assert u["repairs"] == 1 and u["requests"] == 2 and u["failures"] == {"bad_schema": 1}
        assert u["retries"] == 0
        # rerun: the (well-formed) answers are cached, so nothing is sent and the result is the same
        sig.begin_run(str(tmp_path / "c"))
        proxy.reset_counts()
        again = sig.compute(three)
        assert proxy.received == 0 and again["judge_reason"].tolist() == ["bad_schema"]
        assert sig.end_run()["cache_hits"] == 2

        # unavailable after every retry: EndpointError once the batch is done; the other answer is cached
        sig2 = build_signal({**spec, "max_retries": 2, "seed": 1})
        sig2.begin_run(str(tmp_path / "c"))
        proxy.reset_counts()
        proxy.queue("500", "500", "500")
        both = pool_table([msgs(("user", "Give an antonym of hot."), ("assistant", "cold")),
                           msgs(("user", "Spell dog backwards."), ("assistant", "god"))])
        with pytest.raises(EndpointError, match=r"1 of 2 request\(s\).*server_error: 1.*rerun"):
            sig2.compute(both)
        u = sig2.end_run()
        assert u["failures"] == {"unavailable:server_error": 1} and u["retries"] == 2 and u["responses"] == 1
        sig2.begin_run(str(tmp_path / "c"))
        proxy.reset_counts()
        out = sig2.compute(both)
        assert proxy.received == 1 and (out["judge_reason"] == "").all()     # only the missing one is sent
        u = sig2.end_run()
        assert u["cache_hits"] == 1 and u["requests"] == 1


def test_api_key_never_written(server, tmp_path):
    secret = "sk-siftkit-test-0123456789abcdef"
    pool = write_jsonl(tmp_path / "pool.jsonl", _records(2))
    out, cache = tmp_path / "out", tmp_path / "cache"
    r = _cli(*_select_args(pool, server.url, out, cache, 1, "--param", "api_key_env=SIFTKIT_TEST_KEY",
                           "--param", "price_input=0.15", "--param", "price_output=0.6"),
             env={"SIFTKIT_TEST_KEY": secret}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert secret not in r.stderr + r.stdout
    for p in [*out.rglob("*"), *cache.rglob("*")]:
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
    m = json.loads((out / "manifest.json").read_text())
    u = m["usage"]["judge"]
    assert u["cost"] == pytest.approx(u["prompt_tokens"] * 0.15e-6 + u["completion_tokens"] * 0.6e-6, abs=1e-6)
    assert m["signals"]["judge"]["config"]["model"].endswith(".gguf")
    assert "api_key_env" not in json.dumps(m["signals"]["judge"]["config"])


def test_cli_alpagasus_end_to_end_and_rerun_identical(server, tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", _records(5))
    cache = tmp_path / "cache"
    r = _cli(*_select_args(pool, server.url, tmp_path / "o1", cache), timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "o1" / "manifest.json").read_text())
    assert m["counts"]["selected"] == 3
    u = m["usage"]["judge"]
    assert u["cache_hits"] == 0 and u["responses"] + sum(u["failures"].values()) >= 5
    assert u["cached_responses"]["responses"] == u["responses"]
    assert m["steps"][-1]["params"] == {"by": "judge_overall", "min_value": 0.0}
    # rerun with the signal cache gone: every answer from the response cache, byte-identical output
    import shutil

    shutil.rmtree(cache / "signals")
    r2 = _cli(*_select_args(pool, server.url, tmp_path / "o2", cache), timeout=300)
    assert r2.returncode == 0, r2.stderr
    u2 = json.loads((tmp_path / "o2" / "manifest.json").read_text())["usage"]["judge"]
    assert u2["requests"] == 0 and u2["cache_hits"] == u["responses"]
    assert _outputs(tmp_path / "o1") == _outputs(tmp_path / "o2")
    # the default threshold (4.5) from a 135M judge: the step reports the records below it
    r3 = _cli("select", str(pool), "--preset", "alpagasus", "--param", f"endpoint={server.url}", "--budget", "2",
              "--out", str(tmp_path / "o3"), "--cache-dir", str(cache),
              *[a for k, v in FAST.items() for a in ("--param", f"{k}={v}")], timeout=300)
    if r3.returncode == 0:
        st = json.loads((tmp_path / "o3" / "manifest.json").read_text())["steps"][-1]
        assert st["params"]["min_value"] == 4.5
    else:
        assert r3.returncode == 4 and "left no records" in r3.stderr


def test_kill9_client_and_server_then_resume_identical(gguf, server, tmp_path):
    """SIGKILL the siftkit run mid-way (rerun resumes from the cache), and SIGKILL the server mid-way (the run
    stops with exit 6, the rerun against the restarted server completes); outputs are byte-identical to a
    run made purely from the cache."""
    from siftkit.llm.localserver import LocalServer

    pool = write_jsonl(tmp_path / "pool.jsonl", _records(6))
    cache = tmp_path / "cache"
    extra = ("--param", "model=smol", "--param", "concurrency=1", "--param", "repair=false", "--param", "max_retries=1",
             "--param", "backoff=0.1")
    own = LocalServer(gguf, log=str(tmp_path / "own.log")).start()
    try:
        # 1. kill -9 the client after two answers are cached
        p = subprocess.Popen([sys.executable, "-m", "siftkit.cli",
                              *_select_args(pool, own.url, tmp_path / "o1", cache, 3, *extra)],
                             env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _cached(cache) < 2 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        p.kill()
        p.wait()
        first = _cached(cache)
        assert 2 <= first < 6
        # 2. rerun; kill -9 the server once one more answer is in: the run fails cleanly with exit 6
        p = subprocess.Popen([sys.executable, "-m", "siftkit.cli",
                              *_select_args(pool, own.url, tmp_path / "o1", cache, 3, *extra, "--overwrite")],
                             env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        while _cached(cache) < first + 1 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        own.kill()
        err = p.communicate(timeout=120)[1]
        second = _cached(cache)
        if second < 6:       # the server died before the last answer: exit 6, nothing lost
            assert p.returncode == 6, err
            assert "rerun to resume" in err
        # 3. restart the server, rerun: completes, sending only what is missing
        own.start()
        r = _cli(*_select_args(pool, own.url, tmp_path / "o1", cache, 3, *extra, "--overwrite"), timeout=300)
        assert r.returncode == 0, r.stderr
        u = json.loads((tmp_path / "o1" / "manifest.json").read_text())["usage"]["judge"]
        assert u["responses"] == 6 - second and _cached(cache) == 6
    finally:
        own.stop()
    # 4. from the cache alone (signals gone, endpoint down): byte-identical output, nothing sent
    import shutil

    shutil.rmtree(cache / "signals")
    r = _cli(*_select_args(pool, own.url, tmp_path / "o2", cache, 3, *extra), timeout=300)
    assert r.returncode == 0, r.stderr
    u = json.loads((tmp_path / "o2" / "manifest.json").read_text())["usage"]["judge"]
    assert u["requests"] == 0 and u["cache_hits"] == 6
    assert _outputs(tmp_path / "o1") == _outputs(tmp_path / "o2")


def test_instag_through_the_endpoint(server, tmp_path):
    pool = pool_table([msgs(("user", "Write a python function that adds two numbers."), ("assistant", "def f(a, b): ...")),
                       msgs(("assistant", "no user turn"))])
    stats: dict = {}
    t = compute_signals(pool, [{"name": "instag", "endpoint": server.url, "max_new_tokens": 24}],
                        str(tmp_path / "c"), stats=stats)
    reasons = t.column("instag_reason").to_pylist()
    assert reasons[1] == "empty_prompt"
    assert reasons[0] in ("", "invalid_json", "bad_schema", "truncated")
    assert math.isfinite(t.column("instag_count")[0].as_py()) == (reasons[0] == "")
    u = stats["instag"]["usage"]
    assert u["requests"] == 1 == u["responses"] and u["failures"] == ({reasons[0]: 1} if reasons[0] else {})


def test_presets_need_an_endpoint_and_carry_judge_params():
    from siftkit.presets import expand_preset

    with pytest.raises(ConfigError, match="endpoint"):
        expand_preset({"preset": "alpagasus"}, "recipe")
    d = expand_preset({"preset": {"name": "judge-kmeans", "endpoint": "http://127.0.0.1:9/v1", "model": "m",
                                  "rubric": "deita", "k": 5, "by": "judge_quality"}}, "recipe")
    assert d["signals"] == [{"name": "judge", "endpoint": "http://127.0.0.1:9/v1", "model": "m", "rubric": "deita"}]
    assert d["steps"][-1] == {"select": "kmeans", "by": "judge_quality", "within": "top", "quota": "proportional",
                              "k": 5}
    a = expand_preset({"preset": {"name": "alpagasus", "endpoint": "http://127.0.0.1:9/v1", "min_value": 4}}, "r")
    assert a["steps"][-1] == {"select": "top", "by": "judge_overall", "min_value": 4}


def test_a_second_run_uses_its_own_endpoint_not_the_engines_earlier_copy(server, tmp_path):
    """The engine keeps one live copy per fingerprint; URL and limits are not in it, so a later run with the
    same judge at another URL must still send there (here: a dead port first, then the real server)."""
    from siftkit.llm.localserver import free_port

    pool = pool_table([msgs(("user", "Name a month."), ("assistant", "May"))])
    short = {"model": "smol-2", "max_tokens": 24, "rationale_chars": 0, "max_retries": 0}
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError, match=r"unavailable:connection|connection: 1"):
        compute_signals(pool, [{"name": "judge", "endpoint": dead, **short}], str(tmp_path / "c"))
    t = compute_signals(pool, [{"name": "judge", "endpoint": server.url, **short}], str(tmp_path / "c"))
    assert t.column("judge_reason").to_pylist() == [""]
