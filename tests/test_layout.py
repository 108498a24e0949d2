"""The layout shows the architecture: no import circles, the tasks apart from each other, plumbing apart from both,
and the tests filed like the code they check.

A module depends on another by an `import` statement (anywhere in the file, lazy imports inside functions too), by
`importlib.import_module(...)` or `__import__(...)` of a constant name, and by a string constant naming it: a
`_target_` Hydra instantiates or an allowlist entry ("src.mnist.module.MNISTClassifier", "src.mnist.nets.") loads
that module as surely as an import does."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

SRC = REPO / "src"
TESTS = REPO / "tests"
# What each room must not know: core/ serves both tasks and knows neither; the two tasks do not know each other.
FORBIDDEN = {"src.core": ("src.mnist", "src.backprop"), "src.mnist": ("src.backprop",), "src.backprop": ("src.mnist",)}
TASKS = ("src.mnist", "src.backprop")
# Test files that check something other than the one src/ module their name would give.
NOT_NAMED_AFTER_A_MODULE = {
    "tests/mnist/test_recipes.py": "the composed recipes of conf/model/",
    "tests/cli/test_scale_out.py": "DDP and the launchers, through src.train",
    "tests/cli/test_search.py": "the Optuna search (src/core/search.py) on the command line, through src.train",
    "tests/cli/test_real_data.py": "src.train, src.eval and src.predict on the real MNIST files",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def in_package(name: str, package: str) -> bool:
    """`name` is `package` or below it (a module, an attribute, or a prefix such as "src.mnist.nets.")."""
    return name == package or name.startswith(package + ".")


def imported(tree: ast.AST) -> set[str]:
    """The dotted names a module imports: `import` statements, and `import_module`/`__import__` of a constant."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if function in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def named(tree: ast.AST) -> set[str]:
    """The string constants (docstrings aside) that name a task's module, or something in it: dependencies that no
    import statement shows."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        and any(in_package(node.value, task) for task in TASKS)
    }  # fmt: skip


def dependencies(source: str) -> set[str]:
    """Every dotted name a module's source depends on: what it imports and what its strings name."""
    tree = ast.parse(source)
    return imported(tree) | named(tree)


def imports() -> dict[str, set[str]]:
    """Module → the project modules it imports, anywhere in the file (lazy imports inside functions too)."""
    modules = {module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = imported(ast.parse(path.read_text()))
        graph[name] = {candidate for candidate in found if candidate in modules and candidate != name} - {"src"}
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


def crossings(module: str, names: set[str]) -> set[str]:
    """The names `module` depends on that its room must not know."""
    forbidden = next((tasks for room, tasks in FORBIDDEN.items() if in_package(module, room)), ())
    return {name for name in names if any(in_package(name, task) for task in forbidden)}


def test_no_import_circles() -> None:
    graph = imports()
    assert len(graph) > 20 and graph["src.train"]  # the scan sees the project
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_tasks_and_plumbing_stay_in_their_rooms() -> None:
    """core/ serves both tasks and knows neither, not even by name; the two tasks do not know each other."""
    scanned = {module_name(path): dependencies(path.read_text()) for path in SRC.rglob("*.py")}
    assert scanned["src.train"] >= {"src.core.errors"}  # the scan sees the project
    found = {module: sorted(crossings(module, names)) for module, names in scanned.items()}
    assert {module: names for module, names in found.items() if names} == {}


def test_the_room_check_finds_a_task_named_in_a_string_or_imported_by_name() -> None:
    """What a module of core/ may not hold: an allowlist of a task's classes or of its modules' prefixes, and an
    import by importlib or __import__; a docstring that mentions a task, and other strings, are not dependencies."""
    source = '''"""src.mnist.nets holds the nets: a docstring, not a dependency."""
import importlib
from importlib import import_module

ALLOWED = ("src.mnist.module.MNISTClassifier", "torch.optim.SGD")
MODULES = ("src.mnist.nets.",)


def load(name: str):
    """src.backprop's runner, in a docstring."""
    return importlib.import_module("src.backprop.network"), import_module(name), __import__("src.mnist.data"), "src."
'''
    expected = {"src.mnist.module.MNISTClassifier", "src.mnist.nets.", "src.backprop.network", "src.mnist.data"}
    assert crossings("src.core.loader", dependencies(source)) == expected
    assert crossings("src.backprop.runs", dependencies(source)) == expected - {"src.backprop.network"}
    assert crossings("src.train", dependencies(source)) == set()


def test_tests_are_filed_like_the_code_they_check() -> None:
    """tests/core/test_X.py checks src/core/X.py, tests/mnist/ src/mnist/, tests/backprop/ src/backprop/, and
    tests/cli/test_X.py the entry point src/X.py; the few that check something else say what."""
    misfiled = []
    for room, code in (("core", "core"), ("mnist", "mnist"), ("backprop", "backprop"), ("cli", ".")):
        for path in sorted((TESTS / room).glob("test_*.py")):
            relative = path.relative_to(REPO).as_posix()
            checked = SRC / code / f"{path.stem.removeprefix('test_')}.py"
            if not checked.is_file() and relative not in NOT_NAMED_AFTER_A_MODULE:
                misfiled.append(relative)
    assert misfiled == []
    assert all((TESTS / room / "__init__.py").is_file() for room in ("core", "mnist", "backprop", "cli"))
    assert sorted(path.name for path in TESTS.glob("test_*.py")) == ["test_layout.py"], "tests sit in their room"


def loaded_at_import(module: str, modules: dict[str, Path], seen: set[str] | None = None) -> set[str]:
    """The top-level packages importing `module` loads: its module-level imports (not those inside functions,
    which load only when called), followed through the project's own modules."""
    seen = set() if seen is None else seen
    seen.add(module)
    pending, names = [ast.parse(modules[module].read_text())], set()
    while pending:  # every statement but function bodies (a class's body runs at import; its methods do not)
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= imported(node)
        pending += [child for child in ast.iter_child_nodes(node)
                    if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)]  # fmt: skip
    packages = {name.split(".")[0] for name in names if not in_package(name, "src")}
    for name in sorted(name for name in names if name in modules and name not in seen and name != "src"):
        packages |= loaded_at_import(name, modules, seen)
    return packages


def test_predict_and_the_checkpoint_reader_load_no_training_stack() -> None:
    """`src.predict` from an ONNX file starts without torch, and a checkpoint is read without Lightning, Hydra or
    torchvision (whose datasets module alone costs more than the net's answer): each would slow every answer."""
    modules = {module_name(path): path for path in SRC.rglob("*.py")}
    training = {"pytorch_lightning", "lightning", "lightning_fabric", "hydra", "torchvision"}
    assert loaded_at_import("src.predict", modules) & (training | {"torch", "omegaconf"}) == set()
    assert "torch" in loaded_at_import("src.mnist.record", modules)  # the scan follows the project's imports
    for reader in ("src.mnist.record", "src.mnist.classifier", "src.core.checkpoint"):
        assert loaded_at_import(reader, modules) & training == set(), reader
