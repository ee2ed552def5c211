"""Tool use end to end (issue 10): OpenAI/TRL tool_calls and ShareGPT function_call/observation turns are read
into structure (calls, tool_call_id, tools), signals count the calls, and every output format writes them the
way its trainer expects (TRL, LLaMA-Factory), or rejects the record per record with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xxhash

from conftest import convo, write_jsonl
from siftkit.io import formats as F
from siftkit.io.pool import read_pool
from siftkit.io.writers import dataset_info_entry, write_records
from siftkit.signals.segments import flatten

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]

OPENAI_TOOL = {"messages": [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "Weather and time in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny, 21C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "14:05"},
    {"role": "assistant", "content": "It is sunny (21C) and 14:05 in Paris."}], "tools": TOOLS}

SHAREGPT_TOOL = {"conversations": [
    {"from": "human", "value": "What's the weather in Rome?"},
    {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Rome"}}'},
    {"from": "observation", "value": "rainy, 15C"},
    {"from": "gpt", "value": "It is rainy in Rome, 15C."}],
    "system": "Use tools when needed.", "tools": json.dumps(TOOLS[:1])}

PLAIN = convo("What is 2+2?", "4")


def _pool(tmp_path: Path, rows: list, **kw):
    """One file per record (formats are detected per file), read in order: r0.jsonl, r1.jsonl, ..."""
    return read_pool([str(write_jsonl(tmp_path / f"r{i}.jsonl", [r])) for i, r in enumerate(rows)], **kw)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_openai_tool_calls_are_structure(tmp_path):
    p = _pool(tmp_path, [OPENAI_TOOL, PLAIN])
    rec = p.records()[0]
    msgs = rec["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert msgs[2]["content"] == ""  # the calls are not pasted into the text
    assert msgs[2]["tool_calls"] == [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                                     {"id": "call_2", "name": "get_time", "arguments": '{"tz":"CET"}'}]
    assert (msgs[3]["tool_call_id"], msgs[3]["name"], msgs[4]["tool_call_id"], msgs[4]["name"]) == \
        ("call_1", "get_weather", "call_2", None)
    assert json.loads(rec["tools"]) == TOOLS and rec["kind"] == "sft" and rec["rejected"] is None
    plain = p.records()[1]
    assert plain["tools"] is None and all(m["tool_calls"] is None for m in plain["messages"])


def test_sharegpt_function_call_and_observation(tmp_path):
    rec = _pool(tmp_path, [SHAREGPT_TOOL]).records()[0]
    msgs = rec["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[2]["tool_calls"] == [{"id": None, "name": "get_weather", "arguments": '{"city":"Rome"}'}]
    assert msgs[2]["content"] == "" and msgs[3]["content"] == "rainy, 15C"
    assert rec["tools"] == SHAREGPT_TOOL["tools"]  # a JSON string column is kept as written
    # parallel calls as a JSON list, and tools given as a list
    par = dict(SHAREGPT_TOOL, tools=TOOLS, conversations=[
        {"from": "human", "value": "both"},
        {"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": {"city": "A"}},
                                                       {"name": "get_time", "arguments": {}}])},
        {"from": "observation", "value": "r"}, {"from": "gpt", "value": "done"}])
    turns = F.adapt_sharegpt(par).turns
    assert [c["name"] for c in turns[2][2]] == ["get_weather", "get_time"]
    with pytest.raises(F.RecordError, match="function_call value is not JSON") as e:
        F.adapt_sharegpt({"conversations": [{"from": "human", "value": "q"},
                                             {"from": "function_call", "value": "get_weather(Rome)"}]})
    assert e.value.field == "conversations[1].value"


def test_ms_swift_tool_call_and_tool_response_roles(tmp_path):
    rec = _pool(tmp_path, [{"tools": json.dumps(TOOLS[:1]), "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "tool_call", "content": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
        {"role": "tool_response", "content": "snow"}, {"role": "assistant", "content": "Snow in Oslo."}]}]).records()[0]
    assert [m["role"] for m in rec["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert rec["messages"][1]["tool_calls"] == [{"id": None, "name": "get_weather", "arguments": '{"city":"Oslo"}'}]
    assert rec["tools"] is not None


def test_plain_ids_unchanged_and_tool_calls_fold_into_the_id(tmp_path):
    p = _pool(tmp_path, [PLAIN, OPENAI_TOOL])
    key = "user\x00What is 2+2?\x00assistant\x004" + "\x00r0.jsonl\x00" + "0"
    assert p.ids[0] == xxhash.xxh3_64_hexdigest(key.encode())  # the id formula of plain records is unchanged
    # two records that differ only in a call's arguments get different ids (same file, same row)
    other = json.loads(json.dumps(OPENAI_TOOL))
    other["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"city": "Lyon"}'
    a = _pool(tmp_path / "a", [OPENAI_TOOL]).ids[0]
    b = _pool(tmp_path / "b", [other]).ids[0]
    assert a != b  # calls are part of the key
    assert _pool(tmp_path / "c", [OPENAI_TOOL]).ids[0] == a  # deterministic


def test_signals_see_the_calls_and_segments(tmp_path):
    from siftkit.signals.text import TextStats

    p = _pool(tmp_path, [OPENAI_TOOL])
    fb = flatten(p.table)
    query, response = fb.texts("query")[0], fb.texts("response")[0]
    assert 'get_weather({"city": "Paris"})' in query and 'get_time({"tz":"CET"})' in query
    assert "sunny, 21C" in query and "14:05" in query  # tool results are query turns
    assert response == "It is sunny (21C) and 14:05 in Paris."
    stats = TextStats().compute(p.table)
    assert stats["chars_query"][0] == len(query) - 2 * 4  # per-turn lengths: the 4 separators are not counted
    assert stats["assistant_turns"][0] == 2
    # the training-example builders (bench, LESS warm-up, CHERRY) render a call turn the same way
    assert F.message_text(p.records()[0]["messages"][2]) == fb.contents[2]
    # a conversation ending on a call: the call is the response, and it is not "empty"
    ends = {"messages": OPENAI_TOOL["messages"][:3]}
    p2 = _pool(tmp_path / "e", [ends])
    assert flatten(p2.table).texts("response")[0].startswith("get_weather(")
    assert F.validate_turns([("user", "q"), ("assistant", "", [{"id": None, "name": "f", "arguments": "{}"}],
                                                            None, None)]) is None


def test_existing_signals_run_on_tool_records(tmp_path):
    from siftkit.signals.compute import compute_signals

    p = _pool(tmp_path, [OPENAI_TOOL, SHAREGPT_TOOL, PLAIN])
    sig = compute_signals(p.table, ["text_stats", "exact_hash", "compression", "tokens"], str(tmp_path / "cache"),
                          workers=1)
    assert sig.num_rows == 3
    assert all(v > 0 for v in sig.column("tokens_query").to_pylist())
    assert len(set(sig.column("exact_hash").to_pylist())) == 3


def test_messages_output_round_trips_and_follows_openai_schema(tmp_path):
    p = _pool(tmp_path, [OPENAI_TOOL, SHAREGPT_TOOL, PLAIN])
    out = tmp_path / "o" / "m.jsonl"
    rejects: list = []
    assert write_records(p.table, str(out), "messages", "jsonl", rejects) == 3 and rejects == []
    rows = _rows(out)
    call_turn = rows[0]["messages"][2]
    assert call_turn["tool_calls"][1] == {"id": "call_2", "type": "function",
                                          "function": {"name": "get_time", "arguments": '{"tz":"CET"}'}}
    assert rows[0]["messages"][3]["tool_call_id"] == "call_1"
    assert isinstance(rows[0]["tools"], str) and json.loads(rows[0]["tools"]) == TOOLS
    assert rows[2]["tools"] is None and rows[2]["messages"] == PLAIN["messages"]  # plain stays plain
    back = read_pool(str(out))
    for a, b in zip(p.records(), back.records()):
        assert a["messages"] == b["messages"] and a["tools"] == b["tools"]


def _lf_sharegpt_check(row: dict, ranking: bool = False) -> None:
    """LLaMA-Factory's ShareGPT converter rules, as assertions."""
    conv = row["conversations"]
    for i, t in enumerate(conv):
        assert t["from"] in (("human", "observation") if i % 2 == 0 else ("gpt", "function_call")), (i, t)
        if t["from"] == "function_call":
            calls = json.loads(t["value"])
            for c in calls if isinstance(calls, list) else [calls]:
                assert isinstance(c["name"], str) and isinstance(c["arguments"], dict)
    assert (len(conv) % 2 == 1) == ranking
    if "tools" in row:
        assert isinstance(row["tools"], str)
        if row["tools"]:
            assert isinstance(json.loads(row["tools"]), list)


def test_sharegpt_output_is_what_llamafactory_reads(tmp_path):
    datasets = pytest.importorskip("datasets")
    p = _pool(tmp_path, [OPENAI_TOOL, SHAREGPT_TOOL, PLAIN])
    out = tmp_path / "o" / "s.jsonl"
    rejects: list = []
    assert write_records(p.table, str(out), "sharegpt", "jsonl", rejects) == 3 and rejects == []
    rows = _rows(out)
    for r in rows:
        _lf_sharegpt_check(r)
        assert "tools" in r  # every row has the column once any has it (no KeyError: 'tools')
    assert [t["from"] for t in rows[0]["conversations"]] == ["human", "function_call", "observation", "gpt"]
    assert json.loads(rows[0]["conversations"][2]["value"]) == ["sunny, 21C", "14:05"]  # parallel results
    assert rows[1]["system"] == "Use tools when needed." and rows[2]["tools"] == ""
    entry = dataset_info_entry("sharegpt", "s.jsonl", p.table)
    assert entry["formatting"] == "sharegpt" and entry["file_name"] == "s.jsonl"
    assert entry["columns"] == {"messages": "conversations", "system": "system", "tools": "tools"}
    assert entry["tags"]["function_tag"] == "function_call" and entry["tags"]["observation_tag"] == "observation"
    assert entry["tags"]["role_tag"] == "from" and entry["tags"]["content_tag"] == "value"
    assert "ranking" not in entry and "kto_tag" not in entry["columns"]
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert ds.num_rows == 3 and set(entry["columns"].values()) <= set(ds.column_names)
    # read back: the same turns (ShareGPT has no call ids)
    back = read_pool(str(out)).records()
    for a, b in zip(p.records(), back):
        strip = [(m["role"], m["content"], [(c["name"], json.loads(c["arguments"])) for c in m["tool_calls"] or []])
                 for m in a["messages"] if m["role"] != "tool"]
        assert strip == [(m["role"], m["content"], [(c["name"], json.loads(c["arguments"]))
                                                    for c in m["tool_calls"] or []])
                         for m in b["messages"] if m["role"] != "tool"]


def test_sharegpt_rejects_text_alongside_calls_per_record(tmp_path):
    both = json.loads(json.dumps(OPENAI_TOOL))
    both["messages"][2]["content"] = "Let me look."
    p = _pool(tmp_path, [both, PLAIN])
    rejects: list = []
    assert write_records(p.table, str(tmp_path / "s.jsonl"), "sharegpt", "jsonl", rejects) == 1
    assert rejects[0]["code"] == "unrepresentable" and "messages[2]" in rejects[0]["reason"]
    # the messages output keeps both
    assert write_records(p.table, str(tmp_path / "m.jsonl"), "messages", "jsonl", []) == 2


def test_alpaca_rejects_tool_records_per_record_and_counts_add_up(tmp_path):
    p = _pool(tmp_path, [OPENAI_TOOL, PLAIN, SHAREGPT_TOOL, convo("Hi", "Hello")])
    rejects: list = []
    out = tmp_path / "a.jsonl"
    n = write_records(p.table, str(out), "alpaca", "jsonl", rejects)
    assert n == 2 and len(_rows(out)) == 2 and n + len(rejects) == len(p)
    assert [r["id"] for r in rejects] == [p.ids[0], p.ids[2]]
    assert {r["code"] for r in rejects} == {"unrepresentable"}
    assert all("Alpaca" in r["reason"] for r in rejects) and [r["file"] for r in rejects] == ["r0.jsonl", "r2.jsonl"]
    with pytest.raises(Exception, match="cannot be written as alpaca"):  # no rejects list: an error, no file
        write_records(p.table, str(tmp_path / "b.jsonl"), "alpaca", "jsonl")
    assert not (tmp_path / "b.jsonl").exists() and not (tmp_path / "b.jsonl.tmp").exists()


def test_cli_alpaca_output_reports_unrepresentable_and_writes_dataset_info(tmp_path):
    from siftkit.cli import main

    pool = tmp_path / "pool"
    for i, r in enumerate([OPENAI_TOOL, PLAIN, SHAREGPT_TOOL, convo("Hi", "Hello")]):
        write_jsonl(pool / f"r{i}.jsonl", [r])
    out = tmp_path / "sel"
    assert main(["--quiet", "select", str(pool), "--budget", "4", "--out", str(out), "--output-format", "alpaca",
                 "--cache-dir", str(tmp_path / "c")]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["outputs"]["records"] == 2 and m["outputs"]["unrepresentable"] == 2
    assert m["counts"]["selected"] == m["outputs"]["records"] + m["outputs"]["unrepresentable"]
    rej = _rows(out / "_siftkit" / "rejects.jsonl")
    assert [r["code"] for r in rej] == ["unrepresentable"] * 2
    info = json.loads((out / "dataset_info.json").read_text())
    assert list(info) == ["sel"] and info["sel"]["file_name"] == "selected.jsonl"
    assert info["sel"]["formatting"] == "alpaca" and info["sel"]["columns"]["response"] == "output"
    assert "tools" not in info["sel"]["columns"]  # the written records have none


TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools:{% for t in tools %} {{ t['function']['name'] }}{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] %}{{ m['content'] }}{% endif %}"
    "{% if m['tool_calls'] %}{% for c in m['tool_calls'] %}<call>{{ c['function']['name'] }} "
    "{{ c['function']['arguments'] }}</call>{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_trl_sft_trainer_trains_on_the_messages_output(tmp_path):
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    import math

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from scoring_tiny import build_tiny_lm

    p = _pool(tmp_path, [OPENAI_TOOL, SHAREGPT_TOOL, PLAIN, convo("Hi", "Hello")])
    out = tmp_path / "o" / "selected.jsonl"
    write_records(p.table, str(out), "messages", "jsonl", [])
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    folder = build_tiny_lm(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TOOL_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(folder)
    args = SFTConfig(output_dir=str(tmp_path / "t"), report_to=[], use_cpu=True, max_length=256, max_steps=2,
                     per_device_train_batch_size=2, save_strategy="no", logging_steps=1)
    tr = SFTTrainer(model=model, args=args, train_dataset=ds.select_columns(["messages", "tools"]),
                    processing_class=tok)
    text = tok.decode(tr.train_dataset[0]["input_ids"])
    assert "Tools: get_weather get_time" in text and "<call>get_time" in text  # tools and calls rendered
    result = tr.train()
    assert tr.state.global_step == 2 and math.isfinite(result.training_loss)


def test_unsupported_content_is_rejected_per_record(tmp_path):
    img = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"},
                                                      {"type": "image_url", "image_url": {"url": "x.png"}}]},
                        {"role": "assistant", "content": "A cat."}]}
    p = read_pool(str(write_jsonl(tmp_path / "i.jsonl", [PLAIN, img])), on_error="skip")
    assert len(p) == 1
    (r,) = p.rejects
    assert r["code"] == "unsupported_content" and r["field"] == "messages[0].content[1]"
    assert r["reason"].startswith("messages[0].content[1]: image_url parts are not supported")
    assert p.counts()["rejected_by_reason"] == {"unsupported_content": 1}


def test_tools_column_must_be_json(tmp_path):
    bad = dict(SHAREGPT_TOOL, tools="not json")
    p = _pool(tmp_path, [bad, SHAREGPT_TOOL], on_error="skip")
    assert len(p) == 1 and p.rejects[0]["field"] == "tools" and "valid JSON" in p.rejects[0]["reason"]
