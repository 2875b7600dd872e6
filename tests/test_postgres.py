"""Events in a real PostgreSQL (started by the fixture): detect writes the SQLite log's schema,
stats and the dashboard read it with the same results, many writers share it, and the database
going away and coming back loses no event. Passwords never appear in what is printed."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import THREE_FACES, assert_one_line_error, free_port, run_cli, wait_for
from maskwatch.detect import EventOutputs, run_detect
from maskwatch.errors import OutputError
from maskwatch.events import Event
from maskwatch.pipeline import Pipeline
from maskwatch.postgres import DatabaseUrl, PostgresLog
from maskwatch.redact import redact
from maskwatch.sources import open_source
from maskwatch.stats import log_rows, summarise_rows
from maskwatch.tracking import IoUTracker
from maskwatch.types import APPEAR, LEAVE, SETTLE, Kind
from maskwatch.web.board import Board
from postgres_server import PASSWORD, PostgresServer, binaries

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    found = binaries()
    if found is None:
        pytest.skip("needs PostgreSQL (Debian's postgresql package)")
    server = PostgresServer(found)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture()
def database(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """The URL of a new empty database for this test (the server running)."""
    if postgres.process is None:
        postgres.start()
    return postgres.create_database(request.node.name[:60].lower())


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as db:
        return list(db.execute(query).fetchall())


def _event(track: int, kind: Kind = SETTLE, label: str | None = "no_mask") -> Event:
    return Event(time.time(), "door", track, kind, track, label, 0.9, (1.0, 2.0, 3.0, 4.0))


@pytest.fixture()
def detect_into(video: Path, detector, classifier) -> Callable[..., None]:  # type: ignore[no-untyped-def]
    """Runs detect on the rendered video into a database, calling `on_event` after each event
    is queued for it."""

    def run(database: str, on_event: Callable[[Event], None]) -> None:
        pipeline = Pipeline(detector, classifier, IoUTracker(settle_frames=5))
        events = EventOutputs(log=database, on_event=on_event)  # a URL as text will do
        run_detect(open_source(str(video)), pipeline, show=False, events=events)

    return run


def _no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


def test_detect_writes_events_and_stats_match_the_same_run_in_sqlite(
    database: str, video: Path, tmp_path: Path
) -> None:
    sqlite = tmp_path / "events.db"
    runs = [run_cli("detect", "--source", str(video), "--no-show", "--events", target)
            for target in (database, str(sqlite))]  # fmt: skip
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    _no_password(runs[0].stderr, runs[0].stdout)
    kinds = _rows(database, "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind")
    assert dict(kinds)[APPEAR] == dict(kinds)[LEAVE] >= 3 and dict(kinds)[SETTLE] >= 2
    query = "SELECT frame, kind, track, label, previous FROM events ORDER BY id"
    import sqlite3

    with sqlite3.connect(sqlite) as db:
        assert _rows(database, query) == db.execute(query).fetchall()
        # The runs happened moments apart (maybe across a minute): the file takes the
        # database's times, so both count the same people in the same periods.
        times = [t for (t,) in _rows(database, "SELECT time FROM events ORDER BY id")]
        ids = [i for (i,) in db.execute("SELECT id FROM events ORDER BY id")]
        db.executemany("UPDATE events SET time = ? WHERE id = ?", zip(times, ids, strict=True))
    for by in ("minute", "hour", "day"):
        stats = [run_cli("stats", target, "--by", by) for target in (database, str(sqlite))]
        assert stats[0].returncode == 0, stats[0].stderr
        assert stats[0].stdout == stats[1].stdout
        _no_password(stats[0].stderr)
    assert "total" in stats[0].stdout


def test_two_writers_at_once_get_runs_of_their_own(database: str, video: Path) -> None:
    detect = ("detect", "--source", str(video), "--no-show", "--events", database)
    with ThreadPoolExecutor(2) as pool:  # two processes, started together
        for proc in pool.map(lambda _: run_cli(*detect, timeout=180), range(2)):
            assert proc.returncode == 0, proc.stderr
    per_run = _rows(database, "SELECT run, count(*) FROM events GROUP BY run ORDER BY run")
    assert len(per_run) == 2 and per_run[0][1] == per_run[1][1] > 0
    assert [r[0] for r in _rows(database, "SELECT id FROM runs ORDER BY id")] == [1, 2]


def test_the_database_going_away_mid_run_loses_no_event(
    postgres: PostgresServer,
    database: str,
    detect_into: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Event] = []
    while_away: list[Event] = []

    def outage(event: Event) -> None:
        """Stop the database at the first event and start it again at the first settle."""
        seen.append(event)
        if len(seen) == 1:
            postgres.stop()
        elif postgres.process is None:
            while_away.append(event)
            if event.kind == SETTLE:
                postgres.start()

    with caplog.at_level(logging.INFO, logger="maskwatch"):
        detect_into(database, outage)
    assert while_away, "events were written while the database was away"
    stored = _rows(database, "SELECT frame, kind, track, label FROM events ORDER BY id")
    assert sorted(stored) == sorted((e.frame, str(e.kind), e.track, e.label) for e in seen)
    assert "lost" in caplog.text and "back" in caplog.text
    _no_password(caplog.text)


def test_a_bounded_queue_keeps_the_newest_events_and_names_the_rest(
    postgres: PostgresServer, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = PostgresLog(DatabaseUrl(database), "door", queue_size=5)
    postgres.stop()
    with caplog.at_level(logging.WARNING, logger="maskwatch"):
        for track in range(1, 9):
            log.write([_event(track)])
        postgres.start()
        with pytest.raises(OutputError, match="3 events were not written") as failed:
            log.close()
    assert "dropping the oldest (1 dropped so far)" in caplog.text
    tracks = _rows(database, "SELECT track FROM events ORDER BY id")
    assert [r[0] for r in tracks] == list(range(4, 9))
    _no_password(caplog.text, str(failed.value))


def test_events_never_written_end_the_run_with_an_error_naming_them(
    postgres: PostgresServer, database: str, detect_into: Callable[..., None]
) -> None:
    """The database answers at the start, then is gone for good: the run fails, saying how
    many events it could not write (the CLI prints that as its one error line)."""

    def outage(event: Event) -> None:
        if postgres.process is not None:
            postgres.stop()

    try:
        with pytest.raises(OutputError, match=r"^\d+ events were not written .* was away") as err:
            detect_into(database, outage)
    finally:
        postgres.start()
    _no_password(str(err.value))


def test_a_bad_url_a_wrong_password_or_no_server_is_one_line(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    wrong = database.replace(PASSWORD, "not-the-password")
    nobody = database.replace(f":{postgres.port}/", f":{free_port()}/")
    for target, needle in (
        (wrong, "password authentication failed"),
        (nobody, "cannot write event database"),
        (postgres.url("no_such_db"), "does not exist"),
        ("postgresql://u:pw@host:port/db", "not a URL that can be read: its port"),
    ):
        out = tmp_path / "out.jsonl"
        proc = run_cli("detect", "--source", str(THREE_FACES), "--no-show",
                       "--json", str(out), "--events", target)  # fmt: skip
        assert_one_line_error(proc, needle)
        assert not out.exists(), "nothing is written when the log cannot be opened"
        _no_password(proc.stderr, proc.stdout)
        assert "not-the-password" not in proc.stderr and ":pw@" not in proc.stderr
        stats = run_cli("stats", target)
        assert_one_line_error(stats)
        _no_password(stats.stderr)
    assert_one_line_error(run_cli("serve", "--port", str(free_port()), "--events", wrong),
                          "password authentication failed")  # fmt: skip


def test_a_database_with_tables_of_its_own_is_refused_and_left_alone(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as db:
        db.execute("CREATE TABLE events (id INTEGER, note TEXT)")
    proc = run_cli("detect", "--source", str(THREE_FACES), "--no-show", "--events", database)
    assert_one_line_error(proc, "not a maskwatch event database")
    assert_one_line_error(run_cli("stats", database), "not a maskwatch event log")
    tables = _rows(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == [("events",)], "nothing was created"


def test_a_database_of_another_schema_version_is_refused(database: str) -> None:
    PostgresLog(DatabaseUrl(database), "door").close()
    with psycopg.connect(database, autocommit=True) as db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    for proc in (
        run_cli("stats", database),
        run_cli("detect", "--source", str(THREE_FACES), "--no-show", "--events", database),
    ):
        assert_one_line_error(proc, "event log of schema 2, expected 1")
        _no_password(proc.stderr)


@pytest.mark.parametrize(
    ("url", "hidden"),
    [
        ("postgresql://u:p%40ss%2Fw0rd@db.example/site", ("p%40ss%2Fw0rd", "p@ss/w0rd")),
        ("postgres://u:hunter2@[::1]:5433/site?sslmode=require", ("hunter2",)),
        (
            "postgresql://u@db.example/site?sslmode=require&password=hunter%232",
            ("hunter%232", "hunter#2"),
        ),
        ("postgresql://u:hunter2@[::1/site", ("hunter2",)),
    ],
)
def test_a_password_is_masked_wherever_the_url_is_shown(url: str, hidden: tuple[str, ...]) -> None:
    shown = DatabaseUrl(url)
    for text in (str(shown), repr(shown), f"{shown}", shown.mask(f"failed: {hidden[-1]}")):
        assert "***" in text
        assert not any(secret in text for secret in hidden)
    assert shown.url == url


@pytest.mark.parametrize(
    "url", ["postgresql://u:topsecret@[::1/db", "postgresql://u@127.0.0.1:1/db?password=topsecret"]
)
def test_stats_never_shows_a_password_of_a_url_it_cannot_use(url: str) -> None:
    proc = run_cli("stats", url)
    assert_one_line_error(proc)
    assert "topsecret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres:postgres@db.example/site",
            "postgresql://postgres:***@db.example/site",
        ),
        (
            "postgresql://db.example/site?sslpassword=x&sslkey=k",
            "postgresql://db.example/site?sslpassword=***&sslkey=***",
        ),
        (
            "postgresql://u:p w@db.example/site?password=a b",
            "postgresql://u:***@db.example/site?password=***",
        ),
        ("postgresql://a@b:pw@db.example/site", "postgresql://a@b:***@db.example/site"),
    ],
)
def test_a_url_shows_as_redact_shows_urls_and_no_password_escapes(url: str, shown: str) -> None:
    """Secret query options are every URL's (redact.py); a password that free text's rules would
    end early (at a space, after a user name holding an @) is masked all the same."""
    assert str(DatabaseUrl(url)) == shown
    if " " not in url and "a@b" not in url:
        assert redact(url) == shown


def test_pieces_of_a_password_that_libpq_may_echo_are_masked() -> None:
    url = DatabaseUrl("postgresql://u:p@db.example/site?password=correct%20horse:staple@now")
    said = 'invalid connection option "horse:staple@now"; near "correct", at "now"'
    assert url.mask(said) == 'invalid connection option "***:***@now"; near "***", at "now"'


def test_a_one_letter_password_masks_only_itself() -> None:
    shown = DatabaseUrl("postgresql://u:p@db.example/dbp")
    assert str(shown) == "postgresql://u:***@db.example/dbp"
    assert shown.mask('port 5432 failed: bad token "p"') == 'port 5432 failed: bad token "***"'


def test_the_dashboard_reads_the_same_timeline_from_postgres_and_sqlite(
    database: str, tmp_path: Path
) -> None:
    events = [
        _event(1, APPEAR, None),
        _event(1),
        _event(2, APPEAR, None),
        _event(2, SETTLE, "mask"),
    ]
    earlier = Event(time.time() - 3 * 3600, "door", 3, APPEAR, 3, None, 0.9, (1, 2, 3, 4))
    timelines, windows = [], []
    for target in (DatabaseUrl(database), tmp_path / "events.db"):
        board = Board(target)
        board.add("door", [earlier, *events[:2], _event(3)])
        board.add("hall", events[2:], run="browser 1")
        board.close()
        restarted = Board(target)  # the timeline survives a restart of the server
        timelines.append(restarted.timeline("minute"))
        windows.append(restarted.history("hour", periods=2)["timeline"])
        assert restarted.timeline("hour", "hall")["total"]["mask"] == 1
        restarted.close()
    assert timelines[0] == timelines[1]
    assert timelines[0]["total"]["people"] == 3
    assert windows[0] == windows[1]
    assert windows[0]["total"]["people"] == 2, "who came 3 hours ago is left out whole"
    assert len(_rows(database, "SELECT id FROM runs")) == 2


def test_stats_skips_impossible_times_in_the_database(database: str) -> None:
    log = PostgresLog(DatabaseUrl(database), "door")
    log.write([_event(1, APPEAR, None), _event(1), _event(2, APPEAR, None)])
    log.close()
    with psycopg.connect(database, autocommit=True) as db:
        db.execute("UPDATE events SET time = 'Infinity' WHERE track = 2")
    proc = run_cli("stats", database)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 of 3 events" in proc.stderr
    _no_password(proc.stderr)


def test_serve_stores_browser_sessions_and_its_dashboard_reads_them_back(
    database: str, three_faces: np.ndarray
) -> None:
    from fastapi.testclient import TestClient

    from maskwatch.web.app import create_app
    from maskwatch.web.service import ServeSettings

    people = cv2.imencode(".jpg", three_faces)[1].tobytes()
    with TestClient(create_app(ServeSettings(events=DatabaseUrl(database)))) as client:
        for _ in range(2):
            with client.websocket_connect("/ws/detect") as ws:
                for _ in range(5):
                    ws.send_bytes(people)
                    assert len(json.loads(ws.receive_text())["faces"]) == 3
        wait_for(
            lambda: _rows(database, "SELECT count(*) FROM events WHERE kind = 'appear'")[0][0] == 6,
            what="both sessions' people in the database",
        )
        timeline = client.get("/api/v1/stats").json()["timeline"]
    assert timeline["total"]["people"] == 6
    assert timeline == summarise_rows(log_rows(DatabaseUrl(database)), "minute").to_dict()
    sources = _rows(database, "SELECT source FROM runs ORDER BY id")
    assert sources == [("browser 1",), ("browser 2",)]


def test_a_lock_held_by_another_session_is_an_error_not_a_hang(database: str) -> None:
    PostgresLog(DatabaseUrl(database), "door").close()
    with psycopg.connect(database) as holder, psycopg.connect(database, autocommit=True) as setup:
        holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        setup.execute("SELECT pg_advisory_lock(%s)", (0x6D61736B,))  # the writers' setup lock
        for proc in (
            run_cli("stats", database, timeout=60),
            run_cli("detect", "--source", str(THREE_FACES), "--no-show", "--events", database,
                    timeout=60),
        ):  # fmt: skip
            assert_one_line_error(proc, "lock timeout")
            _no_password(proc.stderr)
