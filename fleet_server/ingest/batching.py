"""Size- and time-bounded batches of received messages, each remembering the MQTT id to acknowledge."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fleet_server.ingest.classify import Accepted, Rejected


@dataclass(frozen=True, slots=True)
class Received:
    """One delivered message: ``mid``/``qos`` are what ``client.ack`` needs once the batch is committed."""

    mid: int
    qos: int
    topic: bytes | str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pending:
    received: Received
    outcome: Accepted | Rejected


@dataclass
class Batch:
    max_size: int
    max_delay_s: float
    items: list[Pending] = field(default_factory=list)
    opened_at: float = 0.0  # monotonic time of the first item

    def add(self, item: Pending) -> None:
        if not self.items:
            self.opened_at = time.monotonic()
        self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.max_size

    def time_left(self) -> float | None:
        """Seconds until this batch is due, ``None`` when empty."""
        if not self.items:
            return None
        return max(0.0, self.opened_at + self.max_delay_s - time.monotonic())

    @property
    def due(self) -> bool:
        left = self.time_left()
        return self.full or (left is not None and left <= 0.0)

    def take(self) -> list[Pending]:
        items, self.items = self.items, []
        return items
