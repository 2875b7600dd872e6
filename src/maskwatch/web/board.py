"""What the dashboard shows: per camera, who is in view now (by settled label), people seen,
recent events, and a timeline per minute or hour.

Every camera feeds it: server-side sources, browser sessions and cameras reporting over MQTT.
With an event log the timeline comes from the log (so it survives restarts) and every event is
written there; without one nothing is stored and the board keeps the latest events in memory.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from pathlib import Path
from typing import Any

from maskwatch.events import Event, EventLog
from maskwatch.stats import UNSETTLED, Row, log_rows, plausible_rows, summarise_rows
from maskwatch.types import APPEAR, CHANGE, LEAVE, SETTLE

RECENT_EVENTS = 50
MEMORY_EVENTS = 20_000


class Board:
    def __init__(self, log: Path | None = None) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._logs: dict[str, EventLog] = {}
        self._rows: deque[Row] = deque(maxlen=MEMORY_EVENTS)
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._in_view: dict[str, dict[int, str | None]] = {}
        self._seen: dict[str, int] = {}

    def camera(self, name: str) -> None:
        """Make a camera known (shown with zero counts until its first event)."""
        with self._lock:
            self._in_view.setdefault(name, {})
            self._seen.setdefault(name, 0)

    def add(self, camera: str, events: list[Event], run: str = "") -> None:
        """Record events of `camera` (one `run` of it: a process, a browser session)."""
        if not events:
            return
        with self._lock:
            view = self._in_view.setdefault(camera, {})
            for event in events:
                if event.kind == APPEAR:
                    view[event.track] = None
                    self._seen[camera] = self._seen.get(camera, 0) + 1
                elif event.kind in (SETTLE, CHANGE):
                    view[event.track] = event.label
                elif event.kind == LEAVE:
                    view.pop(event.track, None)
                self._rows.append(
                    ((camera, run), event.track, event.time, event.kind, event.label, camera)
                )
                self._recent.appendleft({"camera": camera, **event.to_json()})
            if self.log is not None:
                log = self._logs.get(f"{camera}\0{run}")
                if log is None:
                    log = self._logs[f"{camera}\0{run}"] = EventLog(self.log, camera)
                log.write(events)

    def end_run(self, camera: str, run: str = "") -> None:
        with self._lock:
            log = self._logs.pop(f"{camera}\0{run}", None)
            self._in_view[camera] = {}
        if log is not None:
            log.close()

    def live(self) -> dict[str, Any]:
        with self._lock:
            cameras = {
                name: {
                    "in_view": dict(Counter(label or UNSETTLED for label in view.values())),
                    "people_seen": self._seen.get(name, 0),
                }
                for name, view in sorted(self._in_view.items())
            }
            recent = list(self._recent)
        return {"cameras": cameras, "recent": recent}

    def timeline(self, by: str = "minute", camera: str | None = None) -> dict[str, Any]:
        """People per period; rows with an impossible time (which no calendar can show) are
        left out rather than failing every request."""
        if self.log is not None and self.log.exists():
            rows = log_rows(self.log)
        else:
            with self._lock:
                rows = list(self._rows)
        return summarise_rows(plausible_rows(rows), by, camera).to_json()

    def close(self) -> None:
        with self._lock:
            logs, self._logs = list(self._logs.values()), {}
        for log in logs:
            log.close()
