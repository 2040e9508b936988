"""dlt's own settings for the raw loads: ingest/consumer/dlt_defaults.toml, at dlt's lowest precedence.

The file ships inside the package rather than as a .dlt/config.toml: dlt reads .dlt/ from the
working directory, which is the user's place to override settings (and a process started
elsewhere, such as the image's /app or a test's temporary directory, would not find ours). It
is registered as one more dlt config provider, after all of dlt's own, so an environment
variable or the user's .dlt/config.toml beats every value in it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dlt.common.configuration.container import Container
from dlt.common.configuration.providers import SettingsTomlProvider
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

DEFAULTS_FILE = Path(__file__).with_name("dlt_defaults.toml")
PROVIDER_NAME = "loginvault defaults"

_lock = threading.Lock()


class PackagedDefaults(SettingsTomlProvider):
    """dlt_defaults.toml as a read-only dlt config provider (never secrets)."""

    def __init__(self) -> None:
        super().__init__(PROVIDER_NAME, False, DEFAULTS_FILE.name, [str(DEFAULTS_FILE.parent)])

    @property
    def is_writable(self) -> bool:
        return False


def use_packaged_defaults() -> None:
    """Make dlt_defaults.toml dlt's last config provider, once per process.

    Call it before anything else in the process uses dlt: dlt resolves its runtime settings
    (log level, telemetry) when its run context is first set up, and telemetry, once started,
    stays on. Done first, the run context is set up here with the file already in place.
    """
    with _lock:
        container = Container()
        if PluggableRunContext not in container:
            run_context = PluggableRunContext()  # not in the container yet: nothing resolved
            run_context.providers.add_provider(PackagedDefaults())
            container[PluggableRunContext] = run_context  # resolves dlt's runtime, with the file
        run_context = container[PluggableRunContext]
        providers = run_context.providers.providers
        if providers[-1].name == PROVIDER_NAME:
            return
        # dlt added providers after it (its vault extras) or was set up before: last it goes,
        # and dlt's runtime settings are resolved again.
        providers[:] = [p for p in providers if p.name != PROVIDER_NAME] + [PackagedDefaults()]
        run_context.context.reset_config()
        run_context.initialize_runtime()
