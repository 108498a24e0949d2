"""The layout shows the architecture: no import circles, the tasks apart from each other, plumbing apart from both."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

SRC = REPO / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module → the project modules it imports, anywhere in the file (lazy imports inside functions too)."""
    modules = {module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            found |= {candidate for candidate in candidates if candidate in modules and candidate != name}
        graph[name] = found - {"src"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_circles() -> None:
    graph = imports()
    assert len(graph) > 20 and graph["src.train"]  # the scan sees the project
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_tasks_and_plumbing_stay_in_their_rooms() -> None:
    """core/ serves both tasks and knows neither; the two tasks do not know each other."""
    for module, targets in imports().items():
        if module.startswith("src.core"):
            assert not {t for t in targets if t.startswith(("src.mnist", "src.backprop"))}, module
        if module.startswith("src.backprop"):
            assert not {t for t in targets if t.startswith("src.mnist")}, module
        if module.startswith("src.mnist"):
            assert not {t for t in targets if t.startswith("src.backprop")}, module
