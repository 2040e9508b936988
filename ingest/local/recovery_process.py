"""The local stack's recovery service: `loginvault recovery serve` in the background, with the
stack's environment (its own login; the keys from .local/keys.env through LOGINVAULT_KEYS_FILE),
its pid and log under the stack's directory. A later command stops it."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ingest import LoginvaultError, config
from ingest.local.pidfile import PidFile

READY_LINE = "recovery: serving requests"


@dataclass(frozen=True)
class RecoveryProcess:
    root: Path

    @property
    def pidfile(self) -> Path:
        return self.root / "recovery.pid"

    @property
    def logfile(self) -> Path:
        return self.root / "recovery.log"

    def pid(self) -> int | None:
        return PidFile(self.pidfile).pid()

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, env: dict[str, str], timeout: float = 30) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        offset = self.logfile.stat().st_size if self.logfile.exists() else 0
        with open(self.logfile, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ingest", "recovery", "serve"],
                cwd=config.REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while READY_LINE not in self._log_since(offset):
            if proc.poll() is not None or time.monotonic() > deadline:
                last = [line for line in self._log_since(offset).splitlines() if line.strip()][-1:] or ["no output"]
                self.pidfile.unlink(missing_ok=True)
                raise LoginvaultError(f"the recovery service did not start: {last[0]} (log: {self.logfile})")
            time.sleep(0.1)

    def _log_since(self, offset: int) -> str:
        with open(self.logfile, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        PidFile(self.pidfile).stop()

    def ensure_up(self, env: dict[str, str], restart: bool = False) -> str:
        """Started (or restarted) unless it runs: what `stack up` says of it."""
        if restart:
            self.stop()
        elif self.running():
            return f"running (log: {self.logfile})"
        self.start(env)
        return f"{'restarted' if restart else 'started'} (log: {self.logfile})"
