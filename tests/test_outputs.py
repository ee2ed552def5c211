"""Output folders: atomic replacement, leftovers, refusal of foreign folders, loading with datasets,
reports from any output, and disk-full errors (on a small tmpfs when it can be mounted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import siftkit
from conftest import convo, write_jsonl
from siftkit.cli import main
from siftkit.errors import ConfigError, DiskFullError
from siftkit.io.pool import POOL_SCHEMA, Pool
from siftkit.signals.base import Signal


def run_cli(*args: str) -> int:
    return main(["--quiet", *args])


def make_pool(folder, n: int, files: int = 1, pad: int = 0):
    for f in range(files):
        write_jsonl(folder / f"part{f}.jsonl",
                    [convo(f"Question {f}-{i}: what is {i} + {f}?", f"The answer is {i + f}. " + "x" * pad)
                     for i in range(n)])
    return folder


def select(pool, out, *extra: str, budget: str = "5", cache=None) -> int:
    return run_cli("select", str(pool), "--budget", budget, "--out", str(out),
                   "--cache-dir", str(cache or out.parent / "cache"), *extra)


def lines(path) -> int:
    return len(path.read_text().splitlines())


# ------------------------------------------------------------------ layout and atomic replacement

def test_layout_side_folder_and_manifest(tmp_path):
    pool = make_pool(tmp_path / "pool", 30)
    (tmp_path / "pool" / "bad.jsonl").write_text('{"messages": []}\n')
    out = tmp_path / "out"
    assert select(pool, out, "--on-error", "skip") == 0
    names = sorted(os.listdir(out))
    assert names == ["README.md", "_siftkit", "manifest.json", "selected.jsonl"]
    assert sorted(os.listdir(out / "_siftkit")) == ["rejects.jsonl", "selection.parquet"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["outputs"]["selection"] == "_siftkit/selection.parquet"
    assert m["outputs"]["rejects"] == "_siftkit/rejects.jsonl"
    assert m["pool"] == {"given": False, "files": 2, "records": 30, "report_from": "inputs"}
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".siftkit-")]


def test_rerun_replaces_the_whole_output(tmp_path):
    pool = make_pool(tmp_path / "pool", 40)
    (tmp_path / "pool" / "bad.jsonl").write_text('{"messages": []}\n')
    out = tmp_path / "out"
    assert select(pool, out, "--on-error", "skip", "--report", budget="30") == 0
    assert (out / "report.html").exists() and (out / "_siftkit" / "rejects.jsonl").exists()
    os.remove(tmp_path / "pool" / "bad.jsonl")
    assert select(pool, out, budget="5") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["selected"] == 5 == lines(out / "selected.jsonl")
    # nothing of the first run is left: no report, no rejects of the old pool
    assert sorted(os.listdir(out)) == ["README.md", "_siftkit", "manifest.json", "selected.jsonl"]
    assert sorted(os.listdir(out / "_siftkit")) == ["selection.parquet"]


def test_failed_run_leaves_previous_output_untouched(tmp_path, monkeypatch):
    pool = make_pool(tmp_path / "pool", 40)
    out = tmp_path / "out"
    assert select(pool, out, budget="10") == 0
    files = ("manifest.json", "selected.jsonl", "_siftkit/selection.parquet")
    before = {f: (out / f).read_bytes() for f in files}

    import siftkit.output as O

    def boom(*a, **k):
        raise RuntimeError("killed while writing the status file")

    monkeypatch.setattr(O.pq, "write_table", boom)
    with pytest.raises(RuntimeError, match="killed while writing"):
        select(pool, out, budget="20")
    monkeypatch.undo()
    assert {f: (out / f).read_bytes() for f in before} == before
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".siftkit-")]


def _consistent(out) -> int:
    """The folder is one complete output: its manifest's count matches its records and status files."""
    m = json.loads((out / "manifest.json").read_text())
    n = m["counts"]["selected"]
    assert lines(out / m["outputs"]["selected"]) == n
    status = pq.read_table(out / m["outputs"]["selection"]).column("status").to_pylist()
    assert status.count("selected") == n
    return n


def test_sigkill_during_the_write_never_mixes_two_runs(tmp_path):
    from conftest import REPO

    pool = make_pool(tmp_path / "pool", 3000, pad=1500)
    out = tmp_path / "out"
    assert select(pool, out, budget="50") == 0
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "siftkit.cli", "-q", "select", str(pool), "--budget",
                             "3000", "--out", str(out), "--cache-dir", str(tmp_path / "cache")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saw_staging = False
    while proc.poll() is None:
        if any(e.startswith(".siftkit-tmp-out-") for e in os.listdir(tmp_path)):
            saw_staging = True
            proc.send_signal(9)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    n = _consistent(out)
    assert n == (50 if saw_staging else 3000)
    assert select(pool, out, budget="20") == 0
    assert _consistent(out) == 20 and not [e for e in os.listdir(tmp_path) if e.startswith(".siftkit-")]


def test_killed_run_leftovers_are_cleaned(tmp_path):
    pool = make_pool(tmp_path / "pool", 20)
    out = tmp_path / "out"
    assert select(pool, out) == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f".siftkit-tmp-out-{dead}-0badc0de"
    stale.mkdir()
    (stale / "selected.jsonl").write_text("half\n")
    (out / "selected.jsonl.tmp").write_text("half\n")       # left by an older version in place
    other = tmp_path / f".siftkit-tmp-other-{dead}-0badc0de"  # another output's leftovers: not ours
    other.mkdir()
    assert select(pool, out) == 0
    assert not stale.exists() and not (out / "selected.jsonl.tmp").exists() and other.exists()


def test_interrupted_swap_restores_the_old_output(tmp_path):
    """Killed between the two renames of the fallback swap: the next run puts the old output back first."""
    pool = make_pool(tmp_path / "pool", 20)
    out = tmp_path / "out"
    assert select(pool, out) == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    moved = tmp_path / f".siftkit-old-out-{dead}-0badc0de"
    os.rename(out, moved)
    from siftkit.output import clean_leftovers

    clean_leftovers(str(out))
    assert (out / "manifest.json").exists() and not moved.exists()


def test_exchange_swaps_two_folders(tmp_path):
    from siftkit.fsutil import exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f").write_text("b")
    if not exchange(str(tmp_path / "a"), str(tmp_path / "b")):
        pytest.skip("renameat2(RENAME_EXCHANGE) not supported here")
    assert (tmp_path / "a" / "f").read_text() == "b" and (tmp_path / "b" / "f").read_text() == "a"


def test_foreign_folder_refused_unless_overwrite(tmp_path, capsys):
    pool = make_pool(tmp_path / "pool", 20)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert select(pool, out) == 2
    err = capsys.readouterr().err
    assert "not a siftkit output" in err and "notes.txt" in err and "--overwrite" in err
    assert (out / "notes.txt").read_text() == "my notes"
    assert select(pool, out, "--overwrite") == 0
    assert not (out / "notes.txt").exists() and (out / "manifest.json").exists()
    # a siftkit output the user added a file to is foreign too
    (out / "notes.txt").write_text("again")
    assert select(pool, out) == 2
    # a folder holding the cache is never replaced, even with --overwrite
    assert select(pool, out, "--overwrite", cache=out / "cache") == 2
    assert "the cache or an input" in capsys.readouterr().err


def test_api_write_overwrite(tmp_path):
    pool = make_pool(tmp_path / "pool", 20)
    sel = siftkit.select(str(pool), 4, cache_dir=str(tmp_path / "c"))
    out = tmp_path / "o"
    out.mkdir()
    (out / "x.bin").write_bytes(b"1")
    with pytest.raises(ConfigError, match="not a siftkit output"):
        siftkit.write(sel, str(out))
    m = siftkit.write(sel, str(out), overwrite=True)
    assert m["counts"]["selected"] == 4 and not (out / "x.bin").exists()


# ------------------------------------------------------------------ loading with datasets

@pytest.mark.parametrize(("ff", "fmt"), [("jsonl", "messages"), ("parquet", "messages"), ("jsonl", "original")])
def test_load_dataset_reads_exactly_the_selected_records(tmp_path, ff, fmt):
    datasets = pytest.importorskip("datasets")
    pool = make_pool(tmp_path / "pool", 30)
    (tmp_path / "pool" / "bad.jsonl").write_text('{"messages": []}\n')
    out = tmp_path / f"out-{ff}-{fmt}"
    assert select(pool, out, "--on-error", "skip", "--report", "--output-format", fmt,
                  "--file-format", ff, budget="7") == 0
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert list(ds) == ["train"]
    rows = ds["train"].to_list()
    assert len(rows) == 7
    if fmt == "original":      # the untouched input records, no siftkit fields
        assert [r["messages"] for r in rows] == [json.loads(x)["messages"]
                                                 for x in (out / "selected.jsonl").read_text().splitlines()]
        return
    status = pq.read_table(out / "_siftkit" / "selection.parquet").to_pylist()
    chosen = sorted(s["id"] for s in status if s["status"] == "selected")
    assert sorted(r["id"] for r in rows) == chosen
    assert set(rows[0]) == {"id", "source", "messages"}


# ------------------------------------------------------------------ reports from any output

def test_report_from_api_with_file_backed_pool(tmp_path):
    pool_dir = make_pool(tmp_path / "pool", 25, files=2)
    pool = siftkit.read(str(pool_dir))
    sel = siftkit.select(pool, 6, cache_dir=str(tmp_path / "c"), seed=3)
    out = tmp_path / "out"
    m = siftkit.write(sel, str(out), report=True)
    assert m["config"]["inputs"] == ["<pool>"]
    assert [i["rel"] for i in m["inputs"]] == ["part0.jsonl", "part1.jsonl"]
    assert all(os.path.isabs(i["path"]) and os.path.exists(i["path"]) for i in m["inputs"])
    assert m["pool"]["given"] is True and m["pool"]["report_from"] == "_siftkit/report.parquet"
    first = (out / "report.html").read_text()
    os.remove(out / "report.html")
    assert run_cli("report", str(out)) == 0
    again = (out / "report.html").read_text()
    assert "6 of 6 selected records" in again
    assert _sample(first) == _sample(again) and "Question" in _sample(again)
    assert _payload(first) == _payload(again)      # same histograms and source mix as the original page


def _sample(html: str) -> str:
    return html.split("Sample of selected records", 1)[1].split("Inputs and timings", 1)[0]


def _payload(html: str) -> str:
    return html.split('id="siftkit-data">', 1)[1].split("</script>", 1)[0]


def test_report_from_api_with_in_memory_pool(tmp_path):
    recs = [convo(f"q{i} what?", f"answer number {i} " * (i % 5 + 1)) for i in range(30)]
    table = siftkit.read(str(write_jsonl(tmp_path / "p.jsonl", recs))).table
    pool = Pool(table.cast(POOL_SCHEMA))     # no files: as if built in memory
    sel = siftkit.select(pool, 5, cache_dir=str(tmp_path / "c"))
    out = tmp_path / "out"
    m = siftkit.write(sel, str(out))
    assert m["inputs"] == [] and m["pool"]["files"] == 0 and "without files" in m["pool"]["note"]
    data = pq.read_table(out / "_siftkit" / "report.parquet")
    assert data.num_rows == 30 and "tokens_total" in data.column_names
    assert sum(v is not None for v in data.column("messages").to_pylist()) == 5
    assert run_cli("report", str(out)) == 0
    html = (out / "report.html").read_text()
    assert "tokens_total" in html and "q" in html


def test_report_on_old_layout_and_clear_error(tmp_path):
    pool = make_pool(tmp_path / "pool", 20)
    out = tmp_path / "out"
    assert select(pool, out) == 0
    # an output written before the side folder: selection.parquet at the top, manifest without it
    os.rename(out / "_siftkit" / "selection.parquet", out / "selection.parquet")
    os.rmdir(out / "_siftkit")
    m = json.loads((out / "manifest.json").read_text())
    m["outputs"]["selection"] = "selection.parquet"
    m.pop("pool")
    (out / "manifest.json").write_text(json.dumps(m))
    assert run_cli("report", str(out)) == 0 and (out / "report.html").exists()
    # an old API output from a Pool: no inputs, no stored columns -> a clear error, exit 3
    m["config"]["inputs"] = ["<pool>"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert run_cli("report", str(out)) == 3


# ------------------------------------------------------------------ fingerprints in the manifest

def test_manifest_records_embedding_fingerprints(tmp_path):
    pytest.importorskip("static_model")
    pool = make_pool(tmp_path / "pool", 40)
    out = tmp_path / "out"
    assert select(pool, out, "--method", "k-center", budget="6") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["vectors"]) == 1
    fp, entry = next(iter(m["vectors"].items()))
    assert entry["name"] == "embedding" and entry["dim"] > 0 and entry["config"]["backend"] == "static"
    step = next(s for s in m["steps"] if s["name"] == "k-center")
    assert step["embeddings"] == {fp: "embedding"}
    assert all("fingerprint" in v for v in m["signals"].values())


# ------------------------------------------------------------------ disk full (small tmpfs)

@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not sys.platform.startswith("linux"):
        pytest.skip("tmpfs mounts are Linux-only")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True,
                       check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)


def test_disk_full_output_is_a_clean_error(tmp_path, tiny_disk, capsys):
    pool = make_pool(tmp_path / "pool", 600, files=1, pad=5000)    # ~3 MB of records
    small = tiny_disk / "out"
    assert select(pool, tiny_disk / "ok", budget="3", cache=tmp_path / "c") == 0
    before = (tiny_disk / "ok" / "manifest.json").read_bytes()
    rc = select(pool, small, budget="600", cache=tmp_path / "c")
    err = capsys.readouterr().err
    assert rc == 5, err
    assert "no space left on device" in err and str(small / "selected.jsonl") in err and "bytes" in err
    assert not small.exists()
    assert sorted(os.listdir(tiny_disk)) == ["ok"]                   # no temporaries left
    # replacing an existing output: the old one stays complete
    rc = select(pool, tiny_disk / "ok", budget="600", cache=tmp_path / "c")
    assert rc == 5 and (tiny_disk / "ok" / "manifest.json").read_bytes() == before
    assert sorted(os.listdir(tiny_disk)) == ["ok"]


class _Blob(Signal):
    """A scalar signal with incompressible string values: a few parts fill a tiny disk."""

    name = "testblob"

    def columns(self):
        return {"blob": pa.string()}

    def compute(self, batch):
        return {"blob": np.asarray([os.urandom(2000).hex() for _ in range(batch.num_rows)], dtype=object)}


def test_disk_full_cache_part_is_a_clean_error(tmp_path, tiny_disk):
    from siftkit.signals.compute import compute_signals

    recs = [convo(f"question {i}", f"answer {i}") for i in range(1600)]
    pool = siftkit.read(str(write_jsonl(tmp_path / "p.jsonl", recs))).table
    with pytest.raises(DiskFullError) as e:          # 1600 x 2 KB of entropy = 3.2 MB of parts on a 2 MB disk
        compute_signals(pool, [_Blob()], str(tiny_disk / "c"), shard_size=100)
    msg = str(e.value)
    assert e.value.exit_code == 5 and "testblob" in msg and "part-" in msg and "bytes" in msg
    assert [f for _, _, fs in os.walk(tiny_disk) for f in fs if ".tmp" in f] == []
    # the parts written before the disk filled are whole and reused
    from siftkit.signals.store import SignalStore, check_part

    parts = SignalStore(str(tiny_disk / "c")).parts(_Blob())
    assert parts and all(check_part(p)[0] is not None for p in parts)


def test_disk_full_vector_assembly_is_an_error_not_sigbus(tmp_path, tiny_disk):
    from siftkit.signals.vectors import VectorStore

    class Vec(Signal):
        name, kind, version = "testvec", "vector", 1

        def columns(self):
            return {"testvec": pa.float16()}

        def compute(self, table):  # pragma: no cover - not called
            raise NotImplementedError

    sig = Vec()
    store = VectorStore(str(tiny_disk / "c"))
    ids = pa.array([f"r{i:05d}" for i in range(1200)])
    rng = np.random.default_rng(0)
    for s in range(0, 1200, 400):
        store.write_shard(sig, ids[s:s + 400], rng.standard_normal((400, 256)).astype(np.float16))
    # shards use ~600 KB; leave less room than the 600 KB pool matrix needs
    free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
    with open(tiny_disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - 300_000))
    with pytest.raises(DiskFullError) as e:
        store.assemble(sig, ids)
    assert "pool-" in str(e.value) and f"{1200 * 256 * 2 + 128:,}" in str(e.value)
    assert [f for f in os.listdir(store.folder(sig)) if ".tmp" in f] == []
