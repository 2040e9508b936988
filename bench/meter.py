"""What a measured process reports about itself: its own CPU time (all its threads, nothing of
moto's or the producer's, which run in other processes), the SQS requests its boto3 client made
(by operation, through botocore's event hooks) and its message counts, sampled over time so
that a run can be cut into windows (start-up, steady state, drain) afterwards."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


def cpu_seconds() -> float:
    """User + system CPU of this process, every thread included."""
    times = os.times()
    return times.user + times.system


def thread_cpu_seconds() -> dict[str, float]:
    """The CPU of each live thread of this process (Python's threads, by name), from the thread's
    own CPU clock. A thread that has ended is not there any more: its CPU stays in cpu_seconds
    only, which is why a split by stage keeps a rest (see stage_cpu)."""
    cpu: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            cpu[thread.name] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, ProcessLookupError):  # it ended meanwhile
            continue
    return cpu


def stage_cpu(stages: dict[str, tuple[str, ...]], rest: str) -> Callable[[], dict[str, float]]:
    """A sampler of this process's CPU by stage: `stages` names each stage's thread-name prefixes;
    whatever else the process spent (threads of a library's own, threads that ended) goes to the
    stage `rest`."""

    def sample() -> dict[str, float]:
        total = cpu_seconds()
        split = dict.fromkeys(stages, 0.0)
        for name, seconds in thread_cpu_seconds().items():
            stage = next((s for s, prefixes in stages.items() if name.startswith(prefixes)), None)
            if stage is not None:
                split[stage] += seconds
        split[rest] = split.get(rest, 0.0) + total - sum(split.values())
        return split

    return sample


class RequestCounter:
    """Counts the SQS API calls a boto3 client makes, by operation name (ReceiveMessage,
    DeleteMessageBatch, ChangeMessageVisibilityBatch, …), and the HTTP attempts (retries too).

    `before-call` fires once per API call, `before-send` once per HTTP request botocore sends:
    what AWS bills is the requests, so both are kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.attempts = 0

    def register(self, client) -> None:
        client.meta.events.register("before-call.sqs", self._before_call)
        client.meta.events.register("before-send.sqs", self._before_send)

    def _before_call(self, model, **_kwargs) -> None:
        with self._lock:
            self.calls[model.name] += 1

    def _before_send(self, **_kwargs) -> None:
        with self._lock:
            self.attempts += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {**self.calls, "attempts": self.attempts}


@dataclass(frozen=True)
class Sample:
    """The process at one moment: monotonic seconds, CPU seconds, message counts, requests, and
    (when asked for) its CPU seconds by stage."""

    at: float
    cpu: float
    counts: dict[str, int]
    requests: dict[str, int]
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class Samples:
    """Samples taken every `interval` seconds by a thread of the measured process, plus marks
    (named moments, e.g. when the producer had sent its last message)."""

    counts: Callable[[], dict[str, int]]
    requests: RequestCounter
    interval: float = 0.5  # a sample costs the measured process ~0.1 ms of CPU
    stages: Callable[[], dict[str, float]] | None = None  # e.g. stage_cpu(...)
    taken: list[Sample] = field(default_factory=list)
    marks: dict[str, Sample] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="sampler", daemon=True)

    def take(self) -> Sample:
        stages = self.stages() if self.stages is not None else {}
        return Sample(time.monotonic(), cpu_seconds(), self.counts(), self.requests.snapshot(), stages)

    def mark(self, name: str) -> None:
        self.marks[name] = self.take()

    def start(self) -> None:
        self.taken.append(self.take())
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self.taken.append(self.take())

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self.taken.append(self.take())

    def first(self, count: str, at_least: int) -> Sample:
        """The first sample at which counts[`count`] had reached `at_least` (else the last)."""
        return next((s for s in self.taken if s.counts[count] >= at_least), self.taken[-1])
