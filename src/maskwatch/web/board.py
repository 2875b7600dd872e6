"""What the dashboard shows: per camera, who is in view now (by settled label), people seen,
recent events, and a timeline per minute or hour.

Every camera feeds it: server-side sources, browser sessions and cameras reporting over MQTT.
With an event log the timeline comes from the log (so it survives restarts) and every event is
written there; without one nothing is stored and the board keeps the latest events in memory.

Anyone who can publish to the broker can invent camera names, so what the board holds is
bounded: at most `max_cameras` cameras are kept, and beyond that the least recently seen one
whose source is not running (an MQTT camera, an ended browser session) is forgotten, with a
warning at most every DROP_WARNING_INTERVAL seconds; if it reports again it comes back as new
(a new run in the log). All MQTT cameras share one connection to the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from maskwatch.defaults import SERVE_MAX_CAMERAS
from maskwatch.events import Event, EventLog
from maskwatch.stats import UNSETTLED, Row, log_rows, summarise_rows
from maskwatch.types import APPEAR, CHANGE, LEAVE, SETTLE
from maskwatch.web.remote import plausible_rows

logger = logging.getLogger("maskwatch")

RECENT_EVENTS = 50
MEMORY_EVENTS = 20_000
REMOTE = "mqtt"  # the run of every camera reporting over MQTT
DROP_WARNING_INTERVAL = 10.0  # seconds between warnings about forgotten cameras


class Board:
    def __init__(self, log: Path | None = None, max_cameras: int = SERVE_MAX_CAMERAS) -> None:
        self.log = log
        self.max_cameras = max_cameras
        self.forgotten = 0
        self._lock = threading.Lock()
        self._logs: dict[str, EventLog] = {}
        self._remote_log: EventLog | None = None  # one connection for every MQTT camera
        self._remote_runs: dict[str, int] = {}  # MQTT camera -> its run in that log
        self._rows: deque[Row] = deque(maxlen=MEMORY_EVENTS)
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._in_view: dict[str, dict[int, str | None]] = {}  # least recently seen first
        self._seen: dict[str, int] = {}
        self._running: Counter[str] = Counter()  # sources running per camera: never forgotten
        self._warned_at = float("-inf")

    def camera(self, name: str) -> None:
        """Make a camera known (shown with zero counts until its first event) and keep it while
        it runs, until `end_run`."""
        with self._lock:
            self._running[name] += 1
            self._touch(name)
            self._seen.setdefault(name, 0)

    def _touch(self, camera: str) -> dict[int, str | None]:
        """The camera's people in view, the camera made the most recently seen; beyond
        `max_cameras`, the least recently seen camera not running is forgotten."""
        view = self._in_view.pop(camera, {})
        self._in_view[camera] = view
        if len(self._in_view) > self.max_cameras:
            oldest = next((name for name in self._in_view if name not in self._running), None)
            if oldest is not None:
                self._forget(oldest)
        return view

    def _forget(self, camera: str) -> None:
        del self._in_view[camera]
        self._seen.pop(camera, None)
        self._remote_runs.pop(camera, None)
        self.forgotten += 1
        now = time.monotonic()
        if now - self._warned_at >= DROP_WARNING_INTERVAL:
            self._warned_at = now
            logger.warning(
                "more than %d cameras: forgetting the least recently seen, %r "
                "(%d forgotten so far)",
                self.max_cameras,
                camera[:200],
                self.forgotten,
            )

    def _log_for(self, path: Path, camera: str, run: str) -> tuple[EventLog, int | None]:
        """The log that takes the events of this run of `camera`, and the run id to write."""
        if run != REMOTE:
            key = f"{camera}\0{run}"
            log = self._logs.get(key)
            if log is None:
                log = self._logs[key] = EventLog(path, camera)
            return log, None
        if self._remote_log is None:
            self._remote_log = EventLog(path, camera)
            self._remote_runs[camera] = self._remote_log.run
        elif camera not in self._remote_runs:
            self._remote_runs[camera] = self._remote_log.add_run(camera)
        return self._remote_log, self._remote_runs[camera]

    def add(self, camera: str, events: list[Event], run: str = "") -> None:
        """Record events of `camera` (one `run` of it: a process, a browser session)."""
        if not events:
            return
        with self._lock:
            view = self._touch(camera)
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
                log, run_id = self._log_for(self.log, camera, run)
                log.write(events, run=run_id)

    def end_run(self, camera: str, run: str = "") -> None:
        with self._lock:
            log = self._logs.pop(f"{camera}\0{run}", None)
            self._running[camera] -= 1
            if self._running[camera] <= 0:
                del self._running[camera]
            self._touch(camera).clear()
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
            if self._remote_log is not None:
                logs.append(self._remote_log)
            self._remote_log, self._remote_runs = None, {}
        for log in logs:
            log.close()
