"""`loginvault transform [--every S] [DBT ARGS]`: dbt in this process as the transformer, once or as
the transform service (ingest/transform/runner.py, ingest/transform/metrics.py)."""

from __future__ import annotations

import argparse
import threading

from ingest import settings
from ingest.cli.command import Command
from ingest.settings import CommonSettings, DbtArgs, TransformSettings


class TransformCommand(Command):
    name = "transform"
    help = "run dbt in dbt_project/ as loginvault_transformer (default: dbt build)"
    flags = (TransformSettings, DbtArgs)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        """One dbt command (default `dbt build`), keys in the session; with --every, a build every S
        seconds in one process until SIGTERM/SIGINT."""
        from ingest.signals import stop_on_signals
        from ingest.transform import runner

        service = settings.load(TransformSettings, args)
        dbt_args = list(settings.load(DbtArgs, args).dbt_args)
        if service.every is None:
            return runner.run_once(dbt_args, service.test_scope or "all")
        stop = threading.Event()
        stop_on_signals(stop, "finishing the build in hand")
        scope = service.test_scope or "incremental"
        if not service.metrics_port:
            return runner.run_every(service.every, dbt_args, stop, cycles=service.cycles, test_scope=scope)
        from ingest.transform.metrics import serving

        with serving(service.every, service.metrics_port, service.metrics_host, common.mart_schema) as metrics:
            return runner.run_every(
                service.every, dbt_args, stop, cycles=service.cycles, observer=metrics.observe, test_scope=scope
            )
