"""The event stream: a person appears, their label settles or changes, they leave.

`EventStream` turns the tracker's changes in each `FrameResult` into `Event`s with wall-clock
times; `EventLog` keeps them in SQLite (time, track, label, confidence; a face snapshot only
when a snapshot folder is given). Python callers get events through `run_detect(on_event=...)`
or by feeding `EventStream.events` their own results.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.atomic import write_bytes
from maskwatch.errors import OutputError
from maskwatch.faces import square_box
from maskwatch.types import CHANGE, SETTLE, FrameResult

SCHEMA_VERSION = 1
SNAPSHOT_KINDS = (SETTLE, CHANGE)
SNAPSHOT_MAX_SIDE = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL REFERENCES runs(id),
    time REAL NOT NULL,
    frame INTEGER NOT NULL,
    kind TEXT NOT NULL,
    track INTEGER NOT NULL,
    label TEXT,
    previous TEXT,
    confidence REAL NOT NULL,
    x1 REAL, y1 REAL, x2 REAL, y2 REAL,
    snapshot TEXT
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
"""


@dataclass(frozen=True)
class Event:
    """One thing that happened to one person (track). `time` is Unix seconds: the run's start
    plus the frame's time in its source, so events of a video file follow the video's clock."""

    time: float
    source: str
    frame: int
    kind: str
    track: int
    label: str | None
    confidence: float
    box: tuple[float, float, float, float]
    previous: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        """The inverse of to_json (for events that arrive over MQTT); KeyError/ValueError if
        something is missing."""
        box = [float(v) for v in data["box"]]
        return cls(
            time=float(data["time"]),
            source=str(data["source"]),
            frame=int(data["frame"]),
            kind=str(data["kind"]),
            track=int(data["track"]),
            label=data.get("label"),
            confidence=float(data["confidence"]),
            box=(box[0], box[1], box[2], box[3]),
            previous=data.get("previous"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "time": round(self.time, 3),
            "source": self.source,
            "frame": self.frame,
            "kind": self.kind,
            "track": self.track,
            "label": self.label,
            "previous": self.previous,
            "confidence": round(self.confidence, 4),
            "box": [round(v, 1) for v in self.box],
        }


class EventStream:
    """Makes events from the pipeline's results, stamped from `started` (Unix seconds)."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.time() if started is None else started

    def events(self, result: FrameResult) -> list[Event]:
        frame = result.frame
        return [
            Event(
                time=self.started + frame.time,
                source=frame.source,
                frame=frame.index,
                kind=change.kind,
                track=change.track,
                label=change.label,
                confidence=change.confidence,
                box=(
                    float(change.box[0]),
                    float(change.box[1]),
                    float(change.box[2]),
                    float(change.box[3]),
                ),
                previous=change.previous,
            )
            for change in result.changes
        ]


def face_snapshot(image: np.ndarray, box: tuple[float, ...]) -> np.ndarray | None:
    """The face with the classifier's margin, at most SNAPSHOT_MAX_SIDE px (JPEG-ready BGR);
    None if nothing of it is inside the frame."""
    x0, y0, side = square_box(np.asarray(box, np.float32))
    height, width = image.shape[:2]
    crop = image[max(0, y0) : min(height, y0 + side), max(0, x0) : min(width, x0 + side)]
    if crop.size == 0:
        return None
    scale = SNAPSHOT_MAX_SIDE / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return crop


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) an event log, checking it is one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            db.commit()
        elif row[0] != str(SCHEMA_VERSION):
            raise OutputError(f"{path}: event log of schema {row[0]}, expected {SCHEMA_VERSION}")
    except (sqlite3.Error, OSError) as exc:
        raise OutputError(f"{path}: not a usable maskwatch event log ({exc})") from exc
    return db


def open_log(path: Path) -> sqlite3.Connection:
    """Open an existing event log for reading."""
    if not path.is_file():
        raise OutputError(f"{path}: no such event log")
    return connect(path)


class EventLog:
    """Appends events to an SQLite file, one transaction per frame. A new run is recorded each
    time a log is opened, so one file can collect many runs (and many cameras)."""

    def __init__(self, path: Path, source: str, snapshots: Path | None = None) -> None:
        self.path = Path(path)
        self.snapshots = snapshots
        self._db = connect(self.path)
        try:
            cursor = self._db.execute(
                "INSERT INTO runs (started, source) VALUES (?, ?)", (time.time(), source)
            )
            self._db.commit()
        except sqlite3.Error as exc:
            raise OutputError(f"{self.path}: cannot write ({exc})") from exc
        self.run = int(cursor.lastrowid or 0)
        self.written = 0

    def _snapshot(self, event: Event, image: np.ndarray) -> str | None:
        if self.snapshots is None or event.kind not in SNAPSHOT_KINDS:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(event.time))
        name = f"{stamp}-run{self.run}-track{event.track}-{event.label}.jpg"
        face = face_snapshot(image, event.box)
        if face is None:
            return None
        ok, data = cv2.imencode(".jpg", face)
        if not ok:
            return None
        write_bytes(self.snapshots / name, data.tobytes())
        return name

    def write(self, events: list[Event], image: np.ndarray | None = None) -> None:
        if not events:
            return
        rows = [
            (
                self.run,
                e.time,
                e.frame,
                e.kind,
                e.track,
                e.label,
                e.previous,
                e.confidence,
                *e.box,
                self._snapshot(e, image) if image is not None else None,
            )
            for e in events
        ]
        try:
            with self._db:
                self._db.executemany(
                    "INSERT INTO events (run, time, frame, kind, track, label, previous, "
                    "confidence, x1, y1, x2, y2, snapshot) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            raise OutputError(f"{self.path}: cannot write events ({exc})") from exc
        self.written += len(rows)

    def close(self) -> None:
        self._db.close()
