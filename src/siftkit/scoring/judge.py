"""``judge``: an LLM rates each record on a rubric, through an OpenAI-compatible endpoint or vLLM offline.

Per record the judge sees, by default (``turns: last``), the last assistant turn with the user turn that
asked for it and the whole conversation before that as context; ``turns: each`` judges every (user,
assistant) pair with its own history and averages the scores per dimension (the rationale is the last
pair's). A ``target: query`` rubric shows the request only (the last user turn when there is no answer).

Columns (``prefix`` default ``judge``): ``<prefix>_<dimension>`` per rubric dimension (float; the expected
rating over the rating tokens' ``top_logprobs`` when the server returns them, DEITA's rule, else the parsed
integer), ``<prefix>_rationale`` (the judge's short reason), ``<prefix>_turns`` (pairs scored),
``<prefix>_truncated`` (a field was cut to ``max_chars``), ``<prefix>_reason`` (why a record has no score:
``no_response``, ``empty_response``, ``empty_prompt``, ``invalid_json``, ``bad_schema``, ``truncated``,
``http_<code>``). A record that fails is NaN with its reason, never a default score. An answer that does not
parse gets one repair request (``repair: true``); the reason is that of the repaired answer.

If the endpoint stays unavailable (429 / 5xx / timeouts / connection errors after ``max_retries``), the run
stops with :class:`~siftkit.errors.EndpointError` (exit 6) once the batch in flight is done; every answer
received is in the response cache (``<cache_dir>/llm``), so a rerun sends only the rest. See docs/judge.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, EndpointError
from ..llm import structured as S
from ..llm.client import Client, Endpoint
from ..llm.rubrics import Rubric, as_prompt, load_rubric, messages
from ..llm.runs import EndpointRuns
from ..registry import register_signal
from ..signals.base import Signal
from . import base as B

TURNS = ("last", "each")
BACKENDS = ("openai", "vllm")


def pick_turns(msgs: list[dict[str, str]], turns: str, target: str
               ) -> tuple[list[tuple[list[dict[str, str]], str, str | None]], str]:
    """(history, request, answer) items to judge, or ([], reason). ``query`` rubrics: the user turns (the last,
    or each) with what came before; ``pair`` rubrics: each assistant turn with the closest user turn before it."""
    if target == "query":
        items: list[tuple[list[dict[str, str]], str, str | None]] = [
            (msgs[:i], m["content"], None) for i, m in enumerate(msgs) if m["role"] == "user" and m["content"].strip()]
        if not items:
            return [], B.EMPTY_PROMPT
        return (items if turns == "each" else items[-1:]), B.OK
    items = []
    user_at = None
    for i, m in enumerate(msgs):
        if m["role"] == "user" and m["content"].strip():
            user_at = i
        elif m["role"] == "assistant" and user_at is not None:
            items.append((msgs[:user_at], msgs[user_at]["content"], m["content"]))
            user_at = None
    if not items:
        if not any(m["role"] == "user" and m["content"].strip() for m in msgs):
            return [], B.EMPTY_PROMPT
        return [], B.NO_RESPONSE
    items = items[-1:] if turns == "last" else items
    items = [it for it in items if (it[2] or "").strip()]
    if not items:
        return [], B.EMPTY_RESPONSE
    return items, B.OK


def _cut(text: str, n: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= n else (text[:n], True)


def _cut_history(hist: list[dict[str, str]], n: int) -> tuple[list[dict[str, str]], bool]:
    """The most recent turns whose contents fit ``n`` characters (the oldest dropped, one cut at its start)."""
    out, room, cut = [], n, False
    for m in reversed(hist):
        c = m["content"]
        if room <= 0:
            cut = True
            break
        if len(c) > room:
            c, cut = c[-room:], True
        out.append({"role": m["role"], "content": c})
        room -= len(c)
    return list(reversed(out)), cut


@register_signal("judge")
class Judge(EndpointRuns, Signal):
    version = "1"
    batch_size = 64          # records per compute() call; their requests are in flight together
    parallel = False         # concurrency is inside (async requests)
    shard_size = 256         # a cached part every 256 records (the response cache keeps the rest)

    def __init__(self, endpoint: str | None = None, *, model: str | None = None, rubric: Any = "alpagasus",
                 rubrics_file: str | None = None, prefix: str = "judge", turns: str = "last", api: str = "chat",
                 backend: str = "openai", structured: str = "json_schema", temperature: float = 0.0,
                 seed: int | None = 0, max_tokens: int = 256, top_logprobs: int = 5, rationale_chars: int = 200,
                 max_chars: int = 6000, repair: bool = True, api_key_env: str | None = None,
                 timeout: float = 60.0, max_retries: int = 4, backoff: float = 0.5, backoff_max: float = 30.0,
                 concurrency: int = 8, rpm: float | None = None, tpm: float | None = None,
                 price_input: float | None = None, price_output: float | None = None,
                 response_cache: str | None = None, extra_body: dict[str, Any] | None = None):
        who = "judge"
        if extra_body is not None and (not isinstance(extra_body, dict)
                                       or {"model", "messages", "prompt"} & set(extra_body)):
            raise ConfigError(f"{who}: extra_body must be a mapping of further request fields (not model, "
                              "messages or prompt)")
        self.extra_body = dict(extra_body or {})
        if backend not in BACKENDS:
            raise ConfigError(f"{who}: backend must be one of {BACKENDS}, got {backend!r}")
        if turns not in TURNS:
            raise ConfigError(f"{who}: turns must be 'last' or 'each', got {turns!r}")
        if structured not in S.MODES:
            raise ConfigError(f"{who}: structured must be one of {S.MODES}, got {structured!r}")
        if not isinstance(prefix, str) or not prefix.isidentifier():
            raise ConfigError(f"{who}: prefix must be an identifier, got {prefix!r}")
        if int(max_tokens) < 1 or int(top_logprobs) < 0 or int(rationale_chars) < 0 or int(max_chars) < 16:
            raise ConfigError(f"{who}: max_tokens >= 1, top_logprobs >= 0, rationale_chars >= 0 and "
                              "max_chars >= 16 are needed")
        if backend == "openai" and not endpoint:
            raise ConfigError(f"{who}: give endpoint=URL of an OpenAI-compatible server (e.g. "
                              "http://127.0.0.1:8080/v1), or backend=vllm with model=")
        if backend == "vllm" and not model:
            raise ConfigError(f"{who}: backend=vllm needs model= (a hub name or local folder)")
        self.rubric_obj: Rubric = load_rubric(rubric if isinstance(rubric, str) else None, rubrics_file,
                                              rubric if isinstance(rubric, dict) else None, who)
        self.ep = Endpoint(url=endpoint, model=model or "", api=api, api_key_env=api_key_env, timeout=timeout,
                           max_retries=max_retries, backoff=backoff, backoff_max=backoff_max,
                           concurrency=concurrency, rpm=rpm, tpm=tpm, price_input=price_input,
                           price_output=price_output)
        self.ep.ready(who)
        self.backend, self.prefix, self.turns, self.structured = backend, prefix, turns, structured
        self.temperature, self.seed = float(temperature), (None if seed is None else int(seed))
        self.max_tokens, self.top_logprobs = int(max_tokens), int(top_logprobs)
        self.rationale_chars, self.max_chars, self.repair = int(rationale_chars), int(max_chars), bool(repair)
        self.response_cache = response_cache
        # enough requests per compute() call to keep `concurrency` in flight between the calls' barriers
        self.batch_size = max(type(self).batch_size, 4 * int(concurrency))
        self.shard_size = max(type(self).shard_size or 0, self.batch_size)
        r = self.rubric_obj
        self.schema = S.schema(r.keys, r.lo, r.hi, self.rationale_chars)

    # ------------------------------------------------------------------ signal interface

    def requirements(self) -> dict[str, str]:
        if self.backend == "vllm":
            return {"vllm": "the vLLM judge backend", "torch": "the vLLM judge backend"}
        return {"httpx": "LLM endpoints"}

    @property
    def resources(self) -> dict[str, float]:  # type: ignore[override]
        return {"gpus": 1} if self.backend == "vllm" else {"cpus": 1}

    def config(self) -> dict[str, Any]:
        return {"model": self.ep.model, "api": self.ep.api, "backend": self.backend,
                "rubric": self.rubric_obj.as_dict(), "prefix": self.prefix, "turns": self.turns,
                "structured": self.structured, "temperature": self.temperature, "seed": self.seed,
                "max_tokens": self.max_tokens, "top_logprobs": self.top_logprobs,
                "rationale_chars": self.rationale_chars, "max_chars": self.max_chars, "repair": self.repair,
                **({"extra_body": self.extra_body} if self.extra_body else {})}

    def columns(self) -> dict[str, pa.DataType]:
        p = self.prefix
        cols = {f"{p}_{d}": pa.float64() for d in self.rubric_obj.keys}
        cols.update({f"{p}_rationale": pa.string(), f"{p}_turns": pa.int32(), f"{p}_truncated": pa.bool_(),
                     f"{p}_reason": pa.string()})
        return cols

    def client(self) -> Client:
        backend = None
        if self.backend == "vllm":
            from ..llm.vllm_offline import VLLMBackend

            backend = VLLMBackend(self.ep.model)
        return self.make_client("judge", backend)

    # ------------------------------------------------------------------ compute

    def _body(self, msgs: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            body["seed"] = self.seed
        if self.ep.api == "chat":
            body["messages"] = msgs
            if self.top_logprobs:
                body["logprobs"], body["top_logprobs"] = True, self.top_logprobs
        else:
            body["prompt"] = as_prompt(msgs)
            if self.top_logprobs:
                body["logprobs"] = self.top_logprobs
        rf = S.response_format(self.schema, self.structured)
        if rf is not None:
            body["response_format"] = rf
        body.update(self.extra_body)
        return body

    def _ask(self, client: Client, msgs_of: list[list[dict[str, str]]]
             ) -> list[tuple[dict[str, Any] | None, str, dict[str, Any] | None, str]]:
        """(parsed object or None, reason, response, text) per request, after one repair request for each
        answer that does not parse (``repair``); stops the run when the endpoint stays unavailable."""
        outs = client.complete([self._body(m) for m in msgs_of])
        self._raise_unavailable(outs)
        parsed: list[tuple[dict[str, Any] | None, str, dict[str, Any] | None, str]] = []
        for o in outs:
            if o.response is None:
                parsed.append((None, o.reason, None, ""))
                continue
            text, fin = S.answer_text(o.response)
            obj, why = S.parse(text, self.schema, fin)
            parsed.append((obj, why, o.response, text))
        if self.repair:
            redo = [k for k, p in enumerate(parsed) if p[0] is None and p[2] is not None]
            if redo:
                rbodies = []
                for k in redo:
                    m = msgs_of[k] + [{"role": "assistant", "content": parsed[k][3]},
                                      {"role": "user", "content": S.repair_message(parsed[k][1], self.schema)}]
                    rbodies.append(self._body(m))
                client.usage.bump("repairs", sum(1 for _ in redo))
                routs = client.complete(rbodies)
                self._raise_unavailable(routs)
                for k, o in zip(redo, routs):
                    if o.response is None:
                        parsed[k] = (None, o.reason, None, "")
                        continue
                    text, fin = S.answer_text(o.response)
                    obj, why = S.parse(text, self.schema, fin)
                    parsed[k] = (obj, why, o.response, text)
        return parsed

    def rate_references(self, items: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        """Rate answers against reference answers with a ``target: reference`` rubric (the bench's
        ``testset:PATH`` tasks). ``items``: (question, reference, answer). Per item: ``scores`` (dimension ->
        float on the rubric's scale, the expected rating when logprobs come back), ``reason`` ("" or why
        there is no score, as in ``compute``) and ``rationale``. The answers go through the response cache
        and this signal's usage counters (``begin_run`` / ``end_run`` as for a signal)."""
        r = self.rubric_obj
        if r.target != "reference":
            raise ConfigError(f"judge: rubric {r.name!r} has target {r.target!r}; rating against reference "
                              "answers needs a 'target: reference' rubric (e.g. correctness)")
        out: list[dict[str, Any]] = [{"scores": {}, "reason": "", "rationale": None} for _ in items]
        ask, msgs_of = [], []
        for k, (question, reference, answer) in enumerate(items):
            if not (answer or "").strip():
                out[k]["reason"] = B.EMPTY_RESPONSE
                continue
            q, _ = _cut(question, self.max_chars)
            ref, _ = _cut(reference, self.max_chars)
            ans, _ = _cut(answer, self.max_chars)
            ask.append(k)
            msgs_of.append(messages(r, [], q, ans, self.rationale_chars, reference=ref))
        client = self.client()
        for k, (obj, why, resp, text) in zip(ask, self._ask(client, msgs_of) if ask else []):
            if obj is None:
                if why and not why.startswith("http_"):
                    client.usage.fail(why)
                out[k]["reason"] = why or B.NO_RESPONSE
                continue
            ev = S.expected_scores(resp, text, r.keys, r.lo, r.hi) if self.top_logprobs else {}
            out[k]["scores"] = {d: float(obj[d]) if ev.get(d) is None else float(ev[d]) for d in r.keys}
            out[k]["rationale"] = obj.get("rationale")
        return out

    def compute(self, batch: pa.Table) -> dict[str, np.ndarray]:
        r = self.rubric_obj
        if r.target == "reference":
            raise ConfigError(f"judge: rubric {r.name!r} rates answers against reference answers (bench "
                              "testset:PATH tasks with eval.judge); records have none: use a pair or query rubric")
        convs, _ = B.conversations(batch)
        n = len(convs)
        reasons = [B.OK] * n
        owner: list[int] = []
        msgs_of: list[list[dict[str, str]]] = []
        truncated = np.zeros(n, dtype=bool)
        for i, conv in enumerate(convs):
            items, why = pick_turns(conv, self.turns, r.target)
            if why:
                reasons[i] = why
            for hist, req, ans in items:
                req, c1 = _cut(req, self.max_chars)
                ans, c2 = (None, False) if ans is None else _cut(ans, self.max_chars)
                hist, c3 = _cut_history(hist, self.max_chars)
                truncated[i] |= c1 or c2 or c3
                m = messages(r, hist, req, ans, self.rationale_chars)
                owner.append(i)
                msgs_of.append(m)
        client = self.client()
        parsed = self._ask(client, msgs_of)
        sums = {d: np.zeros(n) for d in r.keys}
        cnt = np.zeros(n, dtype=np.int64)
        rationale = np.full(n, None, dtype=object)
        first_fail = [""] * n
        for k, (obj, why, resp, text) in enumerate(parsed):
            i = owner[k]
            if obj is None:
                if why and not why.startswith("http_"):
                    client.usage.fail(why)        # http_* were counted by the client
                first_fail[i] = first_fail[i] or why
                continue
            ev = S.expected_scores(resp, text, r.keys, r.lo, r.hi) if self.top_logprobs else {}
            for d in r.keys:
                v = ev.get(d)
                sums[d][i] += float(obj[d]) if v is None else v
            cnt[i] += 1
            if "rationale" in obj:
                rationale[i] = obj["rationale"]
        for i in range(n):
            if reasons[i] == B.OK and cnt[i] == 0:
                reasons[i] = first_fail[i] or B.NO_RESPONSE
        out: dict[str, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for d in r.keys:
                out[f"{self.prefix}_{d}"] = np.where(cnt > 0, sums[d] / np.maximum(cnt, 1), math.nan)
        out[f"{self.prefix}_rationale"] = rationale
        out[f"{self.prefix}_turns"] = cnt.astype(np.int32)
        out[f"{self.prefix}_truncated"] = truncated
        out[f"{self.prefix}_reason"] = B.reasons_array(reasons)
        return out

    def _raise_unavailable(self, outs: list[Any]) -> None:
        bad = [o.reason for o in outs if o.reason.startswith("unavailable:")]
        if bad:
            kinds = ", ".join(f"{k}: {bad.count(k)}" for k in sorted(set(bad)))
            ep = self.current().ep
            raise EndpointError(f"judge: {len(bad)} of {len(outs)} request(s) to {ep.url or 'vLLM'} failed "
                                f"after {ep.max_retries} retries ({kinds}); the {len(outs) - len(bad)} "
                                f"answer(s) received are cached in {self.cache_folder()}: rerun to resume")
