"""A moto server (SQS over HTTP) in the background: the local stack's, and the tests' and
benchmarks' throwaway ones. Its pid file says whether it runs; a later command stops it."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ingest import LoginvaultError
from ingest.local.network import HOST, port_open
from ingest.local.pidfile import PidFile


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
        return PidFile(self.pidfile).pid()

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
        PidFile(self.pidfile).stop(wait_seconds=5.0)

    def ensure_up(self) -> bool:
        if self.running():
            return False
        self.start()
        return True
