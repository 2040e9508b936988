"""A moto server (SQS over HTTP) in the background: the local stack's, and the tests' and
benchmarks' throwaway ones. Its pid file says whether it runs; a later command stops it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ingest import LoginvaultError
from ingest.local.network import HOST, port_open


@dataclass(frozen=True)
class MotoServer:
    """A moto server (SQS over HTTP) on HOST:port, its pid and log under `root`."""

    root: Path
    port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.root / f"moto-{self.port}.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def running(self) -> bool:
        return self.pid() is not None and port_open(HOST, self.port)

    def start(self, timeout: float = 30) -> None:
        if port_open(HOST, self.port):
            raise LoginvaultError(
                f"port {self.port} on {HOST} is taken by another program: set LOGINVAULT_SQS_PORT to a free port"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"moto-{self.port}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while not port_open(HOST, self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LoginvaultError(f"moto server did not start on port {self.port} (log: {log.name})")
            time.sleep(0.1)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
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
        self.pidfile.unlink(missing_ok=True)

    def ensure_up(self) -> bool:
        if self.running():
            return False
        self.start()
        return True
