"""The import graph of the package (ARCHITECTURE.md, "Invariants"): read from the source, every
``import docvqa_cli...`` counted, also those inside functions. No cycle; answering a question
never reaches the trainer; the readers of pages never reach the models."""

from __future__ import annotations

import ast
from pathlib import Path

import docvqa_cli

PACKAGE = Path(docvqa_cli.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = ["docvqa_cli", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the docvqa_cli modules it imports (a package import counts as its __init__)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("docvqa_cli"):
                    graph[name].add(target)
    return graph


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each module that reaches itself."""
    return sorted(m for m in graph if m in reach(graph, m))


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert "docvqa_cli.tune" in graph["docvqa_cli.cli.tune"]  # a function-level import counts
    assert "docvqa_cli.pipeline" in graph["docvqa_cli.tune"]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_check_sees_a_cycle(tmp_path):
    pkg = tmp_path / "docvqa_cli"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from docvqa_cli import b\n")
    (pkg / "b.py").write_text("from docvqa_cli.a import f\n")
    assert cycles(import_graph(pkg)) == ["docvqa_cli.a", "docvqa_cli.b"]


def test_answering_never_imports_the_trainer():
    graph = import_graph()
    for module in ("docvqa_cli.pipeline", "docvqa_cli.vlm.load", "docvqa_cli.vlm.tie", "docvqa_cli.vlm.visual"):
        assert "docvqa_cli.tune" not in reach(graph, module), module


def test_reading_pages_never_imports_a_model():
    graph = import_graph()
    for module in ("docvqa_cli.documents", "docvqa_cli.ocr", "docvqa_cli.tiles"):
        assert not {m for m in reach(graph, module) if m.startswith("docvqa_cli.vlm")}, module
