"""The event stream: a person appears, their label settles or changes, they leave.

`EventStream` turns the tracker's changes in each `FrameResult` into `Event`s with wall-clock
times and the camera's name; watch.py hands them to event outputs (`write(events, image)` and
`close()`), of which `EventLog` is one: it keeps them in SQLite (time, track, label,
confidence; a face snapshot only when a snapshot folder is given). postgres.py keeps them in
PostgreSQL with the same schema and statements (SCHEMA, INSERT_RUN, INSERT_EVENT). Python callers
get events through `run_detect(events=EventOutputs(on_event=...))` or a `Watch` with a `Callback`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.atomic import (
    check_free_space,
    make_folder,
    remove_folders,
    remove_quietly,
    write_bytes,
    write_problem,
    writes_in_place,
)
from maskwatch.errors import OutputError
from maskwatch.faces import square_box
from maskwatch.paths import broken_link, missing
from maskwatch.redact import redact
from maskwatch.types import CHANGE, SETTLE, FrameResult, Kind

log = logging.getLogger("maskwatch")

SCHEMA_VERSION = 1
EARLIEST_TIME = 946_684_800.0  # 2000-01-01 UTC
FUTURE_SLACK = 86_400.0  # clocks of cameras may run ahead, but not by more than a day
# What SQLite needs to grow a log in WAL mode: its 32 KiB shared-memory file and a page or two.
SQLITE_PROBE_BYTES = 64 * 1024
SNAPSHOT_KINDS = (SETTLE, CHANGE)
_META_INDEX = "sqlite_autoindex_meta_1"  # SQLite's index of meta's primary key
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")  # files SQLite keeps beside a log, by suffix
SNAPSHOT_MAX_SIDE = 256

# One schema for both stores; each fills in its own types (SQLite's REAL and INTEGER are 64-bit).
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id {key},
    started {real} NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id {key},
    run {int} NOT NULL REFERENCES runs(id),
    time {real} NOT NULL,
    frame {int} NOT NULL,
    kind TEXT NOT NULL,
    track {int} NOT NULL,
    label TEXT,
    previous TEXT,
    confidence {real} NOT NULL,
    x1 {real}, y1 {real}, x2 {real}, y2 {real},
    snapshot TEXT
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
-- finds a person's first event, so that a window of time reads only the people who appeared in it
CREATE INDEX IF NOT EXISTS events_track ON events(run, track, time);
"""
SQLITE_SCHEMA = SCHEMA.format(key="INTEGER PRIMARY KEY", real="REAL", int="INTEGER")
# The statements both stores run, with SQLite's placeholders (postgres.py translates them).
READ_SCHEMA_VERSION = "SELECT value FROM meta WHERE key = 'schema'"
WRITE_SCHEMA_VERSION = f"INSERT INTO meta VALUES ('schema', '{SCHEMA_VERSION}')"
INSERT_RUN = "INSERT INTO runs (started, source) VALUES (?, ?)"
INSERT_EVENT = (
    "INSERT INTO events (run, time, frame, kind, track, label, previous, "
    "confidence, x1, y1, x2, y2, snapshot) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class Event:
    """One thing that happened to one person (track). `time` is Unix seconds: the run's start
    plus the frame's time in its source, so events of a video file follow the video's clock."""

    time: float
    source: str
    frame: int
    kind: Kind
    track: int
    label: str | None
    confidence: float
    box: tuple[float, float, float, float]
    previous: str | None = None
    camera: str | None = None  # the name the dashboard and MQTT know the camera by

    def to_dict(self) -> dict[str, Any]:
        """The event's JSON (alerts, MQTT, the dashboard; web/remote.py reads it back):
        `camera` only when it has one."""
        camera = {"camera": self.camera} if self.camera is not None else {}
        return {
            **camera,
            "time": round(self.time, 3),
            "source": self.source,
            "frame": self.frame,
            "kind": str(self.kind),
            "track": self.track,
            "label": self.label,
            "previous": self.previous,
            "confidence": round(self.confidence, 4),
            "box": [round(v, 1) for v in self.box],
        }


class EventStream:
    """Makes events from the pipeline's results, stamped from `started` (Unix seconds) and
    named after `camera`: the one place an event gets its camera."""

    def __init__(self, started: float | None = None, camera: str | None = None) -> None:
        self.started = time.time() if started is None else started
        self.camera = camera

    def events(self, result: FrameResult) -> list[Event]:
        frame = result.frame
        return [
            Event(
                time=self.started + frame.time,
                source=redact(frame.source),  # stored and sent: no camera URL's password
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
                camera=self.camera,
            )
            for change in result.changes
        ]


def plausible_time(when: object, now: float | None = None) -> bool:
    """Whether `when` (Unix seconds) can be an event's time: a finite number, not before 2000,
    not more than a day ahead. What a log holds is checked too, since anyone may write one."""
    if isinstance(when, bool) or not isinstance(when, int | float):
        return False
    now = time.time() if now is None else now
    return math.isfinite(when) and EARLIEST_TIME <= when <= now + FUTURE_SLACK


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


def _read_only_folder(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _open_problem(path: Path) -> OSError | None:
    """The error opening the log itself for reading, then for writing, meets (a missing
    permission), or None; a log that is not there yet has none."""
    for flags in (os.O_RDONLY, os.O_RDWR):
        try:
            os.close(os.open(path, flags | os.O_NONBLOCK))
        except FileNotFoundError:
            return None
        except OSError as exc:
            return exc
    return None


def _reason(path: Path, exc: sqlite3.Error) -> str:
    """Why SQLite could not use `path`, in the system's words where it has them: SQLite says
    "unable to open database file" for a read-only folder, a missing permission and more."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return os.strerror(errno.ENOSPC)
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM")):
        folder = path.parent
        if _read_only_folder(folder):
            return os.strerror(errno.EROFS)
        problem = _open_problem(path) or write_problem(folder, SQLITE_PROBE_BYTES)
        if problem is not None:
            return problem.strerror or str(problem)
    return str(exc)


def _cannot_write(path: Path, exc: sqlite3.Error) -> OutputError:
    return OutputError(f"cannot write event log {path}: {_reason(path, exc)}")


def check_schema_version(row: Sequence[Any] | None, where: object) -> None:
    """Refuse a log whose meta table does not name this schema (`row`: what
    READ_SCHEMA_VERSION found)."""
    if row is None:
        raise OutputError(f"{where}: not a maskwatch event log")
    if row[0] != str(SCHEMA_VERSION):
        raise OutputError(f"{where}: event log of schema {row[0]}, expected {SCHEMA_VERSION}")


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    check_schema_version(db.execute(READ_SCHEMA_VERSION).fetchone(), path)


def _not_a_log(path: Path, exc: sqlite3.Error) -> OutputError:
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_ERROR":  # a database without maskwatch's tables ("no such table: meta")
        return OutputError(f"{path}: not a maskwatch event log (it holds another program's data)")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return OutputError(f"{path}: not a maskwatch event log ({exc})")
    return OutputError(f"cannot read event log {path}: {_reason(path, exc)}")


def companion_files(path: Path) -> dict[str, Path]:
    """The files SQLite keeps beside a log, by suffix."""
    return {suffix: path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS}


def _remove_new_log(path: Path) -> None:
    for made in (path, *companion_files(path).values()):
        remove_quietly(made)


def _refuse_foreign(db: sqlite3.Connection, path: Path) -> None:
    """Refuse, before changing anything in it, an SQLite file that is not a maskwatch log: one
    whose `meta` names no schema but which holds anything (tables, views, triggers, rows of
    another program's `meta`); a log of another schema version too. An empty file, or the
    empty `meta` of a set-up that was cut short, is made a log."""
    try:
        version = db.execute(READ_SCHEMA_VERSION).fetchone()
    except sqlite3.OperationalError:  # no meta table, or another program's of other columns
        version = None
    if version is not None:
        check_schema_version(version, path)
        return
    objects = set(db.execute("SELECT type, name FROM sqlite_master").fetchall())
    if objects and (
        objects != {("table", "meta"), ("index", _META_INDEX)}
        or db.execute("SELECT count(*) FROM meta").fetchone()[0]
    ):
        raise OutputError(
            f"{path}: not a maskwatch event log (it holds another program's data); left as it was"
        )


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) an event log for writing, checking it is one. A log this call
    created is removed again (with SQLite's -wal and -shm files) if it cannot be set up."""
    if writes_in_place(path):
        raise OutputError(f"cannot use {path} as an event log: not a regular file")
    if path.is_dir():
        raise OutputError(f"cannot write event log {path}: {os.strerror(errno.EISDIR)}")
    created = not path.exists()
    made = make_folder(path.parent, f"event log {path}") if created else []
    db: sqlite3.Connection | None = None
    try:
        check_free_space(path.parent, f"event log {path}")
        db = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        _refuse_foreign(db, path)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SQLITE_SCHEMA)
        if db.execute(READ_SCHEMA_VERSION).fetchone() is None:
            db.execute(WRITE_SCHEMA_VERSION)
            db.commit()
        _check_schema(db, path)
    except (sqlite3.Error, OutputError) as exc:
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        if created:
            _remove_new_log(path)
            remove_folders(made)
        if isinstance(exc, OutputError):
            raise
        if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            raise OutputError(f"{path}: not a usable maskwatch event log ({exc})") from exc
        raise _cannot_write(path, exc) from exc
    return db


def open_log(path: Path) -> sqlite3.Connection:
    """Open an existing event log for reading only: a file that is not one (even an empty one)
    is refused, never written to. SQLite still checkpoints its write-ahead log on close, as
    every client does, so no -wal or -shm file is left behind; on a read-only file system,
    where nobody can be writing, the log is read as immutable (WAL needs a writable folder)."""
    if not path.is_file():
        why = "not a regular file" if path.exists() else "no such file"
        raise OutputError(f"{path}: not a maskwatch event log ({why})")
    mode = "ro&immutable=1" if _read_only_folder(path.parent) else "rw"
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode={mode}"
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(uri, uri=True, timeout=10.0, check_same_thread=False)
        db.execute("PRAGMA query_only = ON")
        _check_schema(db, path)
    except (sqlite3.Error, OutputError) as exc:
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        if isinstance(exc, OutputError):
            raise
        raise _not_a_log(path, exc) from exc
    return db


def _snapshot(folder: Path, run: int, event: Event, image: np.ndarray) -> str | None:
    """Save the face of a settle or change event in `folder`; its file name, or None."""
    if event.kind not in SNAPSHOT_KINDS:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(event.time))
    name = f"{stamp}-run{run}-track{event.track}-{event.label}.jpg"
    face = face_snapshot(image, event.box)
    if face is None:
        return None
    ok, data = cv2.imencode(".jpg", face)
    if not ok:
        return None
    write_bytes(folder / name, data.tobytes())
    return name


def event_values(
    events: Sequence[Event], snapshots: Path | None, run: int, image: np.ndarray | None
) -> list[tuple[Any, ...]]:
    """The columns of INSERT_EVENT after `run`, for each event; with a `snapshots` folder and
    the frame's `image`, the faces of settle and change events are saved there (named after
    `run`)."""
    return [
        (
            e.time,
            e.frame,
            str(e.kind),
            e.track,
            e.label,
            e.previous,
            e.confidence,
            *e.box,
            None if snapshots is None or image is None else _snapshot(snapshots, run, e, image),
        )
        for e in events
    ]


def check_snapshots(snapshots: Path | None) -> None:
    """Refuse, before the run, a snapshots folder that is a file, or whose path holds a loop of
    links or a link to nothing (the first snapshot would fail mid-run, or make folders where
    the link points)."""
    if snapshots is None:
        return
    if (broken := broken_link(snapshots)) is not None:
        where = "" if broken == snapshots else f"{broken} is "
        raise OutputError(f"cannot write snapshots to {snapshots}: {where}{missing(broken)}")
    if snapshots.exists() and not snapshots.is_dir():
        raise OutputError(f"cannot write snapshots to {snapshots}: not a folder")


class EventLog:
    """Appends events to an SQLite file, one transaction per frame. A new run is recorded each
    time a log is opened, so one file can collect many runs (and many cameras)."""

    def __init__(self, path: Path, source: str, snapshots: Path | None = None) -> None:
        self.path = Path(path)
        self.snapshots = snapshots
        check_snapshots(snapshots)
        self._db = connect(self.path)
        try:
            self.run = self.add_run(source)
        except OutputError:
            self.close()
            raise

    def add_run(self, source: str) -> int:
        """Record a new run of `source` and return its id, for `write(run=...)`: one log (one
        connection) can so take the events of many sources, e.g. serve's MQTT cameras."""
        try:
            cursor = self._db.execute(INSERT_RUN, (time.time(), source))
            self._db.commit()
        except sqlite3.Error as exc:
            raise _cannot_write(self.path, exc) from exc
        return int(cursor.lastrowid or 0)

    def write(
        self, events: Sequence[Event], image: np.ndarray | None = None, run: int | None = None
    ) -> None:
        """Append one frame's events in one transaction (snapshots cut from `image`), of this
        log's own run or of `run` from `add_run`."""
        if not events:
            return
        run = self.run if run is None else run
        rows = [(run, *values) for values in event_values(events, self.snapshots, run, image)]
        try:
            with self._db:
                self._db.executemany(INSERT_EVENT, rows)
        except sqlite3.Error as exc:
            raise _cannot_write(self.path, exc) from exc

    def close(self) -> None:
        """Close the log; what was committed stays (a failing close is logged, not raised,
        so that it never hides the error that ended a run)."""
        try:
            self._db.close()
        except sqlite3.Error as exc:
            log.warning("closing event log %s: %s", self.path, _reason(self.path, exc))
