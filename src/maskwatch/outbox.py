"""The bounded queue of events waiting for a server that is away (an MQTT broker, a PostgreSQL
database): the video never waits for it, and memory stays bounded however long it is away.

The newest `size` items are kept; each older one that makes room is counted in `dropped`,
with a warning (at most one per DROP_WARNING_INTERVAL seconds) saying how many so far.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

log = logging.getLogger("maskwatch")

DROP_WARNING_INTERVAL = 10.0  # seconds between warnings about dropped events

Item = TypeVar("Item")


class Throttle:
    """Whether a repeated warning may be given now: at most once per `interval` seconds."""

    def __init__(self, interval: float = DROP_WARNING_INTERVAL) -> None:
        self.interval = interval
        self._last = float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True


class Outbox(Generic[Item]):
    """At most `size` items waiting for `where` (named in warnings), oldest first; thread-safe."""

    def __init__(self, size: int, where: str) -> None:
        self.size = size
        self.where = where
        self.dropped = 0
        self._items: deque[Item] = deque()
        self._lock = threading.Lock()
        self._warning = Throttle()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)
            self._trim()

    def put_back(self, items: Iterable[Item]) -> None:
        """Return items taken but not delivered to the front, still within the bound."""
        with self._lock:
            self._items.extendleft(reversed(list(items)))
            self._trim()

    def take(self, most: int | None = None) -> list[Item]:
        """The oldest `most` items (all of them by default), removed from the queue."""
        with self._lock:
            count = len(self._items) if most is None else min(most, len(self._items))
            return [self._items.popleft() for _ in range(count)]

    def _trim(self) -> None:
        extra = len(self._items) - self.size
        if extra <= 0:
            return
        for _ in range(extra):
            self._items.popleft()
        self.dropped += extra
        if self._warning.ready():
            log.warning(
                "%s is away and %d events are waiting for it: dropping the oldest "
                "(%d dropped so far)",
                self.where,
                self.size,
                self.dropped,
            )
