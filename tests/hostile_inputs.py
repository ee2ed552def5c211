"""Generator of malformed and adversarial inputs for ``siftkit read`` / ``siftkit select`` (no binary fixtures:
everything is built in a temporary folder at test time).

Each ``Case`` writes one or more hostile files into its own folder, next to a known-good companion file
(``ok_companion.jsonl``, 2 records) unless ``companion=False``, and states *independently of siftkit* (from how
the bytes were made, with the standard library only) what the input holds:

- ``records``: how many records the hostile file(s) hold (None when that cannot be told, e.g. a FIFO);
- ``good``: how many of them are usable conversations (what ``--on-error skip`` must keep);
- ``strict`` / ``skip``: the exit code without / with ``--on-error skip`` (0, 3 or 4; never 1);
- ``rejected_files``: how many files ``--on-error skip`` must reject whole (or from some point on);
- ``names``: a string the error message must contain (the offending file's name);
- ``skipped``: at least this many entries must be listed as skipped (hidden, other types, links read once).

Conservation, checked by the test: records in (``records`` + 2 for the companion) = records kept + rejected,
and with ``--budget 100%`` kept = selected.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

COMPANION = "ok_companion.jsonl"
COMPANION_RECORDS = 2


@dataclass
class Case:
    name: str
    build: Callable[[Path], None]          # writes the hostile file(s) into the case folder
    records: int | None
    good: int
    strict: int
    skip: int = 0
    rejected_files: int = 0
    names: str | None = None                # must appear in the error message (exit 3)
    args: list[str] = field(default_factory=list)
    companion: bool = True
    input: str | None = None                # input path relative to the case folder (default: the folder)
    skipped: int = 0
    needs: str | None = None                # "nonroot", "fifo", "symlink", "datasets"


def qa(i: int) -> dict:
    return {"question": f"Question number {i}?", "answer": f"Answer number {i}."}


def alpaca(i: int) -> dict:
    return {"instruction": f"Do task {i}.", "input": "", "output": f"Done with task {i}."}


def jl(rows: list, sep: str = "\n") -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + sep for r in rows).encode()


def put(d: Path, name: str | bytes, data: bytes | str) -> Path:
    p = Path(os.fsdecode(os.path.join(os.fsencode(str(d)), name if isinstance(name, bytes) else name.encode())))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def complete_lines_before_cut(decompressed: bytes) -> int:
    """Usable records on the complete lines of what a decompressor could deliver before a cut or a damaged
    byte (checked with the stdlib: a JSON object with a question and an answer)."""
    n = 0
    for ln in decompressed.split(b"\n")[:-1]:
        try:
            obj = json.loads(ln.decode("utf-8"), parse_constant=float.__call__)
        except (ValueError, TypeError):
            continue
        n += isinstance(obj, dict) and isinstance(obj.get("question"), str) and isinstance(obj.get("answer"), str)
    return n


def zlib_bytewise(data: bytes) -> bytes:
    """What a gzip decompressor delivers from ``data`` fed one byte at a time, up to the first bad byte."""
    d = zlib.decompressobj(wbits=31)
    out = []
    for i in range(len(data)):
        try:
            out.append(d.decompress(data[i:i + 1]))
        except zlib.error:
            break
        if d.eof:
            break
    return b"".join(out)


def gz_cut(rows: list, frac: float) -> tuple[bytes, int]:
    full = gzip.compress(jl(rows), mtime=0)
    cut = full[: int(len(full) * frac)]
    return cut, complete_lines_before_cut(zlib_bytewise(cut))


def zst_cut(rows: list, frac: float) -> tuple[bytes, int]:
    import zstandard

    full = zstandard.ZstdCompressor(write_content_size=True).compress(jl(rows))
    cut = full[: int(len(full) * frac)]
    try:
        got = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    except zstandard.ZstdError:
        got = b""
    return cut, complete_lines_before_cut(got)


def _arrow_bytes(rows: list, stream: bool = True) -> bytes:
    import pyarrow as pa

    t = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    w = pa.ipc.new_stream(sink, t.schema) if stream else pa.ipc.new_file(sink, t.schema)
    w.write_table(t)
    w.close()
    return sink.getvalue().to_pybytes()


def _parquet_bytes(rows: list, schema=None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink)
    return sink.getvalue().to_pybytes()


def _hf_folder(d: Path, name: str, rows: list, state: object | None = None, data_name: str = "data-0.arrow") -> Path:
    f = d / name
    f.mkdir(parents=True)
    (f / data_name).write_bytes(_arrow_bytes(rows))
    st = state if state is not None else {"_data_files": [{"filename": data_name}]}
    (f / "state.json").write_text(st if isinstance(st, str) else json.dumps(st))
    (f / "dataset_info.json").write_text("{}")
    return f


def deep(n: int) -> str:
    return "[" * n + "]" * n


ROWS3 = [qa(i) for i in range(3)]
ALP3 = [alpaca(i) for i in range(3)]


def cases() -> list[Case]:
    C: list[Case] = []

    def add(name, build, records, good, strict, **kw):
        C.append(Case(name, build, records, good, strict, **kw))

    # ------------------------------------------------------------ JSON Lines
    add("jsonl_ok", lambda d: put(d, "h_ok.jsonl", jl(ROWS3)), 3, 3, 0)
    add("jsonl_ndjson", lambda d: put(d, "h_ok.ndjson", jl(ROWS3)), 3, 3, 0)
    add("jsonl_bom", lambda d: put(d, "h_bom.jsonl", b"\xef\xbb\xbf" + jl(ROWS3)), 3, 3, 0)
    add("jsonl_crlf", lambda d: put(d, "h_crlf.jsonl", jl(ROWS3, "\r\n")), 3, 3, 0)
    add("jsonl_no_final_newline", lambda d: put(d, "h_nonl.jsonl", jl(ROWS3).rstrip(b"\n")), 3, 3, 0)
    add("jsonl_blank_lines", lambda d: put(d, "h_blank.jsonl", b"\n\n" + jl(ROWS3, "\n\n  \n")), 3, 3, 0)
    add("jsonl_bad_line", lambda d: put(d, "h_bad.jsonl", jl(ROWS3[:1]) + b"{oops\n" + jl(ROWS3[1:])),
        4, 3, 3, names="h_bad.jsonl")
    add("jsonl_trailing_garbage", lambda d: put(d, "h_garb.jsonl", jl(ROWS3) + b'{"question": "q"} xyz\n'),
        4, 3, 3, names="h_garb.jsonl")
    add("jsonl_invalid_utf8", lambda d: put(d, "h_utf8.jsonl", jl(ROWS3[:2]) + b'{"question": "caf\xe9?", '
                                            b'"answer": "x"}\n'), 3, 2, 3, names="h_utf8.jsonl")
    add("jsonl_latin1_file", lambda d: put(d, "h_latin1.jsonl", "".join(
        json.dumps(qa(i) | {"answer": f"caf\xe9 {i}"}, ensure_ascii=False) + "\n" for i in range(3)).encode("latin-1")),
        3, 0, 3, names="h_latin1.jsonl")
    add("jsonl_lone_surrogate", lambda d: put(d, "h_sur.jsonl", jl(ROWS3[:2]) + b'{"question": "\\ud800 x", '
                                              b'"answer": "y"}\n'), 3, 2, 3, names="h_sur.jsonl")
    add("jsonl_low_surrogate_alone", lambda d: put(d, "h_sur2.jsonl", jl(ROWS3[:2]) + b'{"question": "a\\udc00", '
                                                   b'"answer": "y"}\n'), 3, 2, 3, names="h_sur2.jsonl")
    add("jsonl_nan", lambda d: put(d, "h_nan.jsonl", jl(ROWS3[:2]) + b'{"question": "q", "answer": "a", '
                                   b'"score": NaN}\n'), 3, 2, 3, names="h_nan.jsonl")
    add("jsonl_infinity", lambda d: put(d, "h_inf.jsonl", b'{"question": "q", "answer": "a", "s": -Infinity}\n'
                                        + jl(ROWS3[:2])), 3, 2, 3, names="h_inf.jsonl")
    add("jsonl_dup_keys_differ", lambda d: put(d, "h_dup.jsonl", jl(ROWS3[:2]) + b'{"question": "q", '
                                               b'"answer": "first", "answer": "second"}\n'), 3, 2, 3, names="h_dup.jsonl")
    add("jsonl_dup_keys_same", lambda d: put(d, "h_dups.jsonl", jl(ROWS3[:2]) + b'{"question": "q", '
                                             b'"answer": "same", "answer": "same"}\n'), 3, 3, 0)
    add("jsonl_dup_nested", lambda d: put(d, "h_dupn.jsonl", b'{"messages": [{"role": "user", "content": "hi"}, '
                                          b'{"role": "assistant", "content": "a", "content": "b"}]}\n'
                                          + jl([{"messages": [{"role": "user", "content": "q"},
                                                              {"role": "assistant", "content": "r"}]}])),
        2, 1, 3, names="h_dupn.jsonl")
    add("jsonl_deep_nesting", lambda d: put(d, "h_deep.jsonl", jl(ROWS3[:2]) + ('{"question": "q", "answer": "a", '
                                            '"x": ' + deep(100_000) + "}\n").encode()), 3, 2, 3, names="h_deep.jsonl")
    add("jsonl_nul_byte_raw", lambda d: put(d, "h_nul.jsonl", jl(ROWS3[:2]) + b'{"question": "q\x00", "answer": "a"}\n'),
        3, 2, 3, names="h_nul.jsonl")
    add("jsonl_nul_escaped", lambda d: put(d, "h_nule.jsonl", jl([{"question": "a\u0000b", "answer": "c"}])), 1, 1, 0)
    add("jsonl_huge_line", lambda d: put(d, "h_huge.jsonl", jl([{"question": "q", "answer": "x" * 3_000_000}] + ROWS3)),
        4, 4, 0)
    add("jsonl_big_integer", lambda d: put(d, "h_bigint.jsonl", b'{"question": "q", "answer": "a", '
                                           b'"n": 123456789012345678901234567890}\n' + jl(ROWS3[:1])), 2, 2, 0)
    add("jsonl_non_object_record", lambda d: put(d, "h_nonobj.jsonl", jl(ROWS3[:2]) + b"42\n"), 3, 2, 3,
        names="h_nonobj.jsonl")
    add("jsonl_first_record_not_object", lambda d: put(d, "h_first.jsonl", b"[1, 2]\n" + jl(ROWS3[:2])), 3, 2, 3,
        names="h_first.jsonl")
    add("jsonl_unknown_format", lambda d: put(d, "h_unk.jsonl", jl([{"text": f"t{i}"} for i in range(4)])), 4, 0, 3,
        rejected_files=1, names="h_unk.jsonl")
    add("jsonl_wrong_type_field", lambda d: put(d, "h_type.jsonl", jl(ROWS3[:2] + [{"question": {"a": 1}, "answer": "x"}])),
        3, 2, 3, names="h_type.jsonl")
    add("jsonl_bool_field", lambda d: put(d, "h_bool.jsonl", jl(ROWS3[:2] + [{"question": "q", "answer": True}])),
        3, 2, 3, names="h_bool.jsonl")
    add("jsonl_bad_role", lambda d: put(d, "h_role.jsonl", jl([{"messages": [{"role": "user", "content": "q"},
                                                                              {"role": "assistant", "content": "a"}]},
                                                                {"messages": [{"role": "wizard", "content": "x"}]}])),
        2, 1, 3, names="h_role.jsonl")
    add("jsonl_mixed_formats", lambda d: put(d, "h_mixed.jsonl", jl([alpaca(0), qa(1), {"messages": []}])), 3, 1, 3,
        names="h_mixed.jsonl")
    add("jsonl_empty_response", lambda d: put(d, "h_empty_resp.jsonl", jl(ROWS3[:2] + [{"question": "q", "answer": " "}])),
        3, 2, 0)  # unusable conversations are rejects, never errors
    add("jsonl_empty_file", lambda d: put(d, "h_empty.jsonl", b""), 0, 0, 0)
    add("jsonl_whitespace_file", lambda d: put(d, "h_ws.jsonl", b"  \n\n\t\n"), 0, 0, 0)
    add("jsonl_pretty_array", lambda d: put(d, "h_pretty.jsonl", json.dumps(ROWS3, indent=2).encode()), 3, 3, 0)
    add("jsonl_truncated_last_record", lambda d: put(d, "h_cut.jsonl", jl(ROWS3) + b'{"question": "q", "ans'), 4, 3, 3,
        names="h_cut.jsonl")
    add("jsonl_utf16", lambda d: put(d, "h_utf16.jsonl", jl(ROWS3).decode().encode("utf-16")), None, 0, 3,
        rejected_files=1, names="h_utf16.jsonl")
    add("jsonl_alone_unknown_format", lambda d: put(d, "h_alone.jsonl", jl([{"text": "t"}])), 1, 0, 3, skip=4,
        rejected_files=1, companion=False, input="h_alone.jsonl", names="h_alone.jsonl")

    # ------------------------------------------------------------ compressed streams
    add("gz_ok", lambda d: put(d, "h_ok.jsonl.gz", gzip.compress(jl(ROWS3))), 3, 3, 0)
    rows40 = [qa(i) for i in range(40)]
    cut, n_cut = gz_cut(rows40, 0.6)
    add("gz_truncated", lambda d, c=cut: put(d, "h_cut.jsonl.gz", c), None, n_cut, 3, rejected_files=1,
        names="h_cut.jsonl.gz")
    cut2, n_cut2 = gz_cut(rows40, 0.05)
    add("gz_truncated_early", lambda d, c=cut2: put(d, "h_cut2.jsonl.gz", c), None, n_cut2, 3, rejected_files=1,
        names="h_cut2.jsonl.gz")
    add("gz_fake", lambda d: put(d, "h_fake.jsonl.gz", jl(ROWS3)), None, 0, 3, rejected_files=1, names="h_fake.jsonl.gz")
    add("gz_zero_bytes", lambda d: put(d, "h_zero.jsonl.gz", b""), 0, 0, 0)
    add("gz_empty_content", lambda d: put(d, "h_emptyc.jsonl.gz", gzip.compress(b"")), 0, 0, 0)
    add("gz_multi_member", lambda d: put(d, "h_multi.jsonl.gz", gzip.compress(jl(ROWS3)) + gzip.compress(jl(ALP3[:0] + [qa(9)]))),
        4, 4, 0)
    add("gz_trailing_garbage", lambda d: put(d, "h_tgarb.jsonl.gz", gzip.compress(jl(ROWS3)) + b"garbage!"), None, 3, 3,
        rejected_files=1, names="h_tgarb.jsonl.gz")
    add("gz_zero_padding", lambda d: put(d, "h_pad.jsonl.gz", gzip.compress(jl(ROWS3)) + b"\x00" * 64), 3, 3, 0)

    crc = bytearray(gzip.compress(jl(ROWS3), mtime=0))
    crc[-6] ^= 0xFF  # inside the CRC32 trailer: the data decompresses, the check fails
    add("gz_crc_error", lambda d, b=bytes(crc): put(d, "h_crc.jsonl.gz", b), None,
        complete_lines_before_cut(zlib_bytewise(bytes(crc))), 3, rejected_files=1, names="h_crc.jsonl.gz")
    mid = bytearray(gzip.compress(jl(rows40), mtime=0))
    for i in range(len(mid) // 2, len(mid) // 2 + 16):
        mid[i] ^= 0x5A
    add("gz_corrupt_middle", lambda d, b=bytes(mid): put(d, "h_midc.jsonl.gz", b), None,
        complete_lines_before_cut(zlib_bytewise(bytes(mid))), 3, rejected_files=1, names="h_midc.jsonl.gz")
    add("gz_json_array", lambda d: put(d, "h_arr.json.gz", gzip.compress(json.dumps(ROWS3, indent=1).encode())), 3, 3, 0)
    add("gz_csv_invalid_utf8", lambda d: put(d, "h_bad.csv.gz", gzip.compress(
        b"question,answer\nq1,a1\nq2,caf\xe9\nq3,a3\n")), 3, 2, 3, names="h_bad.csv.gz")

    import zstandard

    add("zst_ok", lambda d: put(d, "h_ok.jsonl.zst", zstandard.ZstdCompressor().compress(jl(ROWS3))), 3, 3, 0)
    zcut, zn = zst_cut(rows40, 0.6)
    add("zst_truncated", lambda d, c=zcut: put(d, "h_cut.jsonl.zst", c), None, zn, 3, rejected_files=1,
        names="h_cut.jsonl.zst")
    add("zst_fake", lambda d: put(d, "h_fake.jsonl.zst", jl(ROWS3)), None, 0, 3, rejected_files=1,
        names="h_fake.jsonl.zst")
    add("zst_multi_frame", lambda d: put(d, "h_frames.jsonl.zst", zstandard.ZstdCompressor().compress(jl(ROWS3))
                                         + zstandard.ZstdCompressor().compress(jl([qa(7)]))), 4, 4, 0)
    add("zst_zero_bytes", lambda d: put(d, "h_zero.jsonl.zst", b""), 0, 0, 0)

    # ------------------------------------------------------------ JSON documents
    add("json_ok", lambda d: put(d, "h_ok.json", json.dumps(ALP3)), 3, 3, 0)
    add("json_wrapped", lambda d: put(d, "h_wrap.json", json.dumps({"version": 1, "data": ALP3})), 3, 3, 0)
    add("json_single_object", lambda d: put(d, "h_one.json", json.dumps(alpaca(0))), 1, 1, 0)
    add("json_bom", lambda d: put(d, "h_bom.json", b"\xef\xbb\xbf" + json.dumps(ALP3).encode()), 3, 3, 0)
    add("json_trailing_comma", lambda d: put(d, "h_tc.json", json.dumps(ALP3, indent=1)[:-2] + ",\n]"), 3, 3, 3,
        names="h_tc.json")
    add("json_broken_element", lambda d: put(d, "h_be.json", '[{"instruction": "a", "output": "b"},\n'
                                             '{"instruction": "c", "output": },\n{"instruction": "e", "output": "f"}]'),
        3, 2, 3, names="h_be.json")
    add("json_holds_json_lines", lambda d: put(d, "h_jl.json", jl([qa(i) for i in range(30)])), 30, 30, 0)
    add("json_empty", lambda d: put(d, "h_empty.json", b""), 0, 0, 0)
    add("json_whitespace", lambda d: put(d, "h_ws.json", b" \n\t \n"), 0, 0, 0)
    add("json_empty_array", lambda d: put(d, "h_ea.json", b"[]"), 0, 0, 0)
    add("json_scalar", lambda d: put(d, "h_scalar.json", b"42"), 1, 0, 3, rejected_files=1, names="h_scalar.json")
    add("json_string", lambda d: put(d, "h_str.json", b'"hello"'), 1, 0, 3, rejected_files=1, names="h_str.json")
    add("json_null", lambda d: put(d, "h_null.json", b"null"), 1, 0, 3, rejected_files=1, names="h_null.json")
    add("json_array_of_scalars", lambda d: put(d, "h_scal.json", b"[1, 2, 3]"), 3, 0, 3, rejected_files=1,
        names="h_scal.json")
    add("json_deep_array", lambda d: put(d, "h_deep.json", deep(100_000)), 1, 0, 3, names="h_deep.json")
    add("json_deep_element", lambda d: put(d, "h_deepel.json", "[" + ", ".join(json.dumps(a) for a in ALP3[:2])
                                           + ', {"instruction": "x", "output": "y", "z": ' + deep(5000) + "}]"),
        3, 2, 3, names="h_deepel.json")
    add("json_invalid_utf8", lambda d: put(d, "h_utf8.json", ("[" + json.dumps(ALP3[0]) + ', {"instruction": "caf'
                                                               ).encode() + b"\xe9" + b'", "output": "x"}, '
                                           + json.dumps(ALP3[1]).encode() + b"]"), 3, 2, 3, names="h_utf8.json")
    add("json_lone_surrogate", lambda d: put(d, "h_sur.json", "[" + json.dumps(ALP3[0]) + ', {"instruction": '
                                             '"\\ud83d x", "output": "y"}, ' + json.dumps(ALP3[1]) + "]"),
        3, 2, 3, names="h_sur.json")
    add("json_nan", lambda d: put(d, "h_nan.json", "[" + json.dumps(ALP3[0]) + ', {"instruction": "q", "output": "a",'
                                  ' "s": NaN}, ' + json.dumps(ALP3[1]) + "]"), 3, 2, 3, names="h_nan.json")
    add("json_overflow_float", lambda d: put(d, "h_ovf.json", "[" + json.dumps(ALP3[0]) + ', {"instruction": "q", '
                                             '"output": "a", "s": 1e999}]'), 2, 1, 3, names="h_ovf.json")
    add("json_dup_keys_differ", lambda d: put(d, "h_dup.json", "[" + json.dumps(ALP3[0]) + ', {"instruction": "q", '
                                              '"output": "one", "output": "two"}, ' + json.dumps(ALP3[1]) + "]"),
        3, 2, 3, names="h_dup.json")
    add("json_dup_keys_same", lambda d: put(d, "h_dups.json", '[{"instruction": "q", "output": "a", "output": "a"}]'),
        1, 1, 0)
    add("json_dup_keys_in_wrapper", lambda d: put(d, "h_dupw.json", '{"data": [{"instruction": "q", "output": "a"}, '
                                                  '{"instruction": "r", "instruction": "s", "output": "b"}]}'),
        2, 1, 3, names="h_dupw.json")
    add("json_utf16", lambda d: put(d, "h_utf16.json", json.dumps(ALP3).encode("utf-16")), None, 0, 3,
        rejected_files=1, names="h_utf16.json")
    add("json_unterminated_array", lambda d: put(d, "h_unt.json", json.dumps(ALP3)[:-1]), 3, 3, 3, names="h_unt.json")
    add("json_broken_object", lambda d: put(d, "h_bobj.json", '{"instruction": "a", "output": '), 1, 0, 3,
        names="h_bobj.json")
    add("json_string_in_array", lambda d: put(d, "h_sia.json", json.dumps(ALP3[:2] + ["oops"])), 3, 2, 3,
        names="h_sia.json")
    add("json_content_parts_unsupported", lambda d: put(d, "h_parts.json", json.dumps(
        [{"messages": [{"role": "user", "content": [{"type": "image", "url": "x"}]},
                       {"role": "assistant", "content": "a"}]},
         {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}])), 2, 1, 3,
        names="h_parts.json")
    add("json_big_integer", lambda d: put(d, "h_bigint.json", '[{"instruction": "q", "output": "a", '
                                          '"n": 123456789012345678901234567890}]'), 1, 1, 0)
    add("json_garbage_binary", lambda d: put(d, "h_bin.json", bytes(range(256)) * 4), 1, 0, 3, names="h_bin.json")

    # ------------------------------------------------------------ CSV / TSV
    add("csv_header_ok", lambda d: put(d, "h_ok.csv", 'instruction,input,output\n"Say hi","","Hi, there!"\nAdd,"1,2",3\n'),
        2, 2, 0)
    add("csv_bom_header", lambda d: put(d, "h_bom.csv", b"\xef\xbb\xbfquestion,answer\nq1,a1\nq2,a2\n"), 2, 2, 0)
    add("csv_crlf", lambda d: put(d, "h_crlf.csv", b"question,answer\r\nq1,a1\r\nq2,a2\r\n"), 2, 2, 0)
    add("csv_quoted_newlines", lambda d: put(d, "h_qnl.csv", 'question,answer\n"line one\nline two",a1\nq2,"x\n\ny"\n'),
        2, 2, 0)
    add("csv_unterminated_quote", lambda d: put(d, "h_unq.csv", 'question,answer\nq1,a1\n"q2,a2\nq3,a3\n'), 3, 2, 3,
        names="h_unq.csv")
    add("csv_unterminated_quote_last", lambda d: put(d, "h_unq2.csv", 'question,answer\nq1,a1\nq2,"a2\n'), 2, 1, 3,
        names="h_unq2.csv")
    add("csv_invalid_utf8_row", lambda d: put(d, "h_utf8.csv", b"question,answer\nq1,a1\nq2,caf\xe9\n"), 2, 1, 3,
        names="h_utf8.csv")
    add("csv_latin1_rows", lambda d: put(d, "h_lat.csv", "question,answer\nq1,caf\xe9\nq2,na\xefve\n".encode("latin-1")),
        2, 0, 3, names="h_lat.csv")
    add("csv_field_count_mismatch", lambda d: put(d, "h_cnt.csv", "question,answer\nq1,a1\nq2,a2,extra\n"), 2, 1, 3,
        names="h_cnt.csv")
    add("csv_nul_in_field", lambda d: put(d, "h_nul.csv", b"question,answer\nq1\x00x,a1\n"), 1, 1, 0)
    add("csv_empty", lambda d: put(d, "h_empty.csv", b""), 0, 0, 0)
    add("csv_only_header", lambda d: put(d, "h_hdr.csv", b"question,answer\n"), 0, 0, 0)
    add("csv_huge_field", lambda d: put(d, "h_huge.csv", "question,answer\nq1," + "x" * 2_000_000 + "\n"), 1, 1, 0)
    add("csv_empty_answer", lambda d: put(d, "h_ea.csv", "question,answer\nq1,a1\nq2,\n"), 2, 1, 0)
    add("tsv_no_header_unknown", lambda d: put(d, "h_nohdr.tsv", "What is 1+1?\t2\tOne plus one.\nWhat is 2+2?\t4\tTwo "
                                               "plus two.\n"), 2, 0, 3, rejected_files=1, names="h_nohdr.tsv")
    add("tsv_no_header_per_file_map", lambda d: put(d, "cot/h_cot.tsv", "What is 1+1?\t2\tOne plus one.\nWhat is 2+2?"
                                                    "\t4\tTwo plus two.\n"), 2, 2, 0,
        args=["--map", "cot/*.tsv:user={0}", "--map", "cot/*.tsv:assistant={2}\\nSo the answer is {1}."])
    add("tsv_forced_no_header", lambda d: put(d, "h_forced.tsv", "question\tanswer\nq1\ta1\n"), 2, 2, 0,
        args=["--no-header", "h_forced.tsv", "--map", "h_forced.tsv:user={0}", "--map", "h_forced.tsv:assistant={1}"])
    add("csv_per_file_format_and_source", lambda d: put(d, "h_pf.csv", "instruction,output\nDo it,Done\n"), 1, 1, 0,
        args=["--format", "*.csv:alpaca", "--source", "*.csv:custom_src"])
    add("wrong_extension_jsonl_as_csv", lambda d: put(d, "h_wrong.csv", jl([{"k": 1}, {"k": 2}, {"k": 3}])), 3, 0, 3,
        rejected_files=1, names="h_wrong.csv")

    # ------------------------------------------------------------ Parquet / Arrow
    add("parquet_ok", lambda d: put(d, "h_ok.parquet", _parquet_bytes(ALP3)), 3, 3, 0)
    add("parquet_corrupt_footer", lambda d: put(d, "h_foot.parquet", _parquet_bytes(ALP3)[:-10]), None, 0, 3,
        rejected_files=1, names="h_foot.parquet")
    add("parquet_garbage", lambda d: put(d, "h_garb.parquet", b"PAR1" + os.urandom(0) + b"\x01" * 300 + b"PAR1"),
        None, 0, 3, rejected_files=1, names="h_garb.parquet")
    add("parquet_zero_bytes", lambda d: put(d, "h_zero.parquet", b""), 0, 0, 0)
    add("parquet_empty_table", lambda d: put(d, "h_et.parquet", _parquet_bytes([], schema=__import__("pyarrow").schema(
        [("instruction", __import__("pyarrow").string()), ("output", __import__("pyarrow").string())]))), 0, 0, 0)
    add("parquet_unknown_columns", lambda d: put(d, "h_unk.parquet", _parquet_bytes([{"text": "a"}, {"text": "b"}])),
        2, 0, 3, rejected_files=1, names="h_unk.parquet")
    add("parquet_nan_extra_column", lambda d: put(d, "h_nan.parquet", _parquet_bytes(
        [alpaca(0) | {"score": float("nan")}, alpaca(1) | {"score": 1.0}])), 2, 2, 0)
    add("arrow_stream_ok", lambda d: put(d, "h_s.arrow", _arrow_bytes(ROWS3)), 3, 3, 0)
    add("arrow_file_ok", lambda d: put(d, "h_f.arrow", _arrow_bytes(ROWS3, stream=False)), 3, 3, 0)
    add("arrow_corrupt", lambda d: put(d, "h_bad.arrow", b"ARROW1" + b"\xff" * 100), None, 0, 3, rejected_files=1,
        names="h_bad.arrow")
    add("arrow_truncated_stream", lambda d: put(d, "h_cut.arrow", _arrow_bytes(ROWS3)[:60]), None, 0, 3,
        rejected_files=1, names="h_cut.arrow")
    add("parquet_named_jsonl", lambda d: put(d, "h_pq.jsonl", _parquet_bytes(ALP3)), None, 0, 3, names="h_pq.jsonl")

    # ------------------------------------------------------------ file system
    def symlinked_subfolder(d: Path) -> None:
        target = d.parent / (d.name + "_outside")
        put(target, "real.jsonl", jl(ROWS3))
        (d / "linked").symlink_to(target, target_is_directory=True)
    add("symlinked_subfolder", symlinked_subfolder, 3, 3, 0, needs="symlink")

    def symlink_loop_dir(d: Path) -> None:
        put(d, "sub/h_in.jsonl", jl(ROWS3))
        (d / "sub" / "loop").symlink_to("..", target_is_directory=True)
    add("symlink_loop_folder", symlink_loop_dir, 3, 3, 0, skipped=1, needs="symlink")

    def symlink_loop_file(d: Path) -> None:
        (d / "h_loopa.jsonl").symlink_to("h_loopb.jsonl")
        (d / "h_loopb.jsonl").symlink_to("h_loopa.jsonl")
    add("symlink_loop_file", symlink_loop_file, None, 0, 3, rejected_files=2, names="h_loopa.jsonl", needs="symlink")
    add("dangling_symlink", lambda d: (d / "h_dangle.jsonl").symlink_to("missing.jsonl"), None, 0, 3, rejected_files=1,
        names="h_dangle.jsonl", needs="symlink")

    def link_to_same_file(d: Path) -> None:
        put(d, "h_real.jsonl", jl(ROWS3))
        (d / "h_zlink.jsonl").symlink_to("h_real.jsonl")
    add("symlink_to_file_read_once", link_to_same_file, 3, 3, 0, skipped=1, needs="symlink")
    add("fifo_named_jsonl", lambda d: os.mkfifo(d / "h_fifo.jsonl"), None, 0, 3, rejected_files=1, names="h_fifo.jsonl",
        needs="fifo")
    add("dir_named_jsonl", lambda d: put(d, "h_dir.jsonl/inner.jsonl", jl(ROWS3)), 3, 3, 0)

    def hidden(d: Path) -> None:
        put(d, ".h_hidden.jsonl", jl(ROWS3))
        put(d, ".git/objects.jsonl", jl(ROWS3))
        put(d, "h_vis.jsonl", jl(ROWS3[:1]))
    add("hidden_files_and_folders", hidden, 1, 1, 0, skipped=2)

    def other_types(d: Path) -> None:
        put(d, "README.md", "# notes")
        put(d, "data.xml", "<a/>")
        put(d, "h_real.jsonl", jl(ROWS3[:1]))
    add("other_file_types_skipped", other_types, 1, 1, 0, skipped=2)
    add("non_utf8_file_name", lambda d: put(d, b"h_caf\xe9.jsonl", jl(ROWS3)), 3, 3, 0)

    def unreadable_file(d: Path) -> None:
        p = put(d, "h_noperm.jsonl", jl(ROWS3))
        p.chmod(0)
    add("unreadable_file", unreadable_file, None, 0, 3, rejected_files=1, names="h_noperm.jsonl", needs="nonroot")

    def unreadable_folder(d: Path) -> None:
        put(d, "h_locked/x.jsonl", jl(ROWS3))
        (d / "h_locked").chmod(0)
    add("unreadable_folder", unreadable_folder, None, 0, 3, rejected_files=1, names="h_locked", needs="nonroot")
    add("unknown_type_given_by_name", lambda d: put(d, "h_notes.txt", "hi"), None, 0, 3, skip=4, rejected_files=1,
        companion=False, input="h_notes.txt", names="h_notes.txt")
    add("missing_input", lambda d: None, None, 0, 3, skip=3, companion=False, input="h_nope.jsonl", names="h_nope.jsonl")

    # ------------------------------------------------------------ HF save_to_disk folders
    add("hf_ok", lambda d: _hf_folder(d, "h_hf", ROWS3), 3, 3, 0)
    add("hf_bad_state_json", lambda d: _hf_folder(d, "h_hfbad", ROWS3, state="{not json"), None, 0, 3,
        rejected_files=1, names="h_hfbad")
    add("hf_state_not_object", lambda d: _hf_folder(d, "h_hflist", ROWS3, state=[]), None, 0, 3, rejected_files=1,
        names="h_hflist")
    add("hf_state_missing_file", lambda d: _hf_folder(d, "h_hfmiss", ROWS3,
                                                      state={"_data_files": [{"filename": "nope.arrow"}]}),
        None, 0, 3, rejected_files=1, names="h_hfmiss")

    def hf_outside(d: Path) -> None:
        (d.parent / (d.name + "_secret.arrow")).write_bytes(_arrow_bytes(ROWS3))
        _hf_folder(d, "h_hfout", ROWS3[:1], state={"_data_files": [{"filename": f"../../{d.name}_secret.arrow"}]})
    add("hf_state_points_outside", hf_outside, None, 0, 3, rejected_files=1, names="h_hfout")

    def hf_dict_bad(d: Path) -> None:
        f = d / "h_hfdict"
        f.mkdir()
        (f / "dataset_dict.json").write_text(json.dumps({"splits": ["../../etc"]}))
    add("hf_dataset_dict_outside", hf_dict_bad, None, 0, 3, rejected_files=1, names="h_hfdict")
    add("hf_corrupt_arrow", lambda d: (_hf_folder(d, "h_hfarrow", ROWS3) / "data-0.arrow").write_bytes(b"junk" * 10),
        None, 0, 3, rejected_files=1, names="data-0.arrow")
    add("hf_hub_empty_name", lambda d: None, None, 0, 3, skip=3, companion=False, input="hf:", names="hf:")
    add("hf_hub_offline", lambda d: None, None, 0, 3, skip=4, rejected_files=1, companion=False,
        input="hf:siftkit-test/does-not-exist", names="does-not-exist", needs="datasets")

    # ------------------------------------------------------------ globs
    def glob_with_folder(d: Path) -> None:
        put(d, "g/a/h_one.jsonl", jl(ROWS3[:1]))
        put(d, "g/b.jsonl", jl(ROWS3[:2]))
    add("glob_matching_a_folder", glob_with_folder, 3, 3, 0, companion=False, input="g/*")
    return C


def companion_rows() -> list[dict]:
    return [qa(100), qa(101)]


def build(case: Case, root: Path) -> Path:
    """Write the case into ``root/case.name``; returns the input path to give siftkit."""
    d = root / case.name
    d.mkdir(parents=True)
    if case.companion:
        (d / COMPANION).write_bytes(jl(companion_rows()))
    case.build(d)
    if case.input is None:
        return d
    return d / case.input if not case.input.startswith("hf:") else Path(case.input)
