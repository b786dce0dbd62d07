"""The import graph of the package (ARCHITECTURE.md, "Invariants"): read from the source, every
``import docvqa_cli...`` counted, also those inside functions. No cycle; answering a question
never reaches the trainer; the readers of pages never reach the models; at most 7 levels of
rooms (a package is one room; ``benchmarks/`` is one room on top), the count ``farm-studio look``
prints as floors."""

from __future__ import annotations

import ast
from pathlib import Path

import docvqa_cli

PACKAGE = Path(docvqa_cli.__file__).parent
BENCHMARKS = PACKAGE.parent / "benchmarks"
MAX_LEVELS = 7
# The upper floors of the rooms everything else stands on (ARCHITECTURE.md, "Rooms and floors").
FLOORS = {"docvqa_cli.errors": 1, "docvqa_cli.options": 1, "docvqa_cli.values": 1, "docvqa_cli.reading": 2,
          "docvqa_cli.typed": 2, "docvqa_cli.records": 2, "docvqa_cli.prompts": 2, "docvqa_cli.relevance": 3,
          "docvqa_cli.vlm": 3, "docvqa_cli.grounding": 3, "docvqa_cli.pipeline": 4, "docvqa_cli.cli": 6}


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


def _imports_of(path: Path) -> set[str]:
    """The docvqa_cli modules a file outside the package imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] == "docvqa_cli"}


def room(module: str) -> str:
    """The room of a module: a top-level module, or a whole subpackage (``docvqa_cli.reading``)."""
    return ".".join(module.split(".")[:2])


def room_graph(graph: dict[str, set[str]], extra: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """room -> the rooms it imports; ``extra`` adds rooms outside the package (room -> modules)."""
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        rooms.setdefault(room(module), set()).update(room(t) for t in targets)
    for name, targets in (extra or {}).items():
        rooms.setdefault(name, set()).update(room(t) for t in targets)
    known = set(rooms)
    return {r: {t for t in targets if t != r and t in known} for r, targets in rooms.items()}


def levels(rooms: dict[str, set[str]]) -> dict[str, int]:
    """Each room's floor: 1 for a room that imports none, else one above the highest it imports."""
    level: dict[str, int] = {}

    def floor(r: str) -> int:
        if r not in level:
            level[r] = 0  # a cycle would stop here (test_no_import_cycle catches it)
            level[r] = 1 + max((floor(t) for t in rooms[r]), default=0)
        return level[r]

    for r in rooms:
        floor(r)
    return level


def house_levels() -> dict[str, int]:
    bench = set().union(*(_imports_of(p) for p in BENCHMARKS.glob("*.py")))
    return levels(room_graph(import_graph(), {"benchmarks": bench}))


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
    for module in ("docvqa_cli.reading.documents", "docvqa_cli.reading.ocr", "docvqa_cli.reading.tiles"):
        assert not {m for m in reach(graph, module) if m.startswith("docvqa_cli.vlm")}, module


def test_at_most_seven_levels():
    floors = house_levels()
    assert max(floors.values()) <= MAX_LEVELS, sorted(floors.items(), key=lambda kv: -kv[1])


def test_the_low_rooms_stay_low():
    floors = house_levels()
    assert {r: floors[r] for r in FLOORS if floors[r] > FLOORS[r]} == {}


def test_reading_stands_on_errors_and_options_only():
    rooms = room_graph(import_graph())
    assert rooms["docvqa_cli.reading"] <= {"docvqa_cli.errors", "docvqa_cli.options"}


def test_the_level_count_sees_a_tall_chain(tmp_path):
    pkg = tmp_path / "docvqa_cli"
    (pkg / "p").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "p" / "__init__.py").write_text("")
    (pkg / "p" / "x.py").write_text("from docvqa_cli import m7\n")  # a package is one room
    for i in range(1, 8):
        (pkg / f"m{i}.py").write_text(f"from docvqa_cli import m{i - 1}\n" if i > 1 else "")
    floors = levels(room_graph(import_graph(pkg), {"benchmarks": {"docvqa_cli.p.x"}}))
    assert floors["docvqa_cli.m7"] == 7 and floors["docvqa_cli.p"] == 8 and floors["benchmarks"] == 9
