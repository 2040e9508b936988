"""Fault-injection pause points: where the kill and outage tests stop a run (LOGINVAULT_FAULT_PAUSE)."""

from __future__ import annotations

import os
import sys
import time


def pause_at(point: str) -> None:
    """A fault-injection point for the kill and outage tests (LOGINVAULT_FAULT_PAUSE=point=seconds).

    Unset in normal runs, where it costs one dict lookup. `seconds` may be `inf`: the process
    then waits at the point until it is killed; or `until:PATH`: it waits until the file PATH
    exists (a test releases it once the fault it stages is in place: no race with a timer).
    """
    spec = os.environ.get("LOGINVAULT_FAULT_PAUSE")
    if not spec:
        return
    name, _, seconds = spec.partition("=")
    if name == point:
        print(f"fault: paused at {point}", file=sys.stderr, flush=True)
        if seconds.startswith("until:"):
            while not os.path.exists(seconds[len("until:") :]):
                time.sleep(0.05)
            return
        time.sleep(10**9 if seconds in ("", "inf") else float(seconds))
