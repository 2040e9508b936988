"""Calls running on a thread pool until they are reaped: the one bookkeeping of loads and deletes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class PendingCalls:
    """A thread pool and the futures of the calls submitted to it that nobody has looked at yet."""

    def __init__(self, workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        # Loader threads submit deletes while the main thread reaps them: one lock for the list.
        self._lock = threading.Lock()
        self._futures: list[Future[object]] = []

    def submit(self, call: Callable[..., object], *args: object) -> None:
        future = self._pool.submit(call, *args)
        with self._lock:
            self._futures.append(future)

    def reap(self, wait: bool) -> list[BaseException]:
        """Forget the calls that have ended (all of them, waiting, when `wait`); returns what they raised."""
        ended: list[Future[object]] = []
        running: list[Future[object]] = []
        with self._lock:
            for future in self._futures:
                (ended if wait or future.done() else running).append(future)
            self._futures = running
        return [error for error in (f.exception() for f in ended) if error is not None]

    def shutdown(self) -> None:
        """Wait for every call submitted, then end the pool's threads."""
        self._pool.shutdown(wait=True)
