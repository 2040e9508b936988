"""Unit: the package's layout. Its rooms (sub-packages by product) import only downward, in the
layers named here; each module says its one job in a docstring; no module, class or function
outgrows its size limit (stricter ones in the consumer)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ingest import config

INGEST = config.REPO_ROOT / "ingest"
MODULES = sorted([*(INGEST / "consumer").glob("*.py"), INGEST / "faults.py"])
# Lines, first to last, as ast counts them.
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 400, 150, 50


def sizes(path: Path) -> list[tuple[str, int, int]]:
    """(name, lines, limit) of the module and each class and function in it."""
    tree = ast.parse(path.read_text())
    found = [(path.name, len(path.read_text().splitlines()), MAX_MODULE)]
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            found.append((f"{path.name}:{node.name}", node.end_lineno - node.lineno + 1, limit))
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(INGEST).as_posix())
def test_each_module_says_its_job_and_stays_small(path: Path):
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no module docstring"
    too_large = [f"{name}: {lines} lines (limit {limit})" for name, lines, limit in sizes(path) if lines > limit]
    assert not too_large, too_large


def test_the_consumer_is_no_longer_one_module():
    assert not (INGEST / "pipeline.py").exists()


# The rooms of ingest/, lowest layer first. A module may import its own room and the rooms of
# lower layers only; rooms of one layer are peers and import nothing of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    # settings read once, names, connecting as a login, signals, fault points, an HTTP endpoint
    ("base",),
    # the bootstrap and the ACL check
    ("schema",),
    # keys, rotation, the recovery service, erasure, audit, masking
    ("vault",),
    # the three products: SQS -> raw, dbt, retention
    ("consumer", "transform", "lifecycle"),
    # the local stack and what only it and the tests use
    ("local",),
    # the command line
    ("cli",),
)
BASE_MODULES = {"__init__", "config", "setting_values", "settings", "db", "signals", "faults", "metrics_http"}


def room_of(module: str) -> str:
    """The room of a name under ingest: its sub-package; base for the modules at the top and
    the names of ingest/__init__.py (LoginvaultError, count); cli for __main__."""
    parts = module.split(".")
    assert parts[0] == "ingest", module
    if len(parts) == 1 or parts[1] in BASE_MODULES or not (INGEST / parts[1]).is_dir():
        return "cli" if parts[1:2] == ["__main__"] else "base"
    return parts[1]


def test_the_modules_at_the_top_are_the_base():
    top = {p.stem for p in INGEST.glob("*.py")} - {"__main__"} | {"settings"}
    assert top == BASE_MODULES, f"a module at the top of ingest/ is base: {top ^ BASE_MODULES} (or a room's)"


def layer_of(room: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS) if room in rooms)


def module_name(path: Path) -> str:
    rel = path.relative_to(INGEST.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every name under ingest that `module` (whose text is `source`) imports, at the top or
    inside a function: `from ingest.vault import keys` gives ingest.vault and ingest.vault.keys."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return {name for name in found if name == "ingest" or name.startswith("ingest.")}


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of `module` that do not point down (nor into its own room)."""
    room = room_of(module)
    wrong = []
    for target in sorted(imported(source, module, is_package)):
        to = room_of(target)
        if to != room and layer_of(to) >= layer_of(room):
            wrong.append(f"{module} ({room}) imports {target} ({to})")
    return wrong


def test_every_room_has_a_layer():
    rooms = {room_of(module_name(p)) for p in INGEST.rglob("*.py")}
    named = {room for layer in LAYERS for room in layer}
    assert rooms == named, f"rooms without a layer: {rooms - named}; layers naming no room: {named - rooms}"


def test_imports_point_only_downward():
    wrong = [
        line
        for path in sorted(INGEST.rglob("*.py"))
        for line in upward_imports(path.read_text(), module_name(path), path.name == "__init__.py")
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "module", "upward"),
    [
        ("from ingest.consumer import sqs\n", "ingest.vault.keys", True),  # a peer's room above
        ("def f():\n    from ingest.cli import main\n", "ingest.schema.acl", True),  # inside a function
        ("from ingest.transform import runner\n", "ingest.consumer.run", True),  # a peer of one layer
        ("from . import stats\n", "ingest.consumer.run_loop", False),  # its own room, relative
        ("from ..vault import keys\n", "ingest.transform.runner", False),  # down, relative
        ("from ..local import stack\n", "ingest.vault.rotation", True),  # up, relative
        ("from ingest import config, db\n", "ingest.vault.keys", False),  # base
        ("import ingest.schema.bootstrap\n", "ingest.local.stack", False),
    ],
)
def test_the_layer_check_tells_down_from_up(source: str, module: str, upward: bool):
    assert bool(upward_imports(source, module)) is upward


def test_no_test_module_name_is_in_two_test_folders():
    """`make test` collects tests/unit and tests/integration in one run, without packages: two
    test files of one name make pytest refuse the second (an import file mismatch)."""
    tests = config.REPO_ROOT / "tests"
    unit = {p.name for p in (tests / "unit").glob("test_*.py")}
    integration = {p.name for p in (tests / "integration").glob("test_*.py")}
    assert not unit & integration
