"""The dlt boundary: the only module of loginvault that imports dlt.

Everything the raw loader needs of dlt goes through here, by dlt's public API:

- `check_dlt_version`: at import, the installed dlt must be in the range this module was tested
  with (`TESTED_DLT`); any other version is refused in one line before anything runs.
- dlt's own settings (dlt_defaults.toml, shipped in the package): a config provider after all
  of dlt's own, so an environment variable or the user's .dlt/config.toml beats it. dlt's run
  context plugin (`plug_run_context`, the `dlt` entry point in pyproject.toml) puts it in place
  when dlt first sets up, before dlt resolves its runtime (log level, telemetry).
- `new_pipeline`, `raw_resource`, `run`: a pipeline of the postgres destination factory in a
  working dir of the caller's, a resource of an Arrow table, one `pipeline.run` whose completed
  packages are removed through the paths its LoadInfo gives.
- `is_transient`: dlt's own name for an error worth a retry.

One shim, where dlt offers no public way: `memoized_capabilities` (see there); its unit test
fails if dlt changes the behaviour it relies on.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
from dlt.common.configuration import plugins
from dlt.common.configuration.providers import (
    ConfigProvider,
    ConfigTomlProvider,
    EnvironProvider,
    SecretsTomlProvider,
    SettingsTomlProvider,
)
from dlt.common.destination import Destination, DestinationCapabilitiesContext
from dlt.common.destination.exceptions import DestinationTransientException
from dlt.common.runtime.run_context import RunContext
from dlt.extract.resource import DltResource

from ingest import LoginvaultError

# dlt's types the raw loader names.
Pipeline = dlt.Pipeline
__all__ = ["DltResource", "Pipeline"]  # and the functions below

# The dlt releases this module was tested with: from the first, up to (not including) the second.
TESTED_DLT = ((1, 31), (1, 32))


def check_dlt_version(version: str) -> None:
    """LoginvaultError unless `version` (dlt's) is in TESTED_DLT."""
    low, high = TESTED_DLT
    try:
        installed = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        installed = ()
    if not low <= installed < high:
        tested = f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"
        raise LoginvaultError(f"dlt {version} is installed; loginvault is tested with dlt {tested}: install that")


check_dlt_version(dlt.__version__)

DEFAULTS_FILE = Path(__file__).with_name("dlt_defaults.toml")
PROVIDER_NAME = "loginvault defaults"


_lookups = threading.local()  # .cache: the running loader's answers, on its thread


class CachedLookups:
    """A config provider whose answers are given once per loader while it runs (`lookups_cached`).

    dlt resolves its configuration again on every run (~70 config objects, each key asked of
    every provider under several sections, secrets also as files under /run/secrets), for
    answers that do not change while the process runs. Only lookups made on a loader's thread
    during its run are cached; elsewhere, and on dlt's worker threads, the provider answers as
    always. Precedence is untouched: dlt still asks the providers in order."""

    def get_value(self, key: str, hint: Any, pipeline_name: str | None, *sections: str) -> tuple[Any, str]:
        lookup = super().get_value  # type: ignore[misc]
        cache = getattr(_lookups, "cache", None)
        if cache is None:
            return lookup(key, hint, pipeline_name, *sections)  # type: ignore[no-any-return]
        try:
            found = (id(self), key, hint, pipeline_name, sections)
            return cache[found]  # type: ignore[no-any-return]
        except TypeError:  # an unhashable hint
            return lookup(key, hint, pipeline_name, *sections)  # type: ignore[no-any-return]
        except KeyError:
            answer = cache[found] = lookup(key, hint, pipeline_name, *sections)
            return answer  # type: ignore[no-any-return]


@contextlib.contextmanager
def lookups_cached(cache: dict[object, object]) -> Iterator[None]:
    """Config lookups on this thread are answered from `cache` (a loader's) until the end."""
    _lookups.cache = cache
    try:
        yield
    finally:
        _lookups.cache = None


class CachedEnviron(CachedLookups, EnvironProvider):
    pass


class CachedSecretsToml(CachedLookups, SecretsTomlProvider):
    pass


class CachedConfigToml(CachedLookups, ConfigTomlProvider):
    pass


class PackagedDefaults(CachedLookups, SettingsTomlProvider):
    """dlt_defaults.toml as a read-only dlt config provider (never secrets)."""

    def __init__(self) -> None:
        super().__init__(PROVIDER_NAME, False, DEFAULTS_FILE.name, [str(DEFAULTS_FILE.parent)])

    @property
    def is_writable(self) -> bool:
        return False


class LoginvaultRunContext(RunContext):
    """dlt's default run context: dlt's providers in dlt's order (answering a loader's run once,
    see CachedLookups), then dlt_defaults.toml."""

    def initial_providers(self) -> list[ConfigProvider]:
        return [
            CachedEnviron(),
            CachedSecretsToml(self.settings_dir, self.global_dir),
            CachedConfigToml(self.settings_dir, self.global_dir),
            PackagedDefaults(),
        ]


@plugins.hookimpl(specname="plug_run_context")
def plug_run_context(run_dir: str | None, runtime_kwargs: dict[str, Any] | None) -> RunContext:
    """dlt's plugin hook (the `dlt` entry point): the run context dlt sets up, asked before
    dlt's own (which is `trylast`), so that its runtime is resolved with our defaults."""
    return LoginvaultRunContext(run_dir)


def require_packaged_defaults() -> None:
    """LoginvaultError unless dlt set up its run context with dlt_defaults.toml in it."""
    if not any(provider.name == PROVIDER_NAME for provider in dlt.config.config_providers):
        raise LoginvaultError(
            "dlt runs without loginvault's settings (its `dlt` plugin did not load): install loginvault"
            " (`make venv`, or `pip install .`) and leave DLT_DISABLE_PLUGINS unset"
        )


# The raw contract's column types, for dlt (the bootstrap creates the table with the same).
COLUMNS: dict[str, dict[str, Any]] = {
    "message_id": {"data_type": "text", "nullable": False},
    "body": {"data_type": "text", "nullable": False},
    "sent_at": {"data_type": "timestamp", "timezone": True, "nullable": False},
    "received_at": {"data_type": "timestamp", "timezone": True, "nullable": False},
    "receive_count": {"data_type": "bigint", "precision": 32, "nullable": False},
    "queue": {"data_type": "text", "nullable": False},
}


def raw_resource(table: pa.Table, name: str) -> DltResource:
    """A dlt resource appending the Arrow `table` to the table `name`, with the contract's types."""
    resource: DltResource = dlt.resource(table, name=name, write_disposition="append", columns=COLUMNS)  # type: ignore[call-overload]
    return resource


def new_pipeline(dsn: str, workdir: str, pipeline_name: str, dataset_name: str) -> dlt.Pipeline:
    """A pipeline into PostgreSQL at `dsn` whose working state lives in `workdir` only."""
    destination = dlt.destinations.postgres(credentials=dsn)
    memoized_capabilities(destination)
    return dlt.pipeline(
        pipeline_name=pipeline_name, pipelines_dir=workdir, destination=destination, dataset_name=dataset_name
    )


def run(pipeline: dlt.Pipeline, resource: DltResource, loader_file_format: str, lookups: dict[object, object]) -> None:
    """Extract, normalize and load `resource` in one `pipeline.run`, then remove the packages of
    the completed loads (their files, schema and state: ~100 KiB each) from the working dir: the
    database's raw._dlt_loads is the record, and a consumer that loads every second would
    otherwise fill its disk. dlt raises on a failed load (PipelineStepFailed). Its config lookups
    are answered from `lookups` (the loader's) after the first time."""
    with lookups_cached(lookups):
        info = pipeline.run(resource, loader_file_format=loader_file_format)  # type: ignore[arg-type]
    for package in info.load_packages:
        shutil.rmtree(package.package_path, ignore_errors=True)


def is_transient(exc: BaseException) -> bool:
    """dlt's own verdict on an error of a destination: worth a retry."""
    return isinstance(exc, DestinationTransientException)


def memoized_capabilities(destination: Destination[Any, Any]) -> None:
    """THE SHIM: `destination.capabilities` answered from a memo.

    dlt asks the destination for its capabilities ~15 times per `pipeline.run()`, and each
    answer resolves the destination's whole configuration again (~2 ms; ~28 ms of a 100-message
    load's ~80 ms of CPU, measured). dlt has no public way to fix the capabilities of a factory
    (capability arguments to the factory are applied on top of the same resolution). The answer
    depends only on that configuration (fixed for the process) and the naming convention, so each
    is computed once and handed out as a deep copy (dlt edits what it gets). A final, resolved
    config passed by dlt is its own path and is not memoized. tests/unit/test_dlt_boundary.py
    checks both of these facts of dlt."""
    compute: Callable[..., DestinationCapabilitiesContext] = destination.capabilities
    memo: dict[Any, DestinationCapabilitiesContext] = {}
    lock = threading.Lock()

    def capabilities(config: Any = None, naming: Any = None) -> DestinationCapabilitiesContext:
        if config is not None:
            return compute(config, naming)
        key = None if naming is None else (type(naming), getattr(naming, "max_length", None))
        with lock:
            if key not in memo:
                memo[key] = compute(None, naming)
            return copy.deepcopy(memo[key])

    destination.capabilities = capabilities  # type: ignore[method-assign]
