"""Unit: the consumer stays split by job — each module says its one job in a docstring, and no
module, class or function of the consumer and the raw loader outgrows its size limit; nor, with
the package's limits, anything in ingest/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ingest import config

INGEST = config.REPO_ROOT / "ingest"
MODULES = sorted(
    [
        *(INGEST / "consumer").glob("*.py"),
        *(INGEST / name for name in ("raw_loader.py", "faults.py", "dlt_defaults.py")),
    ]
)
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


# The whole package: no module over 450 lines, no class over 150, no function over 60.
LIMITS = {"module": 450, "class": 150, "function": 60}


@pytest.mark.parametrize("path", sorted(INGEST.rglob("*.py")), ids=lambda p: p.relative_to(INGEST).as_posix())
def test_every_module_of_the_package_says_its_job_and_stays_within_the_limits(path: Path):
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree) or path.name == "__main__.py", f"{path.name} has no module docstring"
    sizes = [("module", path.name, len(path.read_text().splitlines()))]
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            sizes.append((kind, node.name, node.end_lineno - node.lineno + 1))
    too_large = [f"{kind} {name}: {lines} lines" for kind, name, lines in sizes if lines > LIMITS[kind]]
    assert not too_large, too_large


def test_no_test_module_name_is_in_two_test_folders():
    """`make test` collects tests/unit and tests/integration in one run, without packages: two
    test files of one name make pytest refuse the second (an import file mismatch)."""
    tests = config.REPO_ROOT / "tests"
    unit = {p.name for p in (tests / "unit").glob("test_*.py")}
    integration = {p.name for p in (tests / "integration").glob("test_*.py")}
    assert not unit & integration
