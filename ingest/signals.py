"""How a long-running command stops: SIGTERM or SIGINT lets the work in hand finish; a second
signal to a process that holds messages (or waits for its long polls) ends it at once (SQS
redelivers what it held)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from ingest import count

log = logging.getLogger("ingest")


def stop_on_signals(
    stop: threading.Event,
    doing: str,
    held: Callable[[], int] | None = None,
    abandoning: Callable[[], str] | None = None,
) -> None:
    """SIGTERM and SIGINT set `stop`: the work in hand finishes, then the command ends. With
    `held` (how many messages the process holds), a second signal ends it at once (exit 130),
    saying what it leaves (and, with `abandoning`, what else it abandons)."""
    signalled = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if held is not None and signalled.is_set():
            also = abandoning() if abandoning else ""
            log.warning(
                "received %s again: exiting at once, %s left for redelivery%s", name, count(held(), "message"), also
            )
            os._exit(130)  # no cleanup: a load in hand may never end, and SQS redelivers what is held
        signalled.set()
        log.info("received %s: %s%s", name, doing, "; a second signal exits at once" if held else "")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
