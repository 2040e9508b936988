"""The counts of one consumer run (Stats): what the summary line, /metrics and /healthz report."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Counters every unit of the consumer adds to (through `count`, from any thread)."""

    received: int = 0
    landed: int = 0
    deleted: int = 0
    redeliveries: int = 0
    delete_failures: int = 0
    extended: int = 0
    stale_handles: int = 0
    released: int = 0
    refused: int = 0  # messages the database refused, left for redelivery and the DLQ
    last_poll_at: float | None = None  # Unix time of the last successful ReceiveMessage
    last_load_at: float | None = None  # Unix time of the last committed load
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, **increments: int) -> None:
        """Add to counters by name, as one step: receivers, loaders and deleters count at once."""
        with self._lock:
            for name, n in increments.items():
                setattr(self, name, getattr(self, name) + n)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        rate = self.landed / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"received {self.received}, landed {self.landed}, deleted {self.deleted}, "
            f"redeliveries {self.redeliveries}, {self.seconds:.1f} s, {rate:.0f} messages/s"
        )
        extras = {
            "visibility extended": self.extended,
            "stale receipt handles": self.stale_handles,
            "delete failures": self.delete_failures,
            "released": self.released,
            "refused": self.refused,
        }
        return text + "".join(f", {name} {n}" for name, n in extras.items() if n)
