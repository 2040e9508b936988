"""requirements/*.lock (`make lock`) against pyproject.toml: every dependency pinned, at a version
its specifier allows, with hashes; the image's lock is the venv's, at the same versions and hashes.
A dependency changed in pyproject.toml without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DEV_LOCK = ROOT / "requirements" / "dev.lock"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<hashes>(?: --hash=sha256:[0-9a-f]{64})*)")


@cache
def pins(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """{canonical name: (version, its sha256 hashes)} of a lock; any other entry fails the test."""
    text = re.sub(r"\s*\\\n\s*", " ", path.read_text())  # continuation lines joined
    found = {}
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        match = PIN.fullmatch(entry)
        assert match, f"{path.name}: not a pinned package with hashes: {entry[:120]}"
        name = canonicalize_name(match["name"])
        assert name not in found, f"{path.name}: {name} twice"
        found[name] = (match["version"], frozenset(match["hashes"].split()))
    return found


@cache
def declared() -> tuple[list[Requirement], list[Requirement]]:
    """(the dependencies, the `dev` extra) of pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return (
        [Requirement(r) for r in project["dependencies"]],
        [Requirement(r) for r in project["optional-dependencies"]["dev"]],
    )


def assert_pinned(requirements: list[Requirement], path: Path) -> None:
    locked = pins(path)
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {path.name}: run `make lock`"
        version = Version(locked[name][0])
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{path.name} pins {name}=={version}, outside {requirement}: run `make lock`"
        )


def test_the_dev_lock_pins_every_dependency_and_the_dev_extra_with_hashes():
    runtime, dev = declared()
    assert_pinned(runtime + dev, DEV_LOCK)
    assert all(hashes for _, hashes in pins(DEV_LOCK).values())
    # The extras of a dependency are locked too (dlt[postgres] brings psycopg2).
    assert "psycopg2-binary" in pins(DEV_LOCK)


def test_the_runtime_lock_is_the_dev_lock_without_the_dev_extra():
    runtime, dev = declared()
    assert_pinned(runtime, RUNTIME_LOCK)
    dev_locked, runtime_locked = pins(DEV_LOCK), pins(RUNTIME_LOCK)
    for name, pinned in runtime_locked.items():
        assert dev_locked.get(name) == pinned, f"{name}: runtime.lock and dev.lock differ: run `make lock`"
    for requirement in dev:  # test and lint tools stay out of the image
        assert canonicalize_name(requirement.name) not in runtime_locked, requirement.name
