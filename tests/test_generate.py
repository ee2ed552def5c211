"""siftkit evolve: elimination rules on hand-made answers (a pre-filled response cache, no server), and the
whole command against the real local llama.cpp server (the session fixture of conftest.py), with the fault
proxy, every output format, lineage and reruns from the cache."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from llm_helpers import FaultProxy
from siftkit.errors import ConfigError, EndpointError
from siftkit.generate import EvolveConfig, eliminate, evolve, load_prompts
from siftkit.generate.evolve import _Evolver, _rewrite_prompt
from siftkit.llm.cache import ResponseCache, request_key

SRC = str(Path(__file__).resolve().parents[1] / "src")
TW = load_prompts()["template_words"]
DEAD = "http://127.0.0.1:9/v1"      # nothing listens: every answer must come from the cache


def _lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


# ---------------------------------------------------------------- the rules, one by one

@pytest.mark.parametrize("parent,text,stage,fin,why", [
    ("Name a colour.", "   ", "instruction", "stop", "empty"),
    ("Name a colour.", "Name a colour that is the colour of a ripe tomato and", "instruction", "length",
     "truncated"),
    ("Name a colour.", "the, of ... and!", "instruction", "stop", "stopwords"),
    ("Name a colour.", "?!", "answer", "stop", "stopwords"),
    ("Name a colour.", "Rewritten task: name a colour of the sky at dusk.", "instruction", "stop",
     "template_copied"),
    ("Name a colour.", "Sorry, I cannot help with that request.", "answer", "stop", "could_not_answer"),
    ("Name a colour.", "Name " + "a very long colour " * 30, "instruction", "stop", "length"),
    ("Name a colour.", "Hue", "answer", "stop", "length"),
    ("Name a colour.", "name a COLOUR", "instruction", "stop", "no_gain"),
    ("Name a colour of the sky.", "Name the sky.", "instruction", "stop", "no_gain"),
    ("Name a colour.", "Name a colour and explain why painters mix it from two others.", "instruction",
     "stop", ""),
    ("Name a colour.", "Red.", "answer", "stop", ""),            # an answer needs no gain over its request
])
def test_each_elimination_rule(parent, text, stage, fin, why):
    lim = {"min_chars": 4, "max_chars": 200} if stage == "answer" else {"min_chars": 8, "max_chars": 200}
    assert eliminate(parent, text, stage=stage, template_words=TW, finish_reason=fin, **lim) == why


def test_template_words_in_the_parent_are_not_a_copy_and_refusal_kept_if_long():
    p = "Explain what a rewritten task is in a data set."
    assert eliminate(p, "Explain what a rewritten task is in a data set, with two examples.", stage="instruction",
                     template_words=TW) == ""
    long_sorry = "Sorry is a word; " + "here is a detailed history of apologies in letters " * 10
    assert eliminate("Write about the word sorry.", long_sorry, stage="answer", template_words=TW,
                     max_chars=10_000) == ""


def test_prompts_override_and_bad_prompts(tmp_path):
    p = load_prompts()
    assert {"constraints", "deepen", "concretise", "reasoning", "complicate_input", "breadth",
            "improve_response"} <= set(p["operations"])
    f = tmp_path / "p.yaml"
    f.write_text("system: Be terse.\noperations:\n  shorten:\n    kind: instruction\n    template: 'Shorter: {instruction}'\n")
    q = load_prompts(str(f))
    assert q["system"] == "Be terse." and "shorten" in q["operations"] and "deepen" in q["operations"]
    f.write_text("operations:\n  bad:\n    kind: response\n    template: 'no response slot {instruction}'\n")
    with pytest.raises(ConfigError, match=r"bad.*\{response\}"):
        load_prompts(str(f))
    with pytest.raises(ConfigError, match="unknown instruction operation 'nope'"):
        evolve([], str(tmp_path / "o"), endpoint=DEAD, model="m", operations=["nope"], cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="format must be one of"):
        evolve([], str(tmp_path / "o"), format="original", endpoint=DEAD, model="m")


# ---------------------------------------------------------------- the pipeline on hand-made answers

def _answer(text: str, finish: str = "stop") -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}


def test_pipeline_reasons_from_a_prefilled_cache(tmp_path):
    seeds = {   # seed instruction -> (hand-made rewrite, its finish, hand-made answer of the rewrite or None)
        "Name a colour.": ("Name a colour found in autumn leaves and say why it appears.", "stop",
                           "Orange: chlorophyll breaks down and carotenoids show."),
        "Add 2 and 3.": ("", "stop", None),
        "Spell cat.": ("Spell cat backwards, then forwards, and count", "length", None),
        "Say hi.": ("... the and of", "stop", None),
        "Name a fruit.": ("Original task: name a fruit that is yellow.", "stop", None),
        "List a tool.": ("Sorry, I cannot rewrite this.", "stop", None),
        "Name a city.": ("Name a city " + "with many old bridges " * 20, "stop", None),
        "Name a tree.": ("Oak.", "stop", None),                        # under min_chars: length
        "Name a dog.": ("name a DOG", "stop", None),
        "Name a bird.": ("Name a bird that cannot fly and explain how it defends itself.", "stop",
                         "Sorry, I can't answer that."),
    }
    pool = write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": q, "input": "", "output": "x"} for q in seeds])
    cache_dir = tmp_path / "cache"
    params = {"endpoint": DEAD, "model": "m", "operations": ["deepen"], "max_chars": 150, "max_retries": 0,
              "timeout": 2.0}
    ev = _Evolver(EvolveConfig(**params), str(cache_dir))
    from siftkit.io.pool import read_pool

    table = read_pool(str(pool)).table
    ids = table.column("id").to_pylist()
    rc = ResponseCache(cache_dir / "llm")
    P = ev.prompts
    for rid, (q, (rw, fin, ans)) in zip(ids, seeds.items()):
        node = {"instruction": q, "response": "x"}
        b = ev.body(P["system"], _rewrite_prompt(P, "deepen", node), f"{rid}-r1")
        rc.put(request_key("chat", "m", b), "chat", "m", "t", _answer(rw, fin))
        if ans is not None:
            b2 = ev.body(P["answer_system"], rw, f"{rid}-r1/answer")
            rc.put(request_key("chat", "m", b2), "chat", "m", "t", _answer(ans))
    rc.close()
    out = tmp_path / "out"
    m = evolve(str(pool), str(out), cache_dir=str(cache_dir), **params)
    r1 = m["counts"]["rounds"][0]
    assert r1["attempted"] == 10 and r1["kept"] == 1
    assert r1["eliminated"] == {"instruction": {"empty": 1, "truncated": 1, "stopwords": 1, "template_copied": 1,
                                                "could_not_answer": 1, "length": 2, "no_gain": 1},
                                "answer": {"could_not_answer": 1}}
    assert m["usage"]["requests"] == 0 and m["usage"]["cache_hits"] == 12
    rows = _lines(out / "evolved.jsonl")
    assert len(rows) == 11 and m["counts"]["written"] == 11 and m["counts"]["evolved"] == 1
    child = next(r for r in rows if r["round"] == 1)
    assert child["operation"] == "deepen" and child["root_id"] == child["parent_id"] == ids[0]
    assert child["messages"][1]["content"].startswith("Orange")
    elim = _lines(out / "_siftkit" / "eliminated.jsonl")
    assert sorted(e["reason"] for e in elim) == sorted(["empty", "truncated", "stopwords", "template_copied",
                                                        "could_not_answer", "length", "length", "no_gain",
                                                        "could_not_answer"])
    assert all(e["root_id"] in ids and e["round"] == 1 for e in elim)
    # a request the cache does not hold goes to the (dead) endpoint: the run stops, exit 6 in the CLI
    with pytest.raises(EndpointError, match="rerun to resume"):
        evolve(str(pool), str(tmp_path / "out2"), cache_dir=str(cache_dir), **{**params, "seed": 1})


# ---------------------------------------------------------------- against the real local server

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siftkit.cli", *args], check=False, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": SRC})


def test_evolve_real_server_rounds_lineage_formats_rerun(server, tmp_path):
    pool = write_jsonl(tmp_path / "seeds.jsonl", [
        {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
        {"instruction": "What is the capital of Italy?", "input": "", "output": "Rome."}])
    cache = tmp_path / "cache"
    with FaultProxy(server.url[: -len("/v1")]) as proxy:
        proxy.queue("400")        # the first rewrite request is refused: request_failed, not retried
        args = ["evolve", str(pool), "--endpoint", proxy.url, "--rounds", "2", "--max-tokens", "40",
                "--cache-dir", str(cache), "--out", str(tmp_path / "a"), "--seed", "3", "-q"]
        r = _cli(*args)
        assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    rows = _lines(tmp_path / "a" / "evolved.jsonl")
    c = m["counts"]
    for rd in c["rounds"]:
        assert rd["attempted"] == 2
        assert rd["kept"] + sum(sum(v.values()) for v in rd["eliminated"].values()) == 2
    assert c["rounds"][0]["eliminated"]["instruction"].get("request_failed") == 1
    assert c["written"] == len(rows) == 2 + c["rounds"][0]["kept"] + c["rounds"][1]["kept"]
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        assert set(r) >= {"id", "messages", "root_id", "parent_id", "round", "operation"}
        if r["round"] == 0:
            assert r["operation"] == "seed" and r["parent_id"] is None
        else:
            assert r["parent_id"] in by_id and by_id[r["parent_id"]]["round"] < r["round"]
            assert by_id[r["root_id"]]["round"] == 0 and r["operation"] in m["config"]["operations"]
            assert r["messages"][0]["role"] == "user" and r["messages"][1]["content"]
    # every attempt (2 chains x 2 rounds) is either a written record or an eliminated one
    assert (len(rows) - 2) + len(_lines(tmp_path / "a" / "_siftkit" / "eliminated.jsonl")) == 4
    # rerun (Python API, straight to the server) with the other formats: everything from the cache
    for fmt, ff in (("messages", "jsonl"), ("sharegpt", "jsonl"), ("alpaca", "jsonl"), ("messages", "parquet")):
        out = tmp_path / f"b-{fmt}-{ff}"
        m2 = evolve(str(pool), str(out), format=fmt, file_format=ff, cache_dir=str(cache), endpoint=server.url,
                    rounds=2, max_tokens=40, seed=3)
        if c["rounds"][0]["eliminated"]["instruction"].get("request_failed"):
            # the refused request was not cached: the rerun asks the server for it, the rest are hits
            assert m2["usage"]["requests"] <= 3
        if fmt == "messages" and ff == "jsonl":
            third = evolve(str(pool), str(tmp_path / "c"), cache_dir=str(cache), endpoint=server.url, rounds=2,
                           max_tokens=40, seed=3)
            assert third["usage"]["requests"] == 0           # a full rerun sends nothing
            assert (tmp_path / "c" / "evolved.jsonl").read_bytes() == (out / "evolved.jsonl").read_bytes()
        if ff == "parquet":
            t = pq.read_table(out / "evolved.parquet")
            assert {"root_id", "parent_id", "round", "operation"} <= set(t.column_names)
        else:
            got = _lines(out / "evolved.jsonl")
            key = {"messages": "messages", "sharegpt": "conversations", "alpaca": "instruction"}[fmt]
            assert all(key in g and "root_id" in g for g in got)


def test_evolve_recipe_and_response_target(server, tmp_path):
    pool = write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Give an antonym of hot.", "input": "",
                                                   "output": "cold"}])
    rec = tmp_path / "r.yaml"
    rec.write_text(f"inputs: [seeds.jsonl]\noutput: {{dir: out, format: sharegpt}}\ncache_dir: cache\n"
                   f"evolve: {{endpoint: '{server.url}', target: response, rounds: 1, max_tokens: 40}}\n")
    import siftkit

    m = siftkit.evolve(recipe=str(rec))
    assert m["config"]["operations"] == ["improve_response"] and m["outputs"]["format"] == "sharegpt"
    rows = _lines(tmp_path / "out" / "evolved.jsonl")
    assert len(rows) == 1 + m["counts"]["rounds"][0]["kept"]
    for r in rows[1:]:   # a response evolution keeps the instruction and rewrites the answer
        assert r["conversations"][0]["value"] == "Give an antonym of hot." and r["operation"] == "improve_response"
    assert pool.exists()


# ---------------------------------------------------------------- the DEITA scorer pipeline

def test_parse_scores_reasons():
    from siftkit.generate.scorer import parse_scores

    assert parse_scores('{"scores": [1, 6, 3]}', 3) == ([1, 6, 3], "")
    assert parse_scores("not json", 3) == (None, "invalid_json")
    assert parse_scores('{"scores": [1, 6]}', 3) == (None, "bad_schema")
    assert parse_scores('{"scores": [1, 7, 2]}', 3) == (None, "bad_schema")
    assert parse_scores('{"scores": [1, true, 2]}', 3) == (None, "bad_schema")


def test_deita_scorer_pipeline_end_to_end(server, tmp_path):
    """evolve -> one ranking call per seed -> (prompt, score) pairs -> train-scorer -> the deita signal loads
    the trained scorer by path. A tiny random LM is the base (mechanics, not quality)."""
    from scoring_tiny import build_tiny_lm, msgs, pool_table
    from siftkit.generate.scorer import rank_variants, train_scorer

    assert callable(rank_variants)
    from siftkit.signals.compute import compute_signals

    pool = write_jsonl(tmp_path / "seeds.jsonl", [
        {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
        {"instruction": "Give an antonym of hot.", "input": "", "output": "cold"}])
    cache = str(tmp_path / "cache")
    evolve(str(pool), str(tmp_path / "ev"), cache_dir=cache, endpoint=server.url, rounds=1, max_tokens=40)
    r = _cli("rank-variants", str(tmp_path / "ev" / "evolved.jsonl"), "--out", str(tmp_path / "rank"),
             "--endpoint", server.url, "--cache-dir", cache, "--max-tokens", "40", "-q")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "rank" / "manifest.json").read_text())
    c = m["counts"]
    assert c["groups"] == 2 and c["groups_kept"] + sum(c["groups_failed"].values()) == 2
    assert m["usage"]["requests"] == 2                 # one call per seed, every variant in it
    pairs = _lines(tmp_path / "rank" / "pairs.jsonl")
    assert len(pairs) == c["pairs"] and all(1 <= p["score"] <= 6 for p in pairs)
    assert pairs and {p["root_id"] for p in pairs} <= {r["root_id"] for r in _lines(tmp_path / "ev" / "evolved.jsonl")}
    base = build_tiny_lm(tmp_path / "base")
    info = train_scorer(str(tmp_path / "rank" / "pairs.jsonl"), str(base), str(tmp_path / "scorer"),
                        train={"epochs": 1, "batch_size": 2, "micro_batch_size": 2, "max_length": 256,
                               "lr": 1e-3}, device="cpu")
    assert info["pairs"] == len(pairs) and info["steps"] >= 1
    t = compute_signals(pool_table([msgs(("user", "Name a colour."), ("assistant", "Red."))]),
                        [{"name": "deita", "complexity_model": str(tmp_path / "scorer"),
                          "quality_model": str(tmp_path / "scorer"), "device": "cpu"}],
                        cache_dir=str(tmp_path / "sig"))
    v = t.column("deita_complexity").to_pylist()[0]
    assert 1.0 <= v <= 6.0
    # the rerun of the ranking comes from the cache
    m2 = rank_variants(str(tmp_path / "ev" / "evolved.jsonl"), str(tmp_path / "rank2"), endpoint=server.url,
                       cache_dir=cache, max_tokens=40)
    assert m2["usage"]["requests"] == 0
    assert (tmp_path / "rank2" / "pairs.jsonl").read_bytes() == (tmp_path / "rank" / "pairs.jsonl").read_bytes()
    # bad pairs are a config error naming the line (before any model is loaded)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "x", "response": "y", "score": 9}])
    r = _cli("train-scorer", str(bad), "--base-model", str(base), "--out", str(tmp_path / "s2"), "-q")
    assert r.returncode == 2 and "bad.jsonl:1: score must be an integer 1-6" in r.stderr


# ---------------------------------------------------------------- siftkit testset

def test_testset_documents_chunks_relations_and_filters(tmp_path):
    from siftkit.errors import InputDataError
    from siftkit.generate import testset as T

    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.md").write_text("# Tides\n\nTides are caused by the gravity of the moon and the sun.\n\n"
                            "Spring tides happen when the sun and moon line up.")
    (d / "b.html").write_text("<html><style>x{}</style><body><p>The moon's gravity pulls the oceans.</p>"
                              "<p>Neap tides are weaker.</p></body></html>")
    (d / "c.jsonl").write_text('{"text": "Volcanoes erupt when magma rises."}\n')
    (d / "d.bin").write_bytes(b"\x00")
    docs, skipped = T.read_documents([str(d)])
    assert [x["id"].rsplit("/", 1)[-1] for x in docs] == ["a.md", "b.html", "c.jsonl:1"]
    assert "style" not in docs[1]["text"] and "x{}" not in docs[1]["text"] and "Neap" in docs[1]["text"]
    assert skipped == {"unsupported_extension": 1}
    (d / "e.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(InputDataError, match=r"e.jsonl:1 \(field 'text'\)"):
        T.read_documents([str(d)])
    assert T.chunk("p1 " * 10 + "\n\n" + "p2 " * 10, chunk_chars=40, min_chars=5) == ["p1 " * 9 + "p1", "p2 " * 9 + "p2"]
    rel = T.relate([docs[0]["text"], docs[1]["text"], docs[2]["text"]])
    assert rel[0][0] == 1 and "moon" in rel[0][1] and rel[2][0] is None     # volcanoes share nothing
    # the filters, on hand-made answers
    assert T.question_reason("  ?? ") == "empty"
    assert T.question_reason("What causes the tides on", finish_reason="length") == "truncated"
    assert T.question_reason("Tides?") == "length"
    assert T.question_reason("Why tides " * 35 + "?", max_question_words=60) == "length"
    assert T.question_reason("What causes spring tides?") == ""
    assert T.question_reason("Spring tides are caused by the moon.") == "not_a_question"
    assert T.evolution_reason("What causes tides?", "what causes TIDES ?") == "no_evolution"
    assert T.evolution_reason("What causes tides?", "If the moon vanished, what would cause tides?") == ""
    assert T.extract_question("Question: What causes spring tides?\nThey happen when the sun") == \
        ("What causes spring tides?", True)
    assert T.question_reason("What causes spring tides? They happen when", finish_reason="length") == ""
    assert T.answer_reason("What causes tides?", "NOT IN CONTEXT") == "no_ground_truth"
    assert T.answer_reason("Do the moon and sun cause tides?", "The moon and the sun.") == "answer_leak"
    assert T.answer_reason("What causes tides?", "The gravity of the moon and sun.") == ""
    assert T.critic_verdict('{"answerable": true}') and not T.critic_verdict('{"answerable": false}')
    assert not T.critic_verdict("yes")
    assert T.near_duplicates(["What causes spring tides in the sea?", "What causes spring tides in the sea ?",
                              "Why do volcanoes erupt?"]) == [False, True, False]
    picks = Counter(T._pick({"simple": 1, "multi_context": 3}, f"c{i}", 0) for i in range(400))
    assert set(picks) == {"simple", "multi_context"} and 0.65 < picks["multi_context"] / 400 < 0.85
    with pytest.raises(ConfigError, match="mix"):
        T.testset([str(d)], str(tmp_path / "o"), endpoint=DEAD, model="m", mix={"hard": 1})


def test_testset_real_server_kinds_lineage_manifest_rerun(server, tmp_path):
    docs = Path(__file__).resolve().parents[1] / "docs"
    args = ["testset", str(docs / "generate.md"), str(docs / "judge.md"), "--endpoint", server.url,
            "--max-chunks", "2", "--max-tokens", "32", "--cache-dir", str(tmp_path / "cache"),
            "--mix", "simple=1,reasoning=1,conditional=1,multi_context=1,conversational=1", "-q"]
    with FaultProxy(server.url[: -len("/v1")]) as proxy:   # a refused request: request_failed, not cached
        proxy.queue("400")
        one = ["testset", str(docs / "judge.md"), "--endpoint", proxy.url, "--max-chunks", "1", "--mix", "simple=1",
               "--cache-dir", str(tmp_path / "cache-f"), "--out", str(tmp_path / "f"), "-q"]
        r = _cli(*one)
        assert r.returncode == 0, r.stderr
        assert proxy.received == 1
    mf = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert mf["counts"]["dropped_by_reason"] == {"request_failed": 1} and mf["usage"]["failures"] == {"http_400": 1}
    r = _cli(*args, "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    c = m["counts"]
    assert c["chunks"] == 2 and c["kept"] + c["dropped"] == 2
    assert sum(c["dropped_by_reason"].values()) == c["dropped"]
    assert set(c["dropped_by_reason"]) <= {"request_failed", "empty", "truncated", "length", "no_context",
                                          "not_a_question", "no_evolution",
                                          "no_ground_truth", "answer_leak", "not_answerable", "near_duplicate"}
    rows = _lines(tmp_path / "a" / "testset.jsonl")
    assert len(rows) == c["kept"]
    for q in rows:
        assert q["question"] and q["ground_truth"] and q["contexts"] and q["kind"] in c["planned_by_kind"]
        assert len(q["contexts"]) == (2 if q["kind"] == "multi_context" else 1)
        assert q["chunk_id"] == q["context_ids"][0]
    r2 = _cli(*args, "--out", str(tmp_path / "b"))
    assert r2.returncode == 0, r2.stderr
    m2 = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m2["usage"]["requests"] == 0
    assert (tmp_path / "b" / "testset.jsonl").read_bytes() == (tmp_path / "a" / "testset.jsonl").read_bytes()


def test_bench_testset_task(tmp_path):
    from scoring_tiny import build_tiny_lm
    from siftkit.bench.evals import testset as BT
    from siftkit.bench.evals.common import EvalModel

    assert BT.token_f1("The Moon and the sun", "the moon") == pytest.approx(2 * 0.4 * 1.0 / 1.4)
    assert BT.token_f1("", "") == 1.0 and BT.token_f1("x", "y") == 0.0
    path = write_jsonl(tmp_path / "testset.jsonl", [
        {"id": "q1", "question": "What pulls the oceans?", "contexts": ["The moon's gravity pulls the oceans."],
         "ground_truth": "The moon's gravity.", "kind": "simple"},
        {"id": "q2", "question": "Which tides are weaker?", "contexts": ["Neap tides are weaker."],
         "ground_truth": "Neap tides.", "kind": "reasoning"}])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q"}])
    with pytest.raises(ConfigError, match="bad.jsonl:1: a test-set item needs 'contexts'"):
        BT.load_path(str(bad), {}, "testset:x")
    items = BT.load_path(str(path), {"limits": {}}, f"testset:{path}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_lm(tmp_path / "m")
    em = EvalModel(AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), "chat",
                   "cpu", batch_size=2)
    score, recs = BT.run(em, items, {"max_new_tokens": {"testset": 8}})
    assert len(recs) == 2 and {r["kind"] for r in recs} == {"simple", "reasoning"}
    assert score == pytest.approx(sum(r["f1"] for r in recs) / 2)
    from siftkit.bench.config import _eval

    assert _eval({"tasks": [f"testset:{path}", "heldout"]}, "b.yaml")["tasks"][0] == f"testset:{path}"
    with pytest.raises(ConfigError, match="no such file"):
        _eval({"tasks": [f"testset:{tmp_path / 'none.jsonl'}"]}, "b.yaml")
    from siftkit.bench.config import load_bench_config

    (tmp_path / "b.yaml").write_text("pool: {inputs: [p.jsonl]}\nbudget: 2\nbase_model: m\n"
                                     "methods: {r: {steps: [{select: random}]}}\n"
                                     "eval: {tasks: ['testset:testset.jsonl']}\n")   # relative to the config
    assert load_bench_config(str(tmp_path / "b.yaml")).eval["tasks"] == [f"testset:{path}"]


# ---------------------------------------------------------------- the bench's judge against the ground truth

def _judge_answer(obj: dict) -> dict:
    return _answer(json.dumps(obj))


def test_judge_rates_against_references_from_a_prefilled_cache(tmp_path):
    """Hand-made judge answers in the response cache: a rating, one that does not parse (then its repair
    request, also hand-made, still bad), an empty output (never sent); reasons, 0-1 scaling, usage."""
    from siftkit.bench.evals import testset as BT
    from siftkit.llm.rubrics import messages
    from siftkit.scoring.judge import Judge

    settings = {"endpoint": DEAD, "model": "m", "max_retries": 0, "timeout": 2.0, "top_logprobs": 0}
    recs = [{"question": "What pulls the oceans?", "ground_truth": "The moon's gravity.", "output": "The moon.",
             "kind": "simple", "f1": 0.5},
            {"question": "Which tides are weaker?", "ground_truth": "Neap tides.", "output": "Spring tides.",
             "kind": "reasoning", "f1": 0.5},
            {"question": "Why?", "ground_truth": "Because.", "output": "  ", "kind": "simple", "f1": 0.0}]
    j = Judge(**{**BT.JUDGE_DEFAULTS, **settings})
    rc = ResponseCache(tmp_path / "cache" / "llm")
    r = j.rubric_obj
    m0 = messages(r, [], recs[0]["question"], recs[0]["output"], j.rationale_chars, reference=recs[0]["ground_truth"])
    assert "<reference_answer>\nThe moon's gravity.\n</reference_answer>" in m0[1]["content"]
    rc.put(request_key("chat", "m", j._body(m0)), "chat", "m", "t",
           _judge_answer({"correctness": 4, "rationale": "right body, no gravity"}))
    m1 = messages(r, [], recs[1]["question"], recs[1]["output"], j.rationale_chars, reference=recs[1]["ground_truth"])
    rc.put(request_key("chat", "m", j._body(m1)), "chat", "m", "t", _answer("it is wrong"))
    from siftkit.llm import structured as S

    _, why = S.parse("it is wrong", j.schema, "stop")
    m1r = m1 + [{"role": "assistant", "content": "it is wrong"},
                {"role": "user", "content": S.repair_message(why, j.schema)}]
    rc.put(request_key("chat", "m", j._body(m1r)), "chat", "m", "t", _judge_answer({"correctness": 9}))
    rc.close()
    score, usage = BT.judge(recs, settings, str(tmp_path / "cache"))
    assert recs[0]["judge"] == 4.0 and recs[0]["judge_reason"] == "" and "gravity" in recs[0]["judge_rationale"]
    assert recs[1]["judge"] is None and recs[1]["judge_reason"] == "bad_schema"      # 9 is off the 1-5 scale
    assert recs[2]["judge"] is None and recs[2]["judge_reason"] == "empty_response"
    assert score == pytest.approx((4 - 1) / 4)
    assert usage["requests"] == 0 and usage["cache_hits"] == 3 and usage["repairs"] == 1
    assert usage["rated"] == 1 and usage["failed_by_reason"] == {"bad_schema": 1, "empty_response": 1}
    kinds = BT.by_kind(recs, usage["scale"])
    assert kinds["simple"] == {"n": 2, "f1": 0.25, "judge": 0.75, "judged": 1}
    assert kinds["reasoning"]["judge"] is None and kinds["reasoning"]["judged"] == 0
    # a pair rubric cannot rate against a reference; a reference rubric is no record signal
    with pytest.raises(ConfigError, match="target: reference"):
        Judge(**{**settings, "rubric": "answer"}).rate_references([("q", "r", "a")])
    from siftkit.bench.config import _eval

    with pytest.raises(ConfigError, match=r"eval.judge.rubric: 'alpagasus' has target 'pair'"):
        _eval({"tasks": [f"testset:{__file__}"], "judge": {"endpoint": DEAD, "rubric": "alpagasus"}}, "b.yaml")
    with pytest.raises(ConfigError, match=r"eval.judge: unknown key\(s\) \['url'\]"):
        _eval({"tasks": [f"testset:{__file__}"], "judge": {"url": DEAD}}, "b.yaml")
    with pytest.raises(ConfigError, match="eval.judge.endpoint is required"):
        _eval({"tasks": [f"testset:{__file__}"], "judge": {"model": "m"}}, "b.yaml")
    with pytest.raises(ConfigError, match="eval.tasks has none"):
        _eval({"tasks": ["heldout"], "judge": {"endpoint": DEAD}}, "b.yaml")


def test_bench_testset_judge_per_kind_tables_and_resume(server, tmp_path):
    """A small bench with a test-set task judged by the real local server: both scores per cell, the per-kind
    table (kind x method, items, runs, U test where there are enough items) in results and report; a cell
    rerun (through a proxy on another port: the fingerprint ignores the URL) sends no judge request."""
    from bench_helpers import config, write_pool
    from scoring_tiny import build_tiny_lm
    from siftkit.bench.config import build_bench_config
    from siftkit.bench.runner import run_bench

    items = [{"id": f"s{i}", "question": f"What is item {i} made of?", "contexts": [f"Item {i} is made of clay."],
              "ground_truth": "Clay.", "kind": "simple"} for i in range(5)]
    items.append({"id": "r0", "question": "If the moon vanished, which tides would remain?",
                  "contexts": ["The sun also raises tides, weaker than the moon's."], "ground_truth": "Solar tides.",
                  "kind": "reasoning"})
    ts_path = write_jsonl(tmp_path / "testset.jsonl", items)
    task = f"testset:{ts_path}"
    raw = config(tmp_path, build_tiny_lm(tmp_path / "model"), write_pool(tmp_path / "pool"), tmp_path,
                 eval={"tasks": [task], "max_new_tokens": {"testset": 6}, "batch_size": 4,
                       "judge": {"endpoint": server.url, "max_tokens": 48, "rationale_chars": 40}},
                 random_seeds=2)
    res = run_bench(build_bench_config(raw))
    b = res["budgets"]["8"]
    assert b["columns"] == [task, task + "#judge", "average"] and b["average_of"] == [task]
    out = Path(raw["output"])
    done = json.loads((out / "budget-8" / "longest" / "seed-0" / "done.json").read_text())
    js = done["scores"][task + "#judge"]
    assert math.isnan(js) or 0.0 <= js <= 1.0                 # NaN only when no rating parsed
    u = done["info"]["judge_usage"][task]
    assert u["rated"] + u["failed"] == 6 and u["requests"] + u["cache_hits"] >= 6
    recs = _lines(out / "budget-8" / "longest" / "seed-0" / "eval" / "testset_testset.jsonl")
    assert all({"judge", "judge_reason", "f1", "kind"} <= set(r) for r in recs)
    kinds = b["by_kind"][task]
    assert set(kinds) == {"simple", "reasoning"} and kinds["simple"]["n_items"] == 5
    assert kinds["simple"]["methods"]["longest"]["f1"]["mean"] == pytest.approx(done["by_kind"][task]["simple"]["f1"])
    assert "test" in kinds["simple"]["methods"]["longest"]["f1"]              # 5 items: tested
    assert "test" not in kinds["reasoning"]["methods"]["longest"]["f1"] and "test_skipped" in kinds["reasoning"]
    md = (out / "results.md").read_text()
    assert f"### {task}: per evolution kind" in md and "| reasoning | longest | 1 | 1 |" in md
    html = (out / "bench_report.html").read_text()
    assert 'class="kinds"' in html and "judge (0-1)" in html
    # resume: the cell is rerun, its judge answers come from the cache
    (out / "budget-8" / "longest" / "seed-0" / "done.json").unlink()
    with FaultProxy(server.url[: -len("/v1")]) as proxy:
        raw["eval"]["judge"]["endpoint"] = proxy.url
        run_bench(build_bench_config(raw))      # the other cells' fingerprints still match
        assert proxy.received == 0
    again = json.loads((out / "budget-8" / "longest" / "seed-0" / "done.json").read_text())
    assert again["info"]["judge_usage"][task]["requests"] == 0
    assert again["scores"] == done["scores"] or math.isnan(js)


# ---------------------------------------------------------------- testset filters on hand-made answers

TS_DEFAULTS = {"seed": 0, "temperature": 0.0, "max_tokens": 128}


def _prefill_testset(cache_dir: Path, items: list[dict], answers: dict[str, dict], prompts: dict) -> None:
    """Put hand-made answers into the response cache under the keys testset() will ask: ``answers[chunk_id]``
    maps a stage (simple, evolve, answer, critic) to text or (text, finish_reason); stages after a
    dropping answer need none."""
    from siftkit.generate import testset as T

    rc = ResponseCache(cache_dir / "llm")
    for it in items:
        it = dict(it)
        for stage, a in answers[it["chunk_id"]].items():
            text, fin = (a, "stop") if isinstance(a, str) else a
            body = T.stage_request(prompts, stage, it, **TS_DEFAULTS)
            rc.put(request_key("chat", "m", body), "chat", "m", "t", _answer(text, fin))
            if stage in ("simple", "evolve"):
                it["question"] = T.extract_question(text)[0]
    rc.close()


def _docs(folder: Path, texts: list[str]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(texts):
        (folder / f"d{i:02d}.txt").write_text(t)
    return [str(folder / f"d{i:02d}.txt") for i in range(len(texts))]


def _plan(paths: list[str], mix: dict, vectors=None) -> list[dict]:
    from siftkit.generate import testset as T

    chunks, _, _ = T.document_chunks(paths, min_chunk_chars=1)
    return T.plan_items(chunks, T.relate([c["text"] for c in chunks], vectors=vectors), mix, 0)


def test_testset_every_filter_from_a_prefilled_cache(tmp_path):
    """Every filter of testset() through the real client reading hand-made answers from the response cache
    (a dead endpoint: nothing is sent), with the reason, stage and text of each drop."""
    from siftkit.generate import testset as T

    P = T.load_testset_prompts()
    scen = [   # (simple question answer, ground-truth answer, critic answer) -> expected reason ("" kept)
        (("  ?? ", "stop"), None, None, "empty", "simple"),
        (("What causes the", "length"), None, None, "truncated", "simple"),
        ("Tides?", None, None, "length", "simple"),
        ("Tides " * 61 + "?", None, None, "length", "simple"),
        ("Tides come from the moon.", None, None, "not_a_question", "simple"),
        ("What pulls the sea?", T.NOT_IN_CONTEXT, None, "no_ground_truth", "ground_truth"),
        ("Do the moon and sun cause tides?", "The moon and the sun.", None, "answer_leak", "ground_truth"),
        ("Which planet has rings?", "Saturn.", '{"answerable": false}', "not_answerable", "critic"),
        ("Which gas do plants take in?", "Carbon dioxide.", "yes", "not_answerable", "critic"),
        ("What causes spring tides in the sea?", "The sun and moon lining up.", '{"answerable": true}', "", ""),
        ("What causes spring tides in the sea ?", "Sun and moon in a line.", '{"answerable": true}',
         "near_duplicate", "dedup"),
    ]
    paths = _docs(tmp_path / "docs", [f"Passage number {i} about the sea, tides and planets." for i in range(len(scen))])
    items = _plan(paths, {"simple": 1})
    answers = {}
    for it, (q, gt, cr, _, _) in zip(items, scen):
        a = {"simple": q}
        if gt is not None:
            a["answer"] = gt
        if cr is not None:
            a["critic"] = cr
        answers[it["chunk_id"]] = a
    _prefill_testset(tmp_path / "cache", items, answers, P)
    m = T.testset(paths, str(tmp_path / "out"), endpoint=DEAD, model="m", mix={"simple": 1}, min_chunk_chars=1,
                  cache_dir=str(tmp_path / "cache"), max_retries=0, timeout=2.0)
    want = Counter(s[3] for s in scen if s[3])
    assert m["counts"]["dropped_by_reason"] == dict(want) and m["counts"]["kept"] == 1
    assert m["usage"]["requests"] == 0 and m["related_by"]["similarity"] == "tfidf"
    dropped = {d["chunk_id"]: d for d in _lines(tmp_path / "out" / "_siftkit" / "dropped.jsonl")}
    for it, s in zip(items, scen):
        if s[3]:
            assert (dropped[it["chunk_id"]]["reason"], dropped[it["chunk_id"]]["stage"]) == (s[3], s[4])
    kept = _lines(tmp_path / "out" / "testset.jsonl")
    assert [k["question"] for k in kept] == ["What causes spring tides in the sea?"]
    assert kept[0]["ground_truth"] == "The sun and moon lining up." and kept[0]["kind"] == "simple"

    # evolutions: no_evolution (same words as the simple question), an evolution that is no question, kept
    paths2 = _docs(tmp_path / "docs2", ["The moon raises tides.", "The sun raises smaller tides.",
                                        "Tides rise twice a day."])
    items2 = _plan(paths2, {"reasoning": 1})
    evol = [("What causes tides?", "what causes TIDES?", None, "no_evolution"),
            ("What do tides do?", "Tides rise and fall.", None, "not_a_question"),
            ("How often do tides rise?", "If a day had 48 hours, how often would tides rise?", "Four times.", "")]
    ans2 = {}
    for it, (q, e, gt, _) in zip(items2, evol):
        ans2[it["chunk_id"]] = {"simple": q, "evolve": e, **({"answer": gt, "critic": '{"answerable": true}'}
                                                            if gt else {})}
    _prefill_testset(tmp_path / "cache2", items2, ans2, P)
    m2 = T.testset(paths2, str(tmp_path / "out2"), endpoint=DEAD, model="m", mix={"reasoning": 1},
                   min_chunk_chars=1, cache_dir=str(tmp_path / "cache2"), max_retries=0, timeout=2.0)
    assert m2["counts"]["dropped_by_reason"] == {"no_evolution": 1, "not_a_question": 1}
    k2 = _lines(tmp_path / "out2" / "testset.jsonl")
    assert len(k2) == 1 and k2[0]["kind"] == "reasoning" and k2[0]["simple_question"] == "How often do tides rise?"
    assert k2[0]["question"].startswith("If a day had 48 hours")
    st = {d["reason"]: d["stage"] for d in _lines(tmp_path / "out2" / "_siftkit" / "dropped.jsonl")}
    assert st == {"no_evolution": "evolve", "not_a_question": "evolve"}


def _model2vec(folder: Path, rows: dict[str, list[float]]) -> Path:
    """A plain model2vec folder (word-level tokenizer, float32 rows) with hand-made vectors."""
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(rows)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    d = len(next(iter(rows.values())))
    emb = np.asarray([[0.0] * d] + list(rows.values()), dtype=np.float32)
    header = json.dumps({"embeddings": {"dtype": "F32", "shape": list(emb.shape),
                                        "data_offsets": [0, emb.nbytes]}}).encode()
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + emb.tobytes())
    (folder / "config.json").write_text('{"normalize": false}')
    return folder


def test_testset_related_by_embeddings_with_tfidf_fallback(tmp_path):
    """With an embedding model (siftkit's embedding signal, here a hand-made static model) the related chunk
    is the nearest by embedding among chunks sharing a keyphrase; TF-IDF picks another; the manifest says
    which was used; a multi-context question gets the embedding neighbour as its second context; a chunk
    sharing no keyphrase is dropped as no_context."""
    from siftkit.generate import testset as T

    texts = ["moon tide tide red", "moon tide tide blue", "moon green", "volcano lava"]
    model = _model2vec(tmp_path / "m2v", {"moon": [1, 0, 0], "tide": [0, 0, 0], "red": [0, 0, 10],
                                          "blue": [0, 10, 0], "green": [0, 0, 10], "volcano": [5, 5, 0],
                                          "lava": [5, 5, 0]})
    emb = {"backend": "static", "model": str(model)}
    vecs, cfg = T.chunk_vectors(texts, emb)
    assert cfg["model"] == str(model) and vecs.shape == (4, 3)
    assert [j for j, _ in T.relate(texts)] == [1, 0, 0, None]                  # TF-IDF: the two tide chunks
    assert [j for j, _ in T.relate(texts, vectors=vecs)] == [2, 0, 0, None]   # embeddings: red ~ green
    with pytest.raises(ConfigError, match="testset: embedding"):
        T.chunk_vectors(texts, {"backend": "static", "colour": 1})
    paths = _docs(tmp_path / "docs", texts)
    items = _plan(paths, {"multi_context": 1}, vectors=vecs)
    assert items[0]["context_ids"] == [items[0]["chunk_id"], items[2]["chunk_id"]] and len(items[3]["contexts"]) == 1
    P = T.load_testset_prompts()
    ans = {it["chunk_id"]: {"simple": f"What is passage {k} about?",
                            "evolve": f"How do passage {k} and its neighbour differ in colour?",
                            "answer": f"Shade {k} is darker.", "critic": '{"answerable": true}'}
           for k, it in enumerate(items[:3])}
    _prefill_testset(tmp_path / "cache", items[:3], ans, P)
    m = T.testset(paths, str(tmp_path / "out"), endpoint=DEAD, model="m", mix={"multi_context": 1},
                  embedding=emb, min_chunk_chars=1, cache_dir=str(tmp_path / "cache"), max_retries=0, timeout=2.0)
    assert m["related_by"]["similarity"] == "embedding" and m["related_by"]["embedding"]["model"] == str(model)
    assert m["counts"]["dropped_by_reason"] == {"no_context": 1} and m["counts"]["kept"] == 3
    first = _lines(tmp_path / "out" / "testset.jsonl")[0]
    assert first["contexts"] == [texts[0], texts[2]] and first["shared_keyphrases"] == ["moon"]


def test_testset_and_evolve_recipes_checked_with_the_key_named(tmp_path):
    from siftkit.generate import testset as T
    from siftkit.generate.evolve import run_recipe as evolve_recipe

    paths = _docs(tmp_path / "docs", ["The moon raises tides."])
    items = _plan(paths, {"simple": 1})
    P = T.load_testset_prompts()
    _prefill_testset(tmp_path / "cache", items, {items[0]["chunk_id"]: {
        "simple": "What raises tides?", "answer": "The moon's pull.", "critic": '{"answerable": true}'}}, P)
    rec = tmp_path / "ts.yaml"
    rec.write_text(f"inputs: [docs/d00.txt]\noutput: out\ncache_dir: cache\n"
                   f"testset: {{endpoint: '{DEAD}', model: m, mix: {{simple: 1}}, min_chunk_chars: 1, "
                   f"max_retries: 0, timeout: 2.0}}\n")
    import siftkit

    m = siftkit.testset(recipe=str(rec))
    assert m["counts"]["kept"] == 1 and m["usage"]["requests"] == 0
    assert _lines(tmp_path / "out" / "testset.jsonl")[0]["question"] == "What raises tides?"
    r = _cli("testset", "--recipe", str(rec), "-q")             # the CLI runs it too (all from the cache)
    assert r.returncode == 0, r.stderr
    bad = {"testset: {endpoint: x, max_tokens: many}": r"ts2.yaml: testset.max_tokens must be an integer >= 1",
           "testset: {endpoint: x, colour: red}": r"ts2.yaml: testset: unknown key\(s\) colour",
           "testset: {model: m}": r"ts2.yaml: testset.endpoint is required",
           "testset: {endpoint: x, dedup_threshold: 2}": r"testset.dedup_threshold must be a number from 0 to 1",
           "testset: {endpoint: x, mix: {simple: -1}}": r"testset.mix.simple must be a number >= 0",
           "steps: []\ntestset: {endpoint: x}": r"unknown key\(s\) steps in a testset recipe"}
    for body, msg in bad.items():
        (tmp_path / "ts2.yaml").write_text(f"inputs: [docs]\noutput: o\n{body}\n")
        with pytest.raises(ConfigError, match=msg):
            T.run_recipe(str(tmp_path / "ts2.yaml"))
        r = _cli("testset", "--recipe", str(tmp_path / "ts2.yaml"), "-q")
        assert r.returncode == 2 and "ts2.yaml" in r.stderr
    (tmp_path / "ev.yaml").write_text("inputs: [s.jsonl]\noutput: {dir: o, colour: red}\nevolve: {endpoint: x}\n")
    with pytest.raises(ConfigError, match=r"ev.yaml: output: unknown key\(s\) colour"):
        evolve_recipe(str(tmp_path / "ev.yaml"))
    (tmp_path / "ev.yaml").write_text("inputs: [s.jsonl]\noutput: o\nevolve: {endpoint: x, rounds: three}\n")
    with pytest.raises(ConfigError, match=r"ev.yaml: evolve.rounds must be an integer >= 1, not 'three'"):
        evolve_recipe(str(tmp_path / "ev.yaml"))
