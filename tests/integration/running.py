"""`loginvault` commands run by the integration tests: once (`run_ingest`, its `Result`), or kept
running (`IngestProcess`, started by conftest's `spawn` fixture); and `wait_until`. Imported by
conftest.py, from which the tests import them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest import config

REPO_ROOT = config.REPO_ROOT


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def __iter__(self):  # (returncode, stdout, stderr) = run_ingest(...)
        return iter((self.returncode, self.stdout, self.stderr))

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def run_ingest(*args: str, env: dict[str, str], timeout: float = 120) -> Result:
    """Run `python -m ingest ARGS` from the repo root, no stdin; fails the test when it hangs."""
    out = subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(out.returncode, out.stdout, out.stderr)


# ---------------------------------------------------------------- ingest processes that keep running


class IngestProcess:
    """A `python -m ingest …` subprocess in its own process group; stdout and stderr go to files."""

    def __init__(self, args: tuple[str, ...], env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / "stdout", logs / "stderr"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "ingest", *args],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Until `text` is on stderr; fails when the process ends first or time runs out."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if self.popen.poll() is not None:
                pytest.fail(f"ingest exited ({self.popen.returncode}) before printing {text!r}:\n{self.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"ingest did not print {text!r} within {timeout} s:\n{self.stderr}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        os.kill(self.popen.pid, signum)

    def kill9(self) -> None:
        """SIGKILL to the whole process group: no handler, no finally, no release of what it holds."""
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def finish(self, timeout: float = 120) -> Result:
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ingest still running after {timeout} s:\n{self.stderr}")
        return Result(code, self.out.read_text(errors="replace"), self.stderr)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Until `predicate()` is truthy (returned); fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return value
