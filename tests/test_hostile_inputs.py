"""Every hostile input through ``siftkit read`` and ``siftkit select`` (in process), strict and skip mode:
the exit code is the expected one (0, 3 or 4, never 1), an error names the file, ``--rejects`` is always
written, and every record is accounted for (records in = kept + rejected; kept = selected at 100%)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import hostile_inputs as H
from siftkit.cli import main

CASES = H.cases()


def test_the_generator_covers_enough_cases():
    assert len(CASES) >= 80
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    out = {}
    for c in CASES:
        if c.needs == "fifo" and not hasattr(os, "mkfifo"):
            continue
        out[c.name] = H.build(c, root)
    return out


def _skip_unavailable(case: H.Case, built: dict[str, Path], monkeypatch) -> None:
    if case.name not in built:
        pytest.skip(f"{case.needs} not available here")
    if case.needs == "nonroot" and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop the reader")
    if case.needs == "datasets":
        datasets = pytest.importorskip("datasets")
        import huggingface_hub.constants

        # No network here (and none wanted in tests): offline mode makes the hub fail at once.
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["-q", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("siftkit: error:")]
    assert lines, f"no 'siftkit: error:' line in {err!r}"
    return lines[-1]


def _check_counts(case: H.Case, c: dict, mode: str) -> None:
    extra = H.COMPANION_RECORDS if case.companion else 0
    assert c["records"] == case.good + extra, c
    if case.records is not None:
        assert c["records"] + c["rejected"] == case.records + extra, c
    assert c["rejected_files"] == (case.rejected_files if mode == "skip" else 0), c
    assert c["skipped_files"] >= case.skipped, c


@pytest.mark.parametrize("mode", ["raise", "skip"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: H.Case, mode: str, built, tmp_path: Path, capsys, monkeypatch):
    _skip_unavailable(case, built, monkeypatch)
    inp = str(built[case.name])
    want = case.strict if mode == "raise" else case.skip
    rejects = tmp_path / "rejects.jsonl"

    rc, out, err = _run(["read", inp, *case.args, "--on-error", mode, "--json", "--rejects", str(rejects)], capsys)
    assert rc == want, f"read --on-error {mode}: exit {rc}, expected {want}\n{err}"
    if rc != 2:
        assert rejects.exists(), "--rejects must always be written"
        rows = [json.loads(ln) for ln in rejects.read_text().splitlines()]
    if rc == 3:
        assert case.names in _error_line(err), err
        assert rows and rows[-1]["code"] == "error", "the error that stopped the run is the last reject"
    if rc == 0:
        counts = json.loads(out[out.index("\n{") + 1:] if not out.startswith("{") else out)
        _check_counts(case, counts, mode)
        assert len([r for r in rows if r["code"] != "defect"]) <= counts["rejected"] + counts["rejected_files"]
        if mode == "skip" and case.rejected_files:
            named = [r for r in rows if r.get("scope") == "file"]
            assert len(named) == case.rejected_files and all(r["reason"] for r in named)

    out_dir = tmp_path / "out"
    rc2, _, err2 = _run(["select", inp, *case.args, "--on-error", mode, "--budget", "100%", "--out", str(out_dir),
                         "--cache-dir", str(tmp_path / "cache")], capsys)
    assert rc2 == want, f"select --on-error {mode}: exit {rc2}, expected {want}\n{err2}"
    if rc2 == 3:
        assert case.names in _error_line(err2), err2
    if rc2 == 0:
        c = json.loads((out_dir / "manifest.json").read_text())["counts"]
        _check_counts(case, c, mode)
        dropped = sum(c["dropped_by_step"].values())
        assert c["selected"] == c["records"] and c["selected"] + c["not_selected"] + dropped == c["records"], c
