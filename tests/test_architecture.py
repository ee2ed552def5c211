"""The layer contracts of docs/architecture.md: import-linter's contracts (pyproject.toml) hold, and the
module import graph, built here from every import statement (also those inside functions), has no cycle."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "siftkit"


def _modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every ``.py`` under ``package``."""
    out = {}
    for p in sorted(package.rglob("*.py")):
        parts = list(p.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, from every ``import`` / ``from`` anywhere in its file.
    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``."""
    mods = _modules(package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    head = ".".join(base + ([node.module] if node.module else []))
                else:
                    head = node.module or ""
                targets = [f"{head}.{a.name}" if f"{head}.{a.name}" in mods else head for a in node.names]
            for t in targets:
                while t and t not in mods:          # import a.b.c (a function or class): the module a.b
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (its modules in import order, the first repeated at the end), or None."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def _write_package(root: Path, name: str, files: dict[str, str]) -> None:
    pkg = root / name
    pkg.mkdir()
    for f, text in files.items():
        (pkg / f).write_text(textwrap.dedent(text), encoding="utf-8")


def test_siftkit_has_no_import_cycle_counting_function_level_imports() -> None:
    graph = import_graph(PACKAGE)
    assert "siftkit.pipeline" in graph and "siftkit.derive" in graph["siftkit.pipeline"]   # lazy import seen
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_ast_graph_finds_a_cycle_made_of_function_level_imports(tmp_path: Path) -> None:
    _write_package(tmp_path, "loop_pkg", {"__init__.py": "", "a.py": "from . import b\n",
                                          "b.py": "def f():\n    from .a import x\n    return x\n"})
    assert find_cycle(import_graph(tmp_path / "loop_pkg")) == ["loop_pkg.a", "loop_pkg.b", "loop_pkg.a"]
    (tmp_path / "loop_pkg" / "b.py").write_text("def f():\n    return 1\n", encoding="utf-8")
    assert find_cycle(import_graph(tmp_path / "loop_pkg")) is None


def _lint(config: Path) -> int:
    pytest.importorskip("importlinter")
    from importlinter.cli import lint_imports

    return lint_imports(config_filename=str(config), no_cache=True, no_logo=True)


def test_import_linter_layer_contracts_hold() -> None:
    import siftkit

    assert Path(siftkit.__file__).resolve().parent == PACKAGE.resolve(), "lint the siftkit of this checkout"
    assert _lint(ROOT / "pyproject.toml") == 0


def test_import_linter_counts_imports_inside_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lower layer that imports a higher one only inside a function breaks the contract."""
    config = tmp_path / "contracts.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "lazy_pkg"

        [[tool.importlinter.contracts]]
        name = "high above low"
        type = "layers"
        containers = ["lazy_pkg"]
        layers = ["high", "low"]
    """), encoding="utf-8")
    _write_package(tmp_path, "lazy_pkg", {"__init__.py": "", "high.py": "from . import low\n",
                                          "low.py": "def f():\n    from . import high\n    return high\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _lint(config) == 1
    (tmp_path / "lazy_pkg" / "low.py").write_text("def f():\n    return 1\n", encoding="utf-8")
    assert _lint(config) == 0


def test_presets_live_in_one_registry_each_with_its_doc_and_reference() -> None:
    from siftkit.presets import PRESETS, _all_presets, preset_names

    assert preset_names() == sorted(PRESETS) and _all_presets() == PRESETS
    assert {"random", "longest", "cherry-ifd", "less", "length-kmeans"} <= set(PRESETS)
    for name, p in PRESETS.items():
        assert p["doc"] and p["ref"] and p["steps"], name
        assert set(p) <= {"doc", "ref", "steps", "signals", "options"}, name


def test_ruff_finds_nothing() -> None:
    """The tree passes ruff with the project's settings (pyproject.toml; ruff pinned in the dev extra so a
    new release's rules do not change the verdict)."""
    import shutil
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("ruff")
    ruff = str(exe) if exe.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (dev extra)")
    r = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "src", "tests", "benchmarks"],
                       cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
