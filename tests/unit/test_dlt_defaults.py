"""dlt's own settings: ingest/consumer/dlt_defaults.toml applies unless an environment variable or the
user's .dlt/config.toml says otherwise. Real dlt configuration resolution, each case in a fresh
process (dlt reads the environment and the working directory when it first sets up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hermetic import base_env

# The values a process sees once dlt set itself up (through loginvault's run context plugin): dlt's
# runtime as it resolved it (logging, telemetry), the other settings as dlt.config resolves them.
RESOLVE = """
import json
from ingest.consumer import dlt_boundary
dlt_boundary.require_packaged_defaults()
import dlt
from dlt.common.configuration.container import Container
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
from dlt.common.runtime import anon_tracker
runtime = Container()[PluggableRunContext].context.runtime_config
keys = ["load.raise_on_max_retries", "normalize.parquet_normalizer.add_dlt_id",
        "normalize.parquet_normalizer.add_dlt_load_id", "data_writer.disable_compression",
        "restore_from_destination", "extract.futures_poll_interval"]
print(json.dumps({"log_level": runtime.log_level, "telemetry": runtime.dlthub_telemetry,
                  "tracker_started": anon_tracker._ANON_TRACKER_ENDPOINT is not None,
                  **{key: dlt.config[key] for key in keys}}))
"""
SHIPPED = {
    "log_level": "CRITICAL",
    "telemetry": False,
    "tracker_started": False,
    "load.raise_on_max_retries": 1,
    "normalize.parquet_normalizer.add_dlt_id": True,
    "normalize.parquet_normalizer.add_dlt_load_id": True,
    "data_writer.disable_compression": True,
    "restore_from_destination": False,
    "extract.futures_poll_interval": 0.001,
}
DLT_ENV_PREFIXES = ("RUNTIME__", "NORMALIZE__", "LOAD__", "DATA_WRITER__", "EXTRACT__", "RESTORE_FROM_", "DLT_")


def resolved(cwd: Path, **env: str) -> dict:
    """The settings dlt resolves in a process started in `cwd` with `env` on top of a clean one."""
    clean = {k: v for k, v in base_env().items() if not k.startswith(DLT_ENV_PREFIXES)}
    out = subprocess.run(
        [sys.executable, "-c", RESOLVE],
        cwd=cwd,
        env={**clean, "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_the_shipped_defaults_apply(tmp_path):
    assert resolved(tmp_path) == SHIPPED


def test_an_environment_variable_beats_the_shipped_file(tmp_path):
    settings = resolved(tmp_path, RUNTIME__LOG_LEVEL="WARNING", LOAD__RAISE_ON_MAX_RETRIES="3")
    assert settings == {**SHIPPED, "log_level": "WARNING", "load.raise_on_max_retries": 3}


def test_the_users_dlt_config_toml_beats_the_shipped_file(tmp_path):
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(
        '[runtime]\nlog_level = "INFO"\n\n[normalize.parquet_normalizer]\nadd_dlt_id = false\n'
    )
    settings = resolved(tmp_path)
    assert settings == {**SHIPPED, "log_level": "INFO", "normalize.parquet_normalizer.add_dlt_id": False}
