"""Every file and record accounted for: whole-file rejects, skipped files, truncation, strict slow paths,
per-file options (io layer, recipes and CLI) and ``--rejects`` on failing runs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from conftest import write_jsonl
from siftkit.cli import main
from siftkit.errors import ConfigError, InputDataError
from siftkit.io import InputSpec, read_pool
from siftkit.io.pool import resolve_inputs

QA = [{"question": f"q{i}?", "answer": f"a{i}."} for i in range(6)]
TSV = "What is 1+1?\t2\tOne plus one is two.\nWhat is 2+2?\t4\tTwo plus two is four.\n"
FLAN = {"user": "{0}", "assistant": "{2}\nSo the answer is {1}."}


def contents(pool):
    return [[m["content"] for m in r["messages"]] for r in pool.table.select(["messages"]).to_pylist()]


def test_unknown_format_file_is_rejected_whole_and_counted(tmp_path: Path):
    write_jsonl(tmp_path / "p" / "good.jsonl", QA[:2])
    (tmp_path / "p" / "cot").mkdir()
    (tmp_path / "p" / "cot" / "x.tsv").write_text(TSV)
    with pytest.raises(InputDataError, match=r"x\.tsv.*header-less table"):
        read_pool(str(tmp_path / "p"))
    pool = read_pool(str(tmp_path / "p"), on_error="skip")
    assert len(pool) == 2
    [r] = pool.rejected_files
    assert r["file"] == "cot/x.tsv" and r["code"] == "unknown_format" and r["records"] == 2
    assert "--map 'cot/*.tsv:user={0}'" in r["reason"]
    c = pool.counts()
    assert c["rejected_files"] == 1 and c["rejected"] == 2 and c["by_source"]["cot"]["rejected"] == 2
    info = {f.rel: f for f in pool.files}["cot/x.tsv"]
    assert (info.records, info.rejected, info.format) == (0, 2, "unknown")
    assert c["records"] + c["rejected"] == 4


def test_per_file_options_in_the_io_layer(tmp_path: Path):
    root = tmp_path / "p"
    write_jsonl(root / "good.jsonl", QA[:2])
    (root / "cot").mkdir()
    (root / "cot" / "x.tsv").write_text(TSV)
    (root / "cot" / "hdr.tsv").write_text("instruction\toutput\nSay hi\tHi!\n")
    spec = InputSpec(str(root), per_file=[{"match": "cot/x.tsv", "mapping": FLAN, "source": "flan"},
                                         {"match": "hdr.tsv", "format": "alpaca"}])
    pool = read_pool(spec)
    got = {}
    for f, c in zip(pool.table.column("file").to_pylist(), contents(pool)):
        got.setdefault(f, c)
    assert got["cot/x.tsv"] == ["What is 1+1?", "One plus one is two.\nSo the answer is 2."]
    assert got["cot/hdr.tsv"] == ["Say hi", "Hi!"]
    assert {f.rel: f.source for f in pool.files}["cot/x.tsv"] == "flan"
    assert {f.rel: f.format for f in pool.files}["cot/hdr.tsv"] == "alpaca"
    # An input-wide mapping is replaced by a per-file format (and the other way round).
    spec = InputSpec(str(root / "cot"), mapping=FLAN, per_file=[{"match": "hdr.tsv", "format": "alpaca"}])
    assert len(read_pool(spec)) == 3
    # The path as given matches too; a pattern matching nothing is a config error.
    p = read_pool(InputSpec(str(root), per_file=[{"match": str(root / "cot" / "*.tsv"), "mapping": FLAN}]),
                  on_error="skip")
    assert len(p) == 2 + 2 and p.counts()["rejected"] == 1  # hdr.tsv has named columns, not {0}
    with pytest.raises(ConfigError, match="matches no input file"):
        read_pool(InputSpec(str(root), per_file=[{"match": "flan/*.tsv", "mapping": FLAN}]))
    with pytest.raises(ConfigError, match=r"per_file\[0\]: unknown keys"):
        InputSpec.coerce({"path": str(root), "per_file": [{"match": "*.tsv", "maping": FLAN}]})
    with pytest.raises(ConfigError, match="needs 'match'"):
        InputSpec.coerce({"path": str(root), "per_file": [{"mapping": FLAN}]})


def test_per_file_options_in_a_recipe(tmp_path: Path):
    root = tmp_path / "pool"
    write_jsonl(root / "chat" / "a.jsonl", QA[:3])
    (root / "flan_cot").mkdir()
    (root / "flan_cot" / "x.tsv").write_text(TSV)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("inputs:\n  - path: pool\n    per_file:\n      - match: 'flan_cot/*.tsv'\n"
                      "        mapping: {user: '{0}', assistant: \"{2}\\nSo the answer is {1}.\"}\n"
                      "steps:\n  - select: random\nbudget: 1.0\n")
    assert main(["-q", "run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    c = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    assert c["records"] == 5 and c["selected"] == 5 and c["rejected"] == 0


def test_cli_per_file_syntax(tmp_path: Path, capsys):
    root = tmp_path / "pool"
    write_jsonl(root / "chat" / "a.jsonl", QA[:3])
    (root / "flan_cot").mkdir()
    (root / "flan_cot" / "x.tsv").write_text(TSV)
    (root / "other.tsv").write_text("question\tanswer\nq\ta\n")
    args = ["read", str(root), "--json", "--map", "flan_cot/*.tsv:user={0}",
            "--map", "flan_cot/*.tsv:assistant={2}\\nSo the answer is {1}.", "--source", "flan_cot/*.tsv:cot",
            "--no-header", "other.tsv", "--map", "other.tsv:user={0}", "--map", "other.tsv:assistant={1}"]
    assert main(["-q", *args]) == 0
    out = capsys.readouterr().out
    c = json.loads(out[out.index("\n{") + 1:])
    assert c["records"] == 3 + 2 + 2 and c["by_source"]["cot"]["read"] == 2
    # Errors: a pattern that matches nothing, an unknown format, a --map without '='.
    assert main(["-q", "read", str(root), "--map", "nope/*.tsv:user={0}", "--map", "nope/*.tsv:assistant={1}"]) == 2
    assert "matches no input file" in capsys.readouterr().err
    assert main(["-q", "read", str(root), "--format", "*.tsv:xml"]) == 2
    assert "unknown format 'xml'" in capsys.readouterr().err
    assert main(["-q", "read", str(root), "--map", "flan_cot/*.tsv:user"]) == 2


def test_map_escapes_keep_non_ascii(tmp_path: Path):
    from siftkit.cli import _map_item

    assert _map_item("assistant={2}\\n答案是 {1}。") == (None, "assistant", "{2}\n答案是 {1}。")
    assert _map_item("a/*.tsv:user=x:y") == ("a/*.tsv", "user", "x:y")


def test_rejects_file_is_always_written(tmp_path: Path, capsys):
    good = write_jsonl(tmp_path / "p" / "a.jsonl", QA[:2])
    rej = tmp_path / "rejects.jsonl"
    assert main(["-q", "read", str(good), "--rejects", str(rej)]) == 0
    assert rej.exists() and rej.read_text() == ""
    (tmp_path / "p" / "b.jsonl").write_text(json.dumps(QA[0]) + "\n{bad\n")
    (tmp_path / "p" / "c.jsonl").write_text(json.dumps({"question": "q", "answer": ""}) + "\n")
    # Strict: the run stops at b.jsonl:2; the file holds what was rejected before and the error.
    assert main(["-q", "read", str(tmp_path / "p"), "--rejects", str(rej)]) == 3
    rows = [json.loads(x) for x in rej.read_text().splitlines()]
    assert rows[-1]["code"] == "error" and rows[-1]["line"] == 2 and rows[-1]["file"].endswith("b.jsonl")
    # Empty result (exit 4): every reject is written.
    assert main(["-q", "read", str(tmp_path / "p" / "c.jsonl"), "--rejects", str(rej)]) == 4
    assert [json.loads(x)["code"] for x in rej.read_text().splitlines()] == ["empty_response"]


def test_truncated_gzip_keeps_what_came_before_the_cut(tmp_path: Path):
    rows = [{"question": f"question {i} " + "x" * 50, "answer": f"answer {i}"} for i in range(200)]
    full = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    (tmp_path / "t.jsonl.gz").write_bytes(full[: len(full) // 2])
    with pytest.raises(InputDataError, match=r"t\.jsonl\.gz:\d+: truncated gzip stream"):
        read_pool(str(tmp_path / "t.jsonl.gz"))
    pool = read_pool(str(tmp_path / "t.jsonl.gz"), on_error="skip")
    [r] = pool.rejected_files
    assert r["code"] == "truncated" and r["kept"] == len(pool) and 0 < len(pool) < 200
    assert f"the {len(pool):,} complete line(s) before it were read" in r["reason"]
    assert contents(pool)[-1][0] == rows[len(pool) - 1]["question"]  # in order, none missing before the cut


def test_json_array_slow_path_is_as_strict_as_the_fast_path(tmp_path: Path):
    data = (b'[{"instruction": "caf\xc3\xa9", "output": "ok"},\n{"instruction": "caf\xe9", "output": "x"},\n'
            b'{"instruction": "q", "output": "a", "s": NaN},\n{"instruction": "\\udc00", "output": "y"},\n'
            b'{"instruction": "d", "output": "1", "output": "2"},\n{"instruction": "e", "output": "f"},]')
    (tmp_path / "a.json").write_bytes(data)
    pool = read_pool(str(tmp_path / "a.json"), on_error="skip")
    assert contents(pool) == [["café", "ok"], ["e", "f"]]  # no U+FFFD anywhere, nothing changed silently
    codes = sorted(r["code"] for r in pool.rejects if r["code"] != "defect")
    assert codes == ["duplicate_key", "invalid_utf8", "lone_surrogate", "non_finite_number"]
    assert all(r["line"] for r in pool.rejects if r["code"] != "defect")


def test_skipped_files_have_reasons_and_symlinks_are_followed_once(tmp_path: Path):
    root = tmp_path / "p"
    write_jsonl(root / "a.jsonl", QA[:1])
    write_jsonl(root / ".hidden" / "b.jsonl", QA[:1])
    (root / "notes.md").write_text("x")
    write_jsonl(tmp_path / "elsewhere" / "c.jsonl", QA[:2])
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "linked2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "loop").symlink_to(".", target_is_directory=True)
    tasks, skipped = resolve_inputs([InputSpec(str(root))], recover=False)
    assert sorted(t.rel for t in tasks) == ["a.jsonl", "linked/c.jsonl"]
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert reasons[".hidden"].startswith("hidden") and "not a data file type" in reasons["notes.md"]
    assert "already read as linked" in reasons["linked2"] and "already read as ." in reasons["loop"]
    pool = read_pool(str(root))
    assert len(pool) == 3 and pool.counts()["skipped_files"] == 4


def test_broken_links_and_hf_folders_are_rejected_in_skip_mode(tmp_path: Path):
    root = tmp_path / "p"
    write_jsonl(root / "a.jsonl", QA[:2])
    (root / "gone.jsonl").symlink_to(root / "missing.jsonl")
    hf = root / "hfds"
    hf.mkdir()
    (hf / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../../secret.arrow"}]}))
    with pytest.raises(InputDataError, match="dangling symlink"):
        read_pool(str(root))
    pool = read_pool(str(root), on_error="skip")
    got = {r["file"]: r["code"] for r in pool.rejected_files}
    assert got == {"gone.jsonl": "dangling_symlink", "hfds": "bad_hf_folder"}
    assert "outside the folder" in next(r["reason"] for r in pool.rejected_files if r["file"] == "hfds")


def test_rejected_files_cross_worker_processes(tmp_path: Path):
    root = tmp_path / "p"
    for i in range(3):
        write_jsonl(root / f"a{i}.jsonl", QA)
    (root / "z.jsonl.gz").write_bytes(b"not gzip at all")
    pool = read_pool(str(root), on_error="skip", workers=2)
    assert len(pool) == 18 and [r["code"] for r in pool.rejected_files] == ["corrupt_compressed"]
    with pytest.raises(InputDataError, match=r"z\.jsonl\.gz: corrupt gzip stream"):
        read_pool(str(root), workers=2)


def test_json_lines_in_a_json_file_and_single_objects(tmp_path: Path):
    (tmp_path / "l.json").write_text("".join(json.dumps(r) + "\n" for r in QA))
    pool = read_pool(str(tmp_path / "l.json"))
    assert len(pool) == 6 and [r["code"] for r in pool.rejects] == ["defect"]
    assert "JSON Lines" in pool.rejects[0]["reason"]
    (tmp_path / "o.json").write_text(json.dumps(QA[0]))
    assert len(read_pool(str(tmp_path / "o.json"))) == 1


def test_unreadable_folder_and_file_are_rejected_with_their_reason(tmp_path: Path, monkeypatch):
    """Permissions do not stop root (the tests' user here), so the OS refusal is simulated for two paths."""
    import os

    from siftkit.io import readers as R

    root = tmp_path / "p"
    write_jsonl(root / "a.jsonl", QA[:2])
    write_jsonl(root / "locked" / "b.jsonl", QA[:2])
    write_jsonl(root / "secret.jsonl", QA[:2])
    real_listdir, real_open = os.listdir, open

    def listdir(p):
        if str(p).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_listdir(p)

    def fake_open(p, *a, **k):
        if str(p).endswith("secret.jsonl"):
            raise PermissionError(13, "Permission denied")
        return real_open(p, *a, **k)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(R, "open", fake_open, raising=False)
    with pytest.raises(InputDataError, match=r"locked: cannot list folder: Permission denied"):
        read_pool(str(root))
    pool = read_pool(str(root), on_error="skip")
    got = {r["file"]: (r["code"], r["reason"]) for r in pool.rejected_files}
    assert got["locked"] == ("unreadable_folder", "cannot list folder: Permission denied")
    assert got["secret.jsonl"][0] == "unreadable" and "Permission denied" in got["secret.jsonl"][1]
    assert len(pool) == 2
