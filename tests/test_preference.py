"""Preference pairs and KTO records (issue 10): every public spelling is read as a pair (messages = prompt +
chosen, plus the rejected answer) or a labelled KTO record, never silently as SFT, and written back in each
output format's own preference / KTO layout (TRL, LLaMA-Factory ranking / kto_tag) or rejected per record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import convo, write_jsonl
from siftkit.io import formats as F
from siftkit.io.pool import read_pool
from siftkit.io.writers import dataset_info_entry, write_records
from siftkit.signals.segments import flatten

U = {"role": "user", "content": "Name a prime."}
GOOD, BAD = "7 is prime.", "8 is prime."

PAIRS = {
    "llamafactory_sharegpt": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                                {"from": "human", "value": "Name a prime."}],
                              "chosen": {"from": "gpt", "value": GOOD}, "rejected": {"from": "gpt", "value": BAD}},
    "llamafactory_openai_tags": {"messages": [U], "chosen": {"role": "assistant", "content": GOOD},
                                 "rejected": {"role": "assistant", "content": BAD}},
    "llamafactory_alpaca": {"instruction": "Name a prime.", "input": "", "chosen": GOOD, "rejected": BAD},
    "trl_explicit_strings": {"prompt": "Name a prime.", "chosen": GOOD, "rejected": BAD},
    "trl_explicit_conversational": {"prompt": [U], "chosen": [{"role": "assistant", "content": GOOD}],
                                    "rejected": [{"role": "assistant", "content": BAD}]},
    "trl_implicit": {"chosen": [U, {"role": "assistant", "content": GOOD}],
                     "rejected": [U, {"role": "assistant", "content": BAD}]},
    "ms_swift": {"messages": [U, {"role": "assistant", "content": GOOD}], "rejected_response": BAD},
    "medicalgpt": {"system": "", "history": [["Hi", "Hello"]], "question": "Name a prime.",
                   "response_chosen": GOOD, "response_rejected": BAD},
    "anthropic_hh": {"chosen": f"\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Name a prime.\n\nAssistant: {GOOD}",
                     "rejected": f"\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Name a prime.\n\nAssistant: {BAD}"},
}

KTO = {
    "trl_strings": {"prompt": "Name a prime.", "completion": BAD, "label": False},
    "trl_conversational": {"prompt": [U], "completion": [{"role": "assistant", "content": GOOD}], "label": True},
    "llamafactory_messages": {"messages": [U, {"role": "assistant", "content": BAD}], "label": False},
    "llamafactory_kto_tag": {"conversations": [{"from": "human", "value": "Name a prime."},
                                               {"from": "gpt", "value": GOOD}], "kto_tag": True},
    "alpaca": {"instruction": "Name a prime.", "input": "", "output": BAD, "label": False},
}


def _pool(tmp_path: Path, rows: list, **kw):
    """One file per record (formats are detected per file), read in order."""
    return read_pool([str(write_jsonl(tmp_path / f"r{i}.jsonl", [r])) for i, r in enumerate(rows)], **kw)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_preference_spelling_reads_as_a_pair(tmp_path, name):
    rec = _pool(tmp_path, [PAIRS[name]]).records()[0]
    assert rec["kind"] == "preference" and rec["label"] is None
    msgs = rec["messages"]
    assert msgs[-1]["role"] == "assistant" and msgs[-1]["content"] == GOOD
    assert msgs[rec["prompt_turns"] - 1] == {**msgs[rec["prompt_turns"] - 1], "role": "user",
                                             "content": "Name a prime."}
    assert len(msgs) == rec["prompt_turns"] + 1
    assert [(m["role"], m["content"]) for m in rec["rejected"]] == [("assistant", BAD)]
    fb = flatten(_pool(tmp_path / "x", [PAIRS[name]]).table)
    assert fb.texts("response") == [GOOD]  # signals read prompt + chosen


def test_llamafactory_dpo_file_is_not_turned_into_sft(tmp_path):
    rows = [dict(PAIRS["llamafactory_sharegpt"], chosen={"from": "gpt", "value": f"{GOOD} ({i})"}) for i in range(30)]
    p = read_pool(str(write_jsonl(tmp_path / "dpo_en_demo.jsonl", rows)))
    assert len(p) == 30 and p.rejects == []
    assert set(p.table.column("kind").to_pylist()) == {"preference"}
    assert p.files[0].format == "preference"
    # an SFT adapter refuses pairs and KTO records with a reason code instead of reading them as SFT
    with pytest.raises(F.RecordError) as e:
        F.adapt_sharegpt(rows[0])
    assert e.value.code == "preference_record"
    with pytest.raises(F.RecordError) as e:
        F.adapt_messages(KTO["llamafactory_messages"])
    assert e.value.code == "kto_record"


def test_forced_sft_format_rejects_pairs_per_record(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [PAIRS["llamafactory_sharegpt"], {"conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}])
    p = read_pool({"path": str(f), "format": "sharegpt"}, on_error="skip")
    assert len(p) == 1 and p.counts()["rejected_by_reason"] == {"preference_record": 1}


@pytest.mark.parametrize("name", sorted(KTO))
def test_every_kto_spelling_keeps_its_label(tmp_path, name):
    rec = _pool(tmp_path, [KTO[name]]).records()[0]
    want = KTO[name].get("label", KTO[name].get("kto_tag"))
    assert rec["kind"] == "kto" and rec["label"] is want and rec["rejected"] is None
    assert rec["prompt_turns"] == len(rec["messages"]) - 1 and rec["messages"][-1]["role"] == "assistant"


@pytest.mark.parametrize("turns,rejected,k,code", [
    ([("user", "q"), ("assistant", " ")], [("assistant", "r")], 1, "empty_chosen"),
    ([("user", "q"), ("assistant", "c")], [("assistant", "")], 1, "empty_rejected"),
    ([("user", "q"), ("assistant", "c")], [], 1, "empty_rejected"),
    ([("user", "q")], [("assistant", "r")], 1, "empty_chosen"),
    ([("user", " "), ("assistant", "c")], [("assistant", "r")], 1, "no_user_turn"),
    ([("user", "q"), ("assistant", "")], None, 1, "empty_completion"),
])
def test_validate_rejects_empty_answers_of_pairs(turns, rejected, k, code):
    assert F.validate_turns(turns, rejected, k)[0] == code


def test_empty_rejected_is_a_counted_reject(tmp_path):
    p = _pool(tmp_path, [PAIRS["trl_explicit_strings"], dict(PAIRS["trl_explicit_strings"], rejected="  ")])
    assert len(p) == 1 and p.counts()["rejected_by_reason"] == {"empty_rejected": 1}


def test_pair_ids_fold_the_rejected_answer_and_label(tmp_path):
    a = _pool(tmp_path / "a", [PAIRS["trl_explicit_strings"]]).ids[0]
    b = _pool(tmp_path / "b", [dict(PAIRS["trl_explicit_strings"], rejected="9 is prime.")]).ids[0]
    sft = _pool(tmp_path / "c", [{"prompt": "Name a prime.", "completion": GOOD}]).ids[0]
    k_true = _pool(tmp_path / "d", [dict(KTO["trl_strings"], label=True)]).ids[0]
    k_false = _pool(tmp_path / "e", [KTO["trl_strings"]]).ids[0]
    assert len({a, b, sft}) == 3 and k_true != k_false


def _pairs_pool(tmp_path):
    return _pool(tmp_path, [PAIRS[n] for n in sorted(PAIRS)])


def test_messages_output_is_trl_preference_and_round_trips(tmp_path):
    datasets = pytest.importorskip("datasets")
    p = _pairs_pool(tmp_path)
    out = tmp_path / "o" / "m.jsonl"
    rejects: list = []
    assert write_records(p.table, str(out), "messages", "jsonl", rejects) == len(PAIRS) and rejects == []
    rows = _rows(out)
    for r in rows:
        assert set(r) == {"id", "source", "prompt", "chosen", "rejected"}
        assert r["prompt"][-1]["role"] == "user" and r["chosen"] == [{"role": "assistant", "content": GOOD}]
        assert r["rejected"] == [{"role": "assistant", "content": BAD}]
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    from scoring_tiny import build_tiny_lm

    assert is_conversational(rows[0])
    tok = AutoTokenizer.from_pretrained(build_tiny_lm(tmp_path / "lm"))
    text = apply_chat_template({k: rows[0][k] for k in ("prompt", "chosen", "rejected")}, tok)
    assert text["prompt"].endswith("<|im_start|>assistant\n") and GOOD in text["chosen"] and BAD in text["rejected"]
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert ds.column_names == ["id", "source", "prompt", "chosen", "rejected"]
    back = read_pool(str(out)).records()
    for a, b in zip(p.records(), back):
        assert (a["messages"], a["rejected"], a["prompt_turns"]) == (b["messages"], b["rejected"], b["prompt_turns"])


def test_sharegpt_output_is_llamafactory_ranking(tmp_path):
    datasets = pytest.importorskip("datasets")
    p = _pairs_pool(tmp_path)
    out = tmp_path / "o" / "s.jsonl"
    rejects: list = []
    assert write_records(p.table, str(out), "sharegpt", "jsonl", rejects) == len(PAIRS) and rejects == []
    for r in _rows(out):
        conv = r["conversations"]
        assert len(conv) % 2 == 1  # LLaMA-Factory ranking: the prompt ends on a user turn
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2) + ["human"]
        assert r["chosen"] == {"from": "gpt", "value": GOOD} and r["rejected"] == {"from": "gpt", "value": BAD}
    entry = dataset_info_entry("sharegpt", "s.jsonl", p.table)
    assert entry["ranking"] is True and entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
    assert entry["tags"]["user_tag"] == "human" and entry["tags"]["assistant_tag"] == "gpt"
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert set(entry["columns"].values()) <= set(ds.column_names)
    back = read_pool(str(out)).records()
    assert [b["messages"] for b in back] == [a["messages"] for a in p.records()]


def test_alpaca_output_is_llamafactory_alpaca_ranking(tmp_path):
    p = _pairs_pool(tmp_path)
    out = tmp_path / "a.jsonl"
    assert write_records(p.table, str(out), "alpaca", "jsonl", []) == len(PAIRS)
    rows = _rows(out)
    for r in rows:
        assert r["instruction"] == "Name a prime." and (r["chosen"], r["rejected"]) == (GOOD, BAD)
        assert "output" not in r
    assert [r.get("history") for r in rows if "history" in r] == [[["Hi", "Hello"]]] * 3
    entry = dataset_info_entry("alpaca", "a.jsonl", p.table)
    assert entry == {"file_name": "a.jsonl", "formatting": "alpaca", "ranking": True,
                     "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen",
                                 "rejected": "rejected", "history": "history"}}
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert set(entry["columns"].values()) <= set(ds.column_names)  # LLaMA-Factory reads each named column
    for r in ds:  # its alpaca converter: history pairs, ranking answers as strings
        assert all(len(pair) == 2 for pair in r["history"] or [])
        assert isinstance(r["chosen"], str) and isinstance(r["rejected"], str) and isinstance(r["instruction"], str)
    # a chosen answer of several turns cannot be an Alpaca string: rejected per record, the rest written
    multi = {"prompt": [U], "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "more"},
                                       {"role": "assistant", "content": GOOD}],
             "rejected": [{"role": "assistant", "content": BAD}]}
    p2 = _pool(tmp_path / "m", [multi, PAIRS["trl_explicit_strings"]])
    rejects: list = []
    assert write_records(p2.table, str(tmp_path / "b.jsonl"), "alpaca", "jsonl", rejects) == 1
    assert rejects[0]["code"] == "unrepresentable" and "chosen answer has 3 turns" in rejects[0]["reason"]


def test_kto_outputs_carry_the_label_and_never_become_sft(tmp_path):
    datasets = pytest.importorskip("datasets")
    p = _pool(tmp_path, [KTO[n] for n in sorted(KTO)])
    labels = p.table.column("label").to_pylist()
    for fmt in ("messages", "sharegpt", "alpaca"):
        out = tmp_path / f"{fmt}.jsonl"
        assert write_records(p.table, str(out), fmt, "jsonl", []) == len(KTO)
        rows = _rows(out)
        assert [r["label"] for r in rows] == labels
        if fmt == "messages":  # TRL KTO: prompt / completion / label, no SFT "messages"
            assert all(set(r) == {"id", "source", "prompt", "completion", "label"} for r in rows)
        if fmt == "sharegpt":
            assert all(len(r["conversations"]) % 2 == 0 and r["conversations"][-1]["from"] == "gpt" for r in rows)
        ds = datasets.load_dataset("json", data_files=str(out), split="train")
        assert ds["label"] == labels
        if fmt != "messages":
            entry = dataset_info_entry(fmt, out.name, p.table)
            assert entry["columns"]["kto_tag"] == "label" and "ranking" not in entry
    with pytest.raises(ValueError):
        dataset_info_entry("messages", "m.jsonl", p.table)


def test_an_output_holds_one_kind_and_reports_the_others(tmp_path):
    p = _pool(tmp_path, [convo("q1", "a1"), convo("q2", "a2"), PAIRS["trl_explicit_strings"], KTO["trl_strings"]])
    rejects: list = []
    assert write_records(p.table, str(tmp_path / "m.jsonl"), "messages", "jsonl", rejects) == 2
    assert [r["id"] for r in rejects] == p.ids[2:]
    assert all(r["code"] == "unrepresentable" and "holds sft records" in r["reason"] for r in rejects)
    assert all("messages" in r for r in _rows(tmp_path / "m.jsonl"))
    # the original format keeps every record as it was
    assert write_records(p.table, str(tmp_path / "o.jsonl"), "original", "jsonl", rejects) == 4
    assert _rows(tmp_path / "o.jsonl")[3] == KTO["trl_strings"]


def test_cli_selects_pairs_and_writes_them_back(tmp_path):
    from siftkit.cli import main

    rows = [dict(PAIRS["trl_explicit_strings"], prompt=f"Name prime number {i}.") for i in range(6)]
    pool = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "dpo"
    assert main(["--quiet", "select", str(pool), "--budget", "3", "--method", "top", "--by", "tokens_response",
                 "--out", str(out), "--output-format", "sharegpt", "--cache-dir", str(tmp_path / "c")]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["outputs"]["records"] == 3 and "unrepresentable" not in m["outputs"]
    assert m["inputs"][0]["format"] == "preference"
    info = json.loads((out / "dataset_info.json").read_text())["dpo"]
    assert info["ranking"] is True
    assert all("chosen" in r and "rejected" in r for r in _rows(out / "selected.jsonl"))
