"""What the dashboard shows: per camera, who is in view now (by settled label), people seen,
mask compliance over the last hour, recent events, and a timeline per minute or hour.

Every camera feeds it: server-side sources, browser sessions and cameras reporting over MQTT.
A browser session leaves the live view when it ends (`end`); its events stay in the timeline
and its people in the people-seen total. A server camera that failed shows its error in place
of who is in view.
With an event log the timeline comes from the log (so it survives restarts) and every event is
written there; without one nothing is stored and the board keeps the latest events in memory.
A PostgreSQL log takes every run through one connection, and while the database is away the
timeline is drawn from the events in memory.

Anyone who can publish to the broker can invent camera names, so what the board holds is
bounded: at most `max_cameras` cameras are kept, and beyond that the least recently seen one
whose source is not running (an MQTT camera, an ended browser session) is forgotten, with a
warning at most every DROP_WARNING_INTERVAL seconds; if it reports again it comes back as new
(a new run in the log). All MQTT cameras share one connection to the log.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskwatch.defaults import SERVE_MAX_CAMERAS
from maskwatch.errors import MaskwatchError
from maskwatch.events import Event, EventLog, connect
from maskwatch.outbox import ThrottledWarning
from maskwatch.postgres import DatabaseUrl, EventTarget, PostgresLog
from maskwatch.presence import InView
from maskwatch.stats import (
    Compliance,
    Row,
    compliance,
    log_rows,
    period_start,
    plausible_rows,
    summarise_rows,
)

logger = logging.getLogger("maskwatch")

RECENT_EVENTS = 50
MEMORY_EVENTS = 20_000
REMOTE = "mqtt"  # the run of every camera reporting over MQTT
COMPLIANCE_WINDOW = 3600.0  # seconds of mask compliance the dashboard's sparklines show
COMPLIANCE_STEP = 300.0  # seconds per point of a sparkline


def natural_key(name: str) -> tuple[list[int | str], str]:
    """Sorts "browser 2" before "browser 10": runs of digits compare as numbers."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)], name


@dataclass
class LiveCamera:
    """One camera as the live view shows it. `error` is asked for the camera's error (None
    while it runs well) each time the board is shown; the JSON has "error" only when there is
    one, so a camera that works reads as it always did."""

    in_view: InView = field(default_factory=InView)
    error: Callable[[], str | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "in_view": dict(Counter(self.in_view.labels.values())),
            "people_seen": self.in_view.seen,
        }
        error = self.error() if self.error is not None else None
        return shown if error is None else {**shown, "error": error}


class Board:
    def __init__(
        self, log: EventTarget | None = None, max_cameras: int = SERVE_MAX_CAMERAS
    ) -> None:
        self._database: PostgresLog | None = None
        if isinstance(log, DatabaseUrl):
            self._database = PostgresLog(log)
        elif log is not None:  # a file that cannot be the log is refused now, not at each event
            connect(log).close()
        self.log = log
        self.max_cameras = max_cameras
        self.forgotten = 0
        self._lock = threading.Lock()
        self._logs: dict[tuple[str, str], EventLog] = {}  # by camera and run
        self._remote_log: EventLog | None = None  # one connection for every MQTT camera
        self._remote_runs: dict[str, int] = {}  # MQTT camera -> its run in that log
        self._database_runs: dict[tuple[str, str], int] = {}  # camera and run -> its run there
        self._rows: deque[Row] = deque(maxlen=MEMORY_EVENTS)
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._cameras: dict[str, LiveCamera] = {}  # least recently seen first
        self._running: Counter[str] = Counter()  # sources running per camera: never forgotten
        self._pinned: set[str] = set()  # server cameras (--source): kept for the server's life
        self._people = 0
        self._warning = ThrottledWarning()

    def camera(self, name: str, error: Callable[[], str | None] | None = None) -> None:
        """Make a camera known (shown with zero counts until its first event) and keep it while
        it runs, until `end_run`; `error` tells the camera's error, shown in place of who is in
        view."""
        with self._lock:
            self._running[name] += 1
            live = self._touch(name)
            if error is not None:
                live.error = error

    def pin(self, name: str, error: Callable[[], str | None]) -> None:
        """Keep a server camera (`--source`) for the server's lifetime, even once it has
        failed; `error` tells its error, shown in place of who is in view."""
        with self._lock:
            self._pinned.add(name)
            self._touch(name).error = error

    def _touch(self, camera: str) -> LiveCamera:
        """The camera's live state, the camera made the most recently seen; beyond
        `max_cameras`, the least recently seen camera that is neither running nor pinned is
        forgotten."""
        live = self._cameras.pop(camera, None) or LiveCamera()
        self._cameras[camera] = live
        if len(self._cameras) > self.max_cameras:
            kept = self._running.keys() | self._pinned
            oldest = next((name for name in self._cameras if name not in kept), None)
            if oldest is not None:
                self._forget(oldest)
        return live

    def _forget(self, camera: str) -> None:
        del self._cameras[camera]
        self._remote_runs.pop(camera, None)
        self._database_runs.pop((camera, REMOTE), None)
        self.forgotten += 1
        self._warning.warn(
            f"more than {self.max_cameras} cameras: forgetting the least recently seen, "
            f"{camera[:200]!r} ({self.forgotten} forgotten so far)"
        )

    def _log_for(self, path: Path, camera: str, run: str) -> tuple[EventLog, int | None]:
        """The log that takes the events of this run of `camera`, and the run id to write."""
        if run != REMOTE:
            log = self._logs.get((camera, run))
            if log is None:
                log = self._logs[(camera, run)] = EventLog(path, camera)
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
            in_view = self._touch(camera).in_view
            seen = in_view.seen
            in_view.update(events)
            self._people += in_view.seen - seen
            for event in events:
                self._rows.append(
                    Row((camera, run), event.track, event.time, event.kind, event.label, camera)
                )
                self._recent.appendleft({"camera": camera, **event.to_dict()})
            if self._database is not None:
                key = self._database_runs.get((camera, run))
                if key is None:
                    key = self._database_runs[(camera, run)] = self._database.add_run(camera)
                self._database.write(events, run=key)
            elif isinstance(self.log, Path):
                log, run_id = self._log_for(self.log, camera, run)
                log.write(events, run=run_id)

    def end_run(self, camera: str, run: str = "") -> None:
        """A run of `camera` ended: its log is closed and nobody is in view any more."""
        with self._lock:
            log = self._logs.pop((camera, run), None)
            self._database_runs.pop((camera, run), None)
            self._running[camera] -= 1
            if self._running[camera] <= 0:
                del self._running[camera]
            if camera in self._cameras:
                self._touch(camera).in_view.clear()
        if log is not None:
            log.close()

    def end(self, camera: str) -> None:
        """`camera` is gone for good (a browser session that closed, after `end_run`): it leaves
        the live view and the list of cameras; the people it saw stay in the total, its events
        in the timeline and the log."""
        with self._lock:
            self._cameras.pop(camera, None)

    def live(self) -> dict[str, Any]:
        """The cameras (in natural order), the people seen by all of them since the server
        started, ended sessions included, and the newest events."""
        with self._lock:
            cameras = {
                name: self._cameras[name].to_dict()
                for name in sorted(self._cameras, key=natural_key)
            }
            return {"cameras": cameras, "people_seen": self._people, "recent": list(self._recent)}

    def history(
        self,
        by: str = "minute",
        camera: str | None = None,
        now: float | None = None,
        periods: int | None = None,
    ) -> dict[str, Any]:
        """The dashboard's poll: the timeline and the mask compliance, from one read of the
        whole log (one connection to a database); with `periods`, the timeline of the people who
        appeared in the last `periods` periods and the compliance of the last hour's events, two
        reads of those windows only: a poll by minute or hour costs the same on the first day as
        after a year of events."""
        now = time.time() if now is None else now
        if periods is None:
            rows = self._stored_rows()
            return {
                "timeline": summarise_rows(rows, by, camera).to_dict(),
                "compliance": self._compliance(rows, now),
            }
        start = period_start(now, by, periods - 1)
        return {
            "timeline": summarise_rows(
                self._stored_rows(appeared_since=start), by, camera, start
            ).to_dict(),
            "compliance": self.compliance(now),
        }

    def timeline(self, by: str = "minute", camera: str | None = None) -> dict[str, Any]:
        """People per period, as `history` gives them."""
        return summarise_rows(self._stored_rows(), by, camera).to_dict()

    def compliance(self, now: float | None = None) -> dict[str, dict[str, object]]:
        """Mask compliance per camera, as `history` gives it."""
        now = time.time() if now is None else now
        return self._compliance(self._stored_rows(since=now - COMPLIANCE_WINDOW), now)

    def _stored_rows(
        self, since: float | None = None, appeared_since: float | None = None
    ) -> list[Row]:
        """The log's events with a possible time (as `log_rows` chooses them); this server's
        own events when it has no log, or while it cannot be read (a database away, a damaged
        file). Rows with an impossible time (which no calendar can show) are left out rather
        than failing every request."""
        rows = None
        if isinstance(self.log, DatabaseUrl) or (self.log is not None and self.log.exists()):
            try:
                rows = log_rows(self.log, since, appeared_since)
            except MaskwatchError as exc:
                self._warning.warn(f"the dashboard shows this server's events only: {exc}")
        if rows is None:
            with self._lock:
                rows = list(self._rows)
        return plausible_rows(rows)

    def _compliance(self, rows: list[Row], now: float | None) -> dict[str, dict[str, object]]:
        """Per camera on the board, the share of its settled people with a mask in each
        COMPLIANCE_STEP of the last COMPLIANCE_WINDOW seconds (people counted in the period
        they were first seen within the window)."""
        now = time.time() if now is None else now
        start = now - COMPLIANCE_WINDOW
        with self._lock:
            cameras = list(self._cameras)
        periods = round(COMPLIANCE_WINDOW / COMPLIANCE_STEP)
        found = compliance([r for r in rows if r.time >= start], start, COMPLIANCE_STEP, periods)
        empty = Compliance(start, COMPLIANCE_STEP, [0] * periods, [0] * periods)
        return {name: found.get(name, empty).to_dict() for name in cameras}

    def close(self) -> None:
        with self._lock:
            logs, self._logs = list(self._logs.values()), {}
            if self._remote_log is not None:
                logs.append(self._remote_log)
            self._remote_log, self._remote_runs = None, {}
        for log in logs:
            log.close()
        if self._database is not None:
            try:
                self._database.close()
            except MaskwatchError as exc:
                logger.error("%s", exc)
