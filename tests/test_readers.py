import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from conftest import convo, write_jsonl
from siftkit.errors import ConfigError, EmptyResultError, InputDataError
from siftkit.io import InputSpec, read_pool
from siftkit.io import pool as pool_mod
from siftkit.io import readers as R

ROWS = [convo(f"question {i}", f"answer number {i}") for i in range(5)]


def contents(pool):
    return [[m["content"] for m in r["messages"]] for r in pool.table.select(["messages"]).to_pylist()]


def test_jsonl_gz_zst_json_parquet_give_same_records(tmp_path: Path):
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in ROWS)
    with open(tmp_path / "c.jsonl.zst", "wb") as fh:
        fh.write(zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in ROWS).encode()))
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "e.parquet")
    expected = [[f"question {i}", f"answer number {i}"] for i in range(5)]
    for name in ["a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.json", "e.parquet"]:
        p = read_pool(str(tmp_path / name))
        assert contents(p) == expected, name
        assert p.table.column("source").to_pylist() == [name.split(".")[0]] * 5


def test_json_wrapped_in_object(tmp_path: Path):
    (tmp_path / "w.json").write_text(json.dumps({"version": 1, "data": ROWS}))
    assert len(read_pool(str(tmp_path / "w.json"))) == 5


def test_csv_with_header_and_tsv_without(tmp_path: Path):
    (tmp_path / "h.csv").write_text('instruction,input,output\n"Say hi","","Hi, there!"\nAdd,"1,2",3\n')
    p = read_pool(str(tmp_path / "h.csv"))
    assert contents(p) == [["Say hi", "Hi, there!"], ["Add\n\n1,2", "3"]]
    (tmp_path / "n.tsv").write_text("What is 1+1?\t2\tOne plus one is two.\nWhat is 2+2?\t4\tTwo plus two is four.\n")
    with pytest.raises(InputDataError, match="header-less table"):
        read_pool(str(tmp_path / "n.tsv"))
    p = read_pool(InputSpec(str(tmp_path / "n.tsv"), mapping={"user": "0", "assistant": "{2} So: {1}."}))
    assert contents(p)[1] == ["What is 2+2?", "Two plus two is four. So: 4."]
    assert p.table.column("line").to_pylist() == [1, 2]


def test_hf_saved_to_disk_folder(tmp_path: Path):
    d = tmp_path / "hfds"
    d.mkdir()
    table = pa.Table.from_pylist([{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}])
    with pa.OSFile(str(d / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (d / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (d / "dataset_info.json").write_text("{}")
    p = read_pool(str(d))
    assert contents(p) == [["q1", "a1"], ["q2", "a2"]]


def test_directory_sources_and_globs(small_pool: Path):
    p = read_pool(str(small_pool))
    assert sorted(set(p.table.column("source").to_pylist())) == ["chat", "tasks"]
    assert len(p) == 7
    g = read_pool(str(small_pool / "*" / "*.jsonl"))
    assert len(g) == 4
    named = read_pool(InputSpec(str(small_pool / "tasks"), source="my_tasks"))
    assert set(named.table.column("source").to_pylist()) == {"my_tasks"}


def test_ids_are_stable_unique_and_provenance_based(small_pool: Path):
    a = read_pool(str(small_pool))
    b = read_pool(str(small_pool))
    assert a.ids == b.ids
    assert len(set(a.ids)) == len(a)
    assert all(len(i) == 16 for i in a.ids)
    # The same conversation at another position gets another id.
    recs = [convo("same", "same answer")] * 2
    p = read_pool(str(write_jsonl(small_pool.parent / "dup.jsonl", recs)))
    assert len(set(p.ids)) == 2


def test_original_row_is_untouched(tmp_path: Path):
    row = {"instruction": "x", "input": "", "output": "y", "extra": {"n": 1.5, "tags": ["a"]}}
    (tmp_path / "o.json").write_text(json.dumps([row]))
    p = read_pool(str(tmp_path / "o.json"))
    assert json.loads(p.table.column("original")[0].as_py()) == row


def test_malformed_json_array_strict_names_file_line_column(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c", "output": "d"},\n]\n')
    with pytest.raises(InputDataError) as e:
        read_pool(str(bad))
    assert "bad.json:4:" in str(e.value) or "bad.json:3:" in str(e.value)
    assert e.value.line is not None and e.value.column is not None


def test_malformed_json_array_skip_recovers_every_record(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c", "output": "d"},\n]\n')
    p = read_pool(str(bad), on_error="skip")
    assert len(p) == 2
    assert [r["code"] for r in p.rejects] == ["defect"]
    assert "trailing comma" in p.rejects[0]["reason"]
    assert p.counts()["rejected"] == 0 and p.counts()["defects"] == 1


def test_broken_element_in_array_is_rejected_and_rest_kept(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"},\n{"instruction": "c", "output": },\n'
                   '{"instruction": "e", "output": "f"}]')
    p = read_pool(str(bad), on_error="skip")
    assert contents(p) == [["a", "b"], ["e", "f"]]
    rej = [r for r in p.rejects if r["code"] == "parse_error"]
    assert len(rej) == 1 and rej[0]["line"] == 2 and rej[0]["row"] == 1


def test_jsonl_bad_line_strict_and_skip(tmp_path: Path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(ROWS[0]) + "\n{oops\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(InputDataError, match=r"x.jsonl:2:2"):
        read_pool(str(f))
    p = read_pool(str(f), on_error="skip")
    assert len(p) == 2 and p.rejects[0]["line"] == 2 and p.counts()["rejected"] == 1


def test_bad_record_field_error_and_skip(tmp_path: Path):
    f = write_jsonl(tmp_path / "y.jsonl", [ROWS[0], {"messages": [{"role": "wizard", "content": "x"}]}])
    with pytest.raises(InputDataError) as e:
        read_pool(str(f))
    assert "y.jsonl:2" in str(e.value) and "messages[0].role" in str(e.value)
    p = read_pool(str(f), on_error="skip")
    assert p.rejects[0]["field"] == "messages[0].role" and p.rejects[0]["code"] == "malformed"


def test_unusable_conversations_are_rejected_not_dropped(tmp_path: Path):
    f = write_jsonl(tmp_path / "z.jsonl", [ROWS[0], convo("q", ""), {"messages": [{"role": "user", "content": "q"}]}])
    p = read_pool(str(f))  # strict mode still reads: unusable records are rejects, never errors
    assert len(p) == 1
    assert p.counts()["rejected_by_reason"] == {"empty_response": 1, "no_assistant_turn": 1}
    assert p.counts()["records"] + p.counts()["rejected"] == 3


def test_helpful_errors(tmp_path: Path):
    with pytest.raises(InputDataError, match="input not found"):
        read_pool(str(tmp_path / "nope.jsonl"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputDataError, match="unknown file type"):
        read_pool(str(tmp_path / "notes.txt"))
    write_jsonl(tmp_path / "u.jsonl", [{"text": "plain"}])
    with pytest.raises(InputDataError, match="unknown record format"):
        read_pool(str(tmp_path / "u.jsonl"))
    write_jsonl(tmp_path / "e.jsonl", [convo("q", " ")])
    with pytest.raises(EmptyResultError, match="pool is empty"):
        read_pool(str(tmp_path / "e.jsonl"))
    with pytest.raises(ConfigError, match="unknown format"):
        read_pool(InputSpec(str(tmp_path / "u.jsonl"), format="xml"))
    with pytest.raises(InputDataError, match="no files match"):
        read_pool(str(tmp_path / "*.parquet"))


def test_jsonl_byte_ranges_match_whole_file(tmp_path: Path, monkeypatch):
    rows = [convo(f"q{i} " + "x" * (i % 37), f"a{i}") for i in range(3000)]
    f = write_jsonl(tmp_path / "big.jsonl", rows)
    whole = read_pool(str(f))
    monkeypatch.setattr(pool_mod, "JSONL_CHUNK_BYTES", 10_000)
    tasks, _ = pool_mod.resolve_inputs([InputSpec(str(f))], recover=False)
    assert len(tasks) > 5
    chunked = read_pool(str(f), workers=2)
    assert chunked.table.equals(whole.table)
    assert [fi.records for fi in chunked.files] == [3000]


def test_same_file_name_in_different_folders_keeps_ids_distinct(tmp_path: Path):
    a = write_jsonl(tmp_path / "a" / "part.jsonl", ROWS)
    b = write_jsonl(tmp_path / "b" / "part.jsonl", ROWS)  # identical content, same row numbers
    p = read_pool([str(a), str(b)])
    assert len(set(p.ids)) == 10
    assert sorted({f.rel for f in p.files}) == ["a/part.jsonl", "b/part.jsonl"]


def test_runner_chunk_bytes_splits_tasks_with_the_same_records(tmp_path: Path):
    """A task runner that asks for smaller tasks (``run_tasks.chunk_bytes``, the Ray reader) gets the JSON
    Lines ranges cut to about that size; the pool (ids, rows, order, file counts) is the same."""
    rows = [convo(f"q{i} " + "y" * (i % 23), f"a{i}") for i in range(2000)]
    f = write_jsonl(tmp_path / "big.jsonl", rows)
    whole = read_pool(str(f))

    class Runner:
        def __init__(self) -> None:
            self.tasks: list = []
            self.asked: list[int] = []

        def chunk_bytes(self, total: int) -> int:
            self.asked.append(total)
            return total // 7

        def __call__(self, tasks, finished, advance):
            self.tasks = list(tasks)
            out = {}
            for i, t in enumerate(tasks):
                out[i] = pool_mod.process_task(t)
                advance(pool_mod.result_items(out[i]))    # each task's items in full by its finished()
                finished(t, out[i])
            return out

    r = Runner()
    split = read_pool(str(f), run_tasks=r)
    assert r.asked == [f.stat().st_size]
    assert 7 <= len(r.tasks) <= 8 and all(t.byte_range for t in r.tasks)
    starts = [t.byte_range[0] for t in r.tasks]
    assert starts == sorted(starts) and starts[0] == 0 and r.tasks[-1].byte_range[1] == f.stat().st_size
    assert split.table.equals(whole.table)
    assert [fi.records for fi in split.files] == [2000]


def test_runner_counting_lines_numbers_the_ranges(tmp_path: Path, monkeypatch):
    """A runner with ``count_lines`` (the Ray reader: newlines counted on the workers) gets the JSONL ranges
    without first lines and numbers them from its counts: the driver reads only a line at each cut, and
    the pool is the same as a read that counts lines itself."""
    rows = [convo(f"q{i} " + "w" * (i % 31), f"a{i}") for i in range(1500)]
    f = write_jsonl(tmp_path / "big.jsonl", rows)
    whole = read_pool(str(f))
    monkeypatch.setattr(pool_mod, "JSONL_CHUNK_BYTES", 20_000)
    tasks, _ = pool_mod.resolve_inputs([InputSpec(str(f))], recover=False, count_lines=False)
    assert len(tasks) > 4 and tasks[0].byte_range[2] == 1 and all(t.byte_range[2] is None for t in tasks[1:])

    class Runner:
        def __init__(self) -> None:
            self.jobs: list = []

        def count_lines(self, jobs):
            self.jobs = list(jobs)
            return [R.count_newlines(*j) for j in jobs]

        def __call__(self, tasks, finished, advance):
            assert all(t.byte_range[2] is not None for t in tasks)
            out = {i: pool_mod.process_task(t) for i, t in enumerate(tasks)}
            for i, t in enumerate(tasks):
                finished(t, out[i])
            return out

    r = Runner()
    got = read_pool(str(f), run_tasks=r)
    assert len(r.jobs) == len(tasks) - 1            # every range but the last is counted
    assert got.table.equals(whole.table)
