"""The Python API on in-memory data: HF datasets, pandas/polars frames, Arrow tables, lists of records.

In-memory records go through the same adaptation, validation, rejects and id scheme as file records. Ids
include the ``file`` provenance (``<memory>``, ``<memory:SOURCE>``, ``<dataset:NAME>``), so the same records
read from ``chat.jsonl`` get the same messages, rows and originals but different ids.
"""

from __future__ import annotations

import json
import sys

import orjson
import pyarrow as pa
import pytest
import xxhash

import siftkit
from conftest import convo, write_jsonl
from siftkit.errors import ConfigError, InputDataError, MissingDependencyError
from siftkit.io.pool import POOL_SCHEMA

CHAT = [convo(f"Question {i}: what is {i} + {i}?", f"The sum of {i} and {i} is {2 * i}." + " Indeed." * (i % 4))
        for i in range(12)]
ALPACA = [{"instruction": f"Reverse the word number {i}.", "input": f"word{i}", "output": f"{i}drow" * (1 + i % 3)}
          for i in range(8)]


def role_content(msgs: list[dict]) -> list[dict]:
    """Messages without the tool-call fields (null for plain turns)."""
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def expected_id(record: dict, file: str, row: int) -> str:
    """The documented id scheme: xxh3_64(conversation || file || row)."""
    conv = "\x00".join(m["role"] + "\x00" + m["content"] for m in record["messages"])
    return xxhash.xxh3_64_hexdigest((conv + "\x00" + file + "\x00" + str(row)).encode())


def same_records(pool_a, pool_b) -> None:
    """Equal conversations, rows, sources and originals (parsed); ids may differ (file is part of them)."""
    a, b = pool_a.records(), pool_b.records()
    assert [r["messages"] for r in a] == [r["messages"] for r in b]
    assert [r["row"] for r in a] == [r["row"] for r in b]
    assert [r["source"] for r in a] == [r["source"] for r in b]
    assert [json.loads(r["original"]) for r in a] == [json.loads(r["original"]) for r in b]


@pytest.fixture
def chat_file(tmp_path):
    return write_jsonl(tmp_path / "chat.jsonl", CHAT)


# ------------------------------------------------------------------ each input kind

def test_list_of_dicts_reads_like_the_jsonl_file(chat_file):
    mem = siftkit.read(CHAT, source="chat")
    disk = siftkit.read(str(chat_file))
    same_records(mem, disk)
    assert set(mem.table.column("file").to_pylist()) == {"<memory:chat>"}
    assert mem.table.column("line").null_count == len(mem)
    # same id scheme, different provenance: the ids differ from the file's, each as documented
    assert mem.ids == [expected_id(r, "<memory:chat>", i) for i, r in enumerate(mem.records())]
    assert disk.ids == [expected_id(r, "chat.jsonl", i) for i, r in enumerate(disk.records())]
    assert not set(mem.ids) & set(disk.ids)
    assert siftkit.read(CHAT, source="chat").ids == mem.ids          # stable
    unnamed = siftkit.read(CHAT)
    assert set(unnamed.table.column("source").to_pylist()) == {"memory"}
    assert set(unnamed.table.column("file").to_pylist()) == {"<memory>"}


def test_pandas_frame_reads_like_the_jsonl_file(tmp_path):
    pd = pytest.importorskip("pandas")
    disk = siftkit.read(str(write_jsonl(tmp_path / "alp.jsonl", ALPACA)))
    mem = siftkit.read(pd.DataFrame(ALPACA), source="alp")
    same_records(mem, disk)
    assert role_content(mem.records()[0]["messages"]) == [{"role": "user", "content": "Reverse the word number 0.\n\nword0"},
                                            {"role": "assistant", "content": "0drow"}]


def test_pandas_with_mapping_format_and_mixed_columns():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"q": ["Why is the sky blue?", "Name a colour."], "a": ["Rayleigh scattering.", "Teal."],
                       "extra": [{"k": 1}, "text"]})   # a column Arrow cannot type: read row by row
    pool = siftkit.read(df, mapping={"user": "q", "assistant": "a"})
    assert [r["messages"][1]["content"] for r in pool.records()] == ["Rayleigh scattering.", "Teal."]
    assert json.loads(pool.records()[0]["original"]) == {"q": "Why is the sky blue?", "a": "Rayleigh scattering.",
                                                         "extra": {"k": 1}}
    forced = siftkit.read(pd.DataFrame(ALPACA), format="alpaca")
    assert len(forced) == len(ALPACA)


def test_polars_frame_by_duck_typing(chat_file):
    pl = pytest.importorskip("polars")
    mem = siftkit.read(pl.DataFrame(CHAT), source="chat")
    same_records(mem, siftkit.read(str(chat_file)))


def test_arrow_table_and_record_batch(chat_file):
    table = pa.Table.from_pylist(CHAT)
    disk = siftkit.read(str(chat_file))
    same_records(siftkit.read(table, source="chat"), disk)
    same_records(siftkit.read(table.to_batches()[0], source="chat"), disk)
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    same_records(siftkit.read(reader, source="chat"), disk)

    class CStream:   # any object speaking the Arrow C stream protocol (duckdb results, ...)
        def __arrow_c_stream__(self, requested_schema=None):
            return table.__arrow_c_stream__(requested_schema)

    same_records(siftkit.read(CStream(), source="chat"), disk)


def test_hf_dataset_with_indices_name_and_splits(chat_file):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(CHAT, info=datasets.DatasetInfo(dataset_name="mini"))
    pool = siftkit.read(ds)
    same_records(siftkit.read(ds, source="chat"), siftkit.read(str(chat_file)))
    assert set(pool.table.column("source").to_pylist()) == {"mini"}
    assert set(pool.table.column("file").to_pylist()) == {"<dataset:mini>"}
    # a shuffled / selected dataset reads in its own row order (the indices mapping is applied)
    sub = ds.shuffle(seed=3).select(range(4))
    assert [role_content(r["messages"]) for r in siftkit.read(sub).records()] == [r["messages"] for r in sub]
    same_records(siftkit.read(ds.to_iterable_dataset(), source="chat"), siftkit.read(str(chat_file)))
    dd = datasets.DatasetDict({"train": ds, "test": ds.select(range(2))})
    with pytest.raises(ConfigError, match="DatasetDict needs split="):
        siftkit.read(dd)
    test = siftkit.read(dd, split="test")
    assert len(test) == 2 and set(test.table.column("file").to_pylist()) == {"<dataset:mini:test>"}
    with pytest.raises(ConfigError, match="'valid' not in the DatasetDict"):
        siftkit.read(dd, split="valid")


def test_generators_and_reader_processes(chat_file):
    """A generator is taken as the list it yields; in-memory inputs also read in worker processes (streams
    travel there as tables)."""
    same_records(siftkit.read((r for r in CHAT), source="chat"), siftkit.read(str(chat_file)))
    other = write_jsonl(chat_file.parent / "more.jsonl", CHAT[:3])
    assert len(siftkit.read(str(p) for p in [chat_file, other])) == len(CHAT) + 3
    table = pa.Table.from_pylist(CHAT)
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    two = siftkit.read([reader, CHAT], workers=2, source="chat")
    one = siftkit.read([table, CHAT], workers=1, source="chat")
    assert two.ids == one.ids and two.records() == one.records()


def test_list_of_conversations_as_lists_of_strings():
    pool = siftkit.read([["Hi there.", "Hello! How can I help?"], ("Say yes.", "Yes.", "Again.", "Yes.")])
    assert [len(r["messages"]) for r in pool.records()] == [2, 4]
    assert role_content(pool.records()[1]["messages"])[2] == {"role": "user", "content": "Again."}


def test_mixed_inputs_get_distinct_labels_and_ids(chat_file):
    pool = siftkit.read([CHAT, CHAT, str(chat_file), {"data": ALPACA, "source": "alp"}])
    files = pool.table.column("file").to_pylist()
    assert sorted(set(files)) == ["<memory:alp>", "<memory>", "<memory>#2", "chat.jsonl"]
    assert len(set(pool.ids)) == len(pool) == 3 * len(CHAT) + len(ALPACA)
    assert pool.counts()["files"] == 1                               # files on disk only
    # a list of input-spec dicts is still a list of paths
    assert siftkit.read([{"path": str(chat_file), "source": "c"}]).table.column("file")[0].as_py() == "chat.jsonl"
    with pytest.raises(ConfigError, match="unknown in-memory input keys"):
        siftkit.read({"data": CHAT, "header": True})


# ------------------------------------------------------------------ rejects

BAD = [convo("Fine question?", "Fine answer."),
       {"messages": [{"role": "user", "content": "Count?"}, {"role": "assistant", "content": {"x": 1}}]},
       convo("Empty answer?", "   "),
       {"something": "else"}]


def test_bad_in_memory_records_raise_with_row_and_field():
    with pytest.raises(InputDataError) as e:
        siftkit.read(BAD[:2])
    assert e.value.file == "<memory>" and e.value.record == 1 and e.value.field == "messages[1].content"
    assert str(e.value).startswith("<memory>#record 1 (field 'messages[1].content')")


def test_bad_in_memory_records_are_reported_as_rejects():
    pd = pytest.importorskip("pandas")
    for data in (BAD[:3], pd.DataFrame(BAD[:3])):
        pool = siftkit.read(data, on_error="skip", source="s")
        assert len(pool) == 1
        rej = {r["row"]: r for r in pool.rejects}
        assert set(rej) == {1, 2}
        assert rej[1]["file"] == "<memory:s>" and rej[1]["code"] == "malformed"
        assert rej[1]["field"] == "messages[1].content"
        assert rej[2]["code"] != "malformed" and "assistant" in rej[2]["reason"]
        assert pool.counts()["rejected"] == 2


# ------------------------------------------------------------------ select, score, inspect, exports

def test_select_in_memory_matches_the_file_and_exports(chat_file, tmp_path):
    pd = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    opts = {"method": "top", "by": "tokens_response", "cache_dir": str(tmp_path / "c")}
    sel = siftkit.select(pd.DataFrame(CHAT), 5, source="chat", **opts)
    ref = siftkit.select(str(chat_file), 5, **opts)
    assert [r["messages"] for r in sel.records()] == [r["messages"] for r in ref.records()]
    assert sel.config.inputs == ["<memory:chat>"]

    t = sel.to_arrow()
    assert t.schema == POOL_SCHEMA and t.column("id").to_pylist() == sel.ids
    with_sig = sel.to_arrow(signals=True)
    assert "tokens_response" in with_sig.column_names
    assert with_sig.column("tokens_response").to_pylist() == \
        sel.signals.column("tokens_response").take(pa.array(sel.selected)).to_pylist()
    orig = sel.to_arrow(original=True)
    assert orig.column_names == ["messages"] and orig.to_pylist() == [CHAT[i] for i in sel.pool.table.column(
        "row").take(pa.array(sel.selected)).to_pylist()]
    assert sel.records(original=True) == orig.to_pylist()
    df = sel.to_pandas()
    assert list(df["id"]) == sel.ids
    assert sel.to_pandas(original=True)["messages"].tolist() == [r["messages"] for r in orig.to_pylist()]
    ds = sel.to_dataset()
    assert isinstance(ds, datasets.Dataset) and ds["id"] == sel.ids

    # round trips: the exports read back as the same conversations
    for back in (sel.to_dataset(original=True), sel.to_pandas(original=True), orig, t, sel.to_dataset()):
        assert [r["messages"] for r in siftkit.read(back).records()] == [r["messages"] for r in sel.records()]


def test_original_export_of_heterogeneous_and_list_records(tmp_path):
    rows = [CHAT[0], {**CHAT[1], "tag": "x"}, {**CHAT[2], "score": 3}]
    sel = siftkit.select(rows, 3, cache_dir=str(tmp_path / "c"))
    t = sel.to_arrow(original=True)
    assert t.column_names == ["messages", "tag", "score"]        # the union of the fields
    assert t.to_pylist() == [{"tag": None, "score": None, **rows[0]}, {"score": None, **rows[1]},
                             {"tag": None, **rows[2]}]
    lists = siftkit.select([["Hi.", "Hello."], ["Yes?", "Yes."]], 2, cache_dir=str(tmp_path / "c"))
    assert lists.records(original=True) == [["Hi.", "Hello."], ["Yes?", "Yes."]]
    with pytest.raises(InputDataError, match="not a mapping"):
        lists.to_arrow(original=True)


def test_to_dataset_without_datasets_is_a_clear_error(tmp_path, monkeypatch):
    sel = siftkit.select(CHAT, 2, cache_dir=str(tmp_path / "c"))
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingDependencyError, match=r"needs datasets: pip install 'siftkit\[hf\]'"):
        sel.to_dataset()


def test_run_recipe_dict_with_in_memory_inputs(tmp_path):
    recipe = {"inputs": [{"data": CHAT, "source": "chat"}, ALPACA], "steps": [{"dedup": "exact"},
              {"select": "random"}], "budget": 6, "cache_dir": str(tmp_path / "c"),
              "output": {"dir": str(tmp_path / "out")}}
    sel, manifest = siftkit.run(recipe)
    assert len(sel.selected) == 6
    assert manifest["config"]["inputs"] == ["<memory:chat>", "<memory>"]
    assert manifest["counts"]["records"] == len(CHAT) + len(ALPACA)
    lines = (tmp_path / "out" / manifest["outputs"]["selected"]).read_text().splitlines()
    assert [orjson.loads(x) for x in lines] == sel.records(original=True)


def test_score_and_inspect_take_in_memory_data(tmp_path):
    pd = pytest.importorskip("pandas")
    table = siftkit.score(pd.DataFrame(CHAT), ["text_stats"], cache_dir=str(tmp_path / "c"))
    assert table.num_rows == len(CHAT) and "chars_response" in table.column_names
    summary = siftkit.inspect(pa.Table.from_pylist(CHAT), signals=["text_stats"], cache_dir=str(tmp_path / "c"),
                              source="chat")
    assert summary["counts"]["records"] == len(CHAT)
    assert summary["signals"]["chars_total"]["chat"]["n"] == len(CHAT)
    qa = [{"q": "Why?", "a": "Because it is so."}, {"q": "How?", "a": "Carefully and slowly."}]
    t = siftkit.score(qa, ["text_stats"], mapping={"user": "q", "assistant": "a"}, cache_dir=str(tmp_path / "c"))
    assert t.column("chars_response").to_pylist() == [17, 21]
    with pytest.raises(ConfigError, match="--by must be a pool column"):
        siftkit.inspect(CHAT, by="chars_total")


def test_in_memory_input_keys_are_the_input_spec_fields():
    import dataclasses

    from siftkit.io.memory import INPUT_KEYS
    from siftkit.io.pool import InputSpec

    assert INPUT_KEYS == {f.name for f in dataclasses.fields(InputSpec)} - {"data"}
