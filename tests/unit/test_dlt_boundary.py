"""Unit: the dlt boundary (ingest/consumer/dlt_boundary.py) — the only module of ingest/ that
imports dlt, the range of dlt it accepts, and the facts of dlt its one shim relies on. Real dlt,
no database."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import dlt
import pyarrow as pa
import pytest
from dlt.common.runtime.run_context import RunContext

from ingest import LoginvaultError
from ingest.consumer import dlt_boundary

INGEST = Path(dlt_boundary.__file__).parents[1]
DSN = "postgresql://loader:secret@localhost:5432/loginvault"


def dlt_imports(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        if any(name == "dlt" or name.startswith("dlt.") for name in names):
            return True
    return False


def test_only_the_boundary_imports_dlt():
    importers = {str(p.relative_to(INGEST)) for p in INGEST.rglob("*.py") if dlt_imports(p)}
    assert importers == {"consumer/dlt_boundary.py"}


def test_the_scan_sees_an_import_of_dlt(tmp_path):
    for source in ("import dlt\n", "from dlt.common import json\n", "def f():\n    import dlt.destinations\n"):
        (tmp_path / "m.py").write_text(source)
        assert dlt_imports(tmp_path / "m.py"), source
    (tmp_path / "m.py").write_text("import dltx\nfrom .dlt import x\n")
    assert not dlt_imports(tmp_path / "m.py")


@pytest.mark.parametrize("version", ["1.31.0", "1.31.7", "1.31.0a1"])
def test_a_tested_dlt_is_accepted(version):
    dlt_boundary.check_dlt_version(version)


@pytest.mark.parametrize("version", ["1.30.9", "1.32.0", "2.0.0", "0.31.0", "unknown"])
def test_any_other_dlt_is_refused_in_one_line(version):
    with pytest.raises(LoginvaultError) as refused:
        dlt_boundary.check_dlt_version(version)
    assert str(refused.value) == (
        f"dlt {version} is installed; loginvault is tested with dlt >=1.31,<1.32: install that"
    )


def test_the_installed_dlt_is_in_the_tested_range():
    dlt_boundary.check_dlt_version(dlt.__version__)


def test_dlt_set_up_without_the_packaged_defaults_is_refused(monkeypatch):
    dlt_boundary.require_packaged_defaults()  # the plugin put them in place
    monkeypatch.setattr(type(dlt.config), "config_providers", property(lambda self: []))
    with pytest.raises(LoginvaultError, match="without loginvault's settings"):
        dlt_boundary.require_packaged_defaults()


def counted(destination) -> list:
    """Counts dlt's own capabilities() computations without a final config (before the memo)."""
    calls: list = []
    compute = destination.capabilities

    def counting(config=None, naming=None):
        if config is None:
            calls.append(naming)
        return compute(config, naming)

    destination.capabilities = counting
    return calls


def as_dict(caps) -> dict:
    """Capabilities as comparable values (a partial, such as dlt's file format selector, as what it calls)."""

    def value(v):
        return (v.func, v.args, v.keywords) if isinstance(v, functools.partial) else v

    return {key: value(caps[key]) for key in caps}


def test_dlt_computes_the_same_capabilities_each_time_it_is_asked():
    """The memo's premise: without a final config, the answer depends only on the destination's
    configuration and the naming convention (both fixed for a loader)."""
    destination = dlt.destinations.postgres(credentials=DSN)
    first, second = destination.capabilities(), destination.capabilities()
    assert first is not second
    assert as_dict(first) == as_dict(second)


def test_memoized_capabilities_are_computed_once_and_handed_out_as_copies():
    destination = dlt.destinations.postgres(credentials=DSN)
    fresh = as_dict(destination.capabilities())
    calls = counted(destination)
    dlt_boundary.memoized_capabilities(destination)
    first = destination.capabilities()
    first.preferred_loader_file_format = "parquet"  # dlt edits what it gets
    second = destination.capabilities()
    assert len(calls) == 1
    assert as_dict(second) == fresh and second.preferred_loader_file_format != "parquet"


def test_dlt_asks_for_capabilities_many_times_per_run(tmp_path):
    """The memo's purpose: dlt's extract and normalize steps alone ask again and again (and each
    computation resolves the whole destination configuration); with the memo, once per naming."""
    table = pa.table({"message_id": ["a", "b"], "body": ["{}", "{}"]})
    computed = {}
    for memoized in (False, True):
        destination = dlt.destinations.postgres(credentials=DSN)
        computed[memoized] = counted(destination)
        if memoized:
            dlt_boundary.memoized_capabilities(destination)
        name = f"unit_caps_{memoized}"
        pipeline = dlt.pipeline(pipeline_name=name, pipelines_dir=str(tmp_path), destination=destination)
        pipeline.extract(dlt.resource(table, name="login_events"))
        pipeline.normalize()
    assert len(computed[False]) >= 4, computed
    assert 1 <= len(computed[True]) <= 2, computed


def test_the_run_context_keeps_dlts_providers_in_dlts_order_then_the_packaged_defaults(tmp_path):
    ours = dlt_boundary.LoginvaultRunContext(str(tmp_path)).initial_providers()
    dlts = RunContext(str(tmp_path)).initial_providers()
    assert [type(p).__mro__[2] for p in ours[:-1]] == [type(p) for p in dlts]
    assert [p.name for p in ours] == [*(p.name for p in dlts), dlt_boundary.PROVIDER_NAME]
    assert isinstance(ours[-1], dlt_boundary.PackagedDefaults)


def test_a_loaders_config_lookups_are_answered_once_and_in_precedence(monkeypatch):
    monkeypatch.setenv("LOAD__RAISE_ON_MAX_RETRIES", "3")
    cache: dict = {}
    with dlt_boundary.lookups_cached(cache):
        # an environment variable still beats the shipped default (1)
        assert dlt.config["load.raise_on_max_retries"] == 3
        monkeypatch.setenv("LOAD__RAISE_ON_MAX_RETRIES", "4")
        # during a loader's runs, the first answer stands
        assert dlt.config["load.raise_on_max_retries"] == 3
    assert cache
    # outside them, and for another loader, the providers answer as always
    assert dlt.config["load.raise_on_max_retries"] == 4
    with dlt_boundary.lookups_cached({}):
        assert dlt.config["load.raise_on_max_retries"] == 4
    monkeypatch.delenv("LOAD__RAISE_ON_MAX_RETRIES")
    assert dlt.config["load.raise_on_max_retries"] == 1
