"""A background process of the local stack (moto, the recovery service) known by its pid file:
whether it runs, and stopping it (SIGTERM, then SIGKILL when it does not go)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PidFile:
    path: Path

    def pid(self) -> int | None:
        """The process's pid while it runs, else None."""
        try:
            pid = int(self.path.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def stop(self, wait_seconds: float = 10.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + wait_seconds
            while time.monotonic() < deadline:
                try:
                    # Started by this very process (the tests): reap it, or it lingers as a zombie.
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:
                    pass  # started by an earlier command: init reaps it
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):  # it may exit just now
                    os.kill(pid, signal.SIGKILL)
        self.path.unlink(missing_ok=True)
