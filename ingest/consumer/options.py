"""The settings of one consumer run (RunOptions), as `python -m ingest run` takes them."""

from __future__ import annotations

from dataclasses import dataclass

from ingest import config


@dataclass
class RunOptions:
    """How a run receives, batches and loads; the command line's defaults are set in ingest/cli.py."""

    follow: bool = False  # keep polling until stopped; otherwise end after an empty long poll
    max_messages: int | None = None  # stop after receiving this many (None: no limit)
    batch_size: int = 1000  # messages per load at most
    batch_seconds: float = 1.0  # the longest a batch waits to fill while a load is running
    wait_seconds: int = 3  # long-poll seconds of each ReceiveMessage
    visibility_timeout: int = config.DEFAULT_VISIBILITY_TIMEOUT
    retry_budget_seconds: float = 60.0  # how long RawLoader retries a failing load
    progress_seconds: float = 2.0  # how often a progress line is logged while batches flow
    workers: int = 1  # receiver threads
    loaders: int = 2  # batches loading at once
