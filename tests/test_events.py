"""Events, the SQLite log, stats and alerts: real models on a rendered video, a real HTTP server
for webhooks and real commands for --alert-cmd."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from conftest import THREE_FACES, assert_one_line_error, panning_frames, run_cli
from maskwatch.alerts import AlertDispatcher, AlertFailed, AlertPolicy, CommandAlert, WebhookAlert
from maskwatch.detect import EventOutputs, run_detect
from maskwatch.errors import MaskwatchError, OutputError
from maskwatch.events import Event, EventLog
from maskwatch.pipeline import Pipeline
from maskwatch.sources import open_source
from maskwatch.stats import StatsTable, chart, plot, summarise
from maskwatch.tracking import IoUTracker
from maskwatch.types import APPEAR, CHANGE, LEAVE, SETTLE, Frame, Kind
from maskwatch.watch import Watch
from maskwatch.web.remote import remote_event

T0 = time.mktime((2026, 11, 25, 9, 0, 0, 0, 0, -1))  # local time, as stats groups it


def _event(kind: Kind, track: int, label: str | None, at: float, source: str = "cam") -> Event:
    return Event(at, source, 0, kind, track, label, 0.9, (0.0, 0.0, 10.0, 10.0))


@pytest.fixture(scope="module")
def come_and_go(tmp_path_factory: pytest.TempPathFactory, three_faces: np.ndarray) -> Path:
    """Three people in view for 2 s, then an empty scene for 1.5 s (15 fps)."""
    out = tmp_path_factory.mktemp("events") / "come_and_go.mp4"
    frames = panning_frames(three_faces, 30) + [np.full((480, 640, 3), 90, np.uint8)] * 22
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), 15.0, (640, 480))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return out


def test_python_callers_get_appear_settle_and_leave(
    come_and_go: Path, detector, classifier
) -> None:  # type: ignore[no-untyped-def]
    seen: list[Event] = []
    tracker = IoUTracker(settle_frames=5, max_missed=15, memory_s=0)  # 15 frames, not seconds
    pipeline = Pipeline(detector, classifier, tracker)
    summary = run_detect(
        open_source(str(come_and_go)),
        pipeline,
        show=False,
        events=EventOutputs(on_event=seen.append),
    )
    by_track: dict[int, list[str]] = {}
    for event in seen:
        by_track.setdefault(event.track, []).append(event.kind)
    assert len(by_track) >= 3, by_track
    for kinds in by_track.values():
        assert kinds[0] == APPEAR and kinds[-1] == LEAVE
        assert kinds.count(APPEAR) == kinds.count(LEAVE) == 1
    settled = {e.label for e in seen if e.kind == SETTLE}
    assert {"mask", "no_mask"} <= settled
    leave = [e for e in seen if e.kind == LEAVE]
    assert all(30 + 15 <= e.frame < 52 for e in leave), "they leave 15 frames after going"
    assert all(e.time >= seen[0].time for e in seen)
    assert summary.events[APPEAR] == summary.events[LEAVE] == len(by_track)


def test_detect_logs_events_snapshots_and_alerts_then_stats_summarise(
    come_and_go: Path, tmp_path: Path
) -> None:
    log = tmp_path / "events.db"
    alerts = tmp_path / "alerts.jsonl"
    snaps = tmp_path / "snaps"
    command = f"sh -c 'cat >> {alerts}; echo >> {alerts}'"
    for _ in range(2):  # a second run appends to the same log
        proc = run_cli(
            "detect",
            "--source",
            str(come_and_go),
            "--no-show",
            "--events",
            str(log),
            "--snapshots",
            str(snaps),
            "--alert-cmd",
            command,
        )
        assert proc.returncode == 0, proc.stderr
    assert "alerts: 1 sent" in proc.stderr
    db = sqlite3.connect(log)
    rows = db.execute("SELECT run, kind, track, label, snapshot FROM events ORDER BY id").fetchall()
    assert {r[0] for r in rows} == {1, 2}
    first = [r for r in rows if r[0] == 1]
    people = len({r[2] for r in first})
    assert [r[1] for r in first].count(APPEAR) == [r[1] for r in first].count(LEAVE) == people
    settled = {r[2]: r[3] for r in first if r[1] == SETTLE}
    assert {"mask", "no_mask"} <= set(settled.values())
    names = [r[4] for r in rows if r[4]]
    assert len(names) == 2 * len(settled) and all(r[1] in (SETTLE, CHANGE) for r in rows if r[4])
    for name in names:
        image = cv2.imread(str(snaps / name))
        assert image is not None and max(image.shape[:2]) <= 256
    assert not any(p.name.startswith(".") for p in snaps.iterdir())
    sent = [json.loads(line) for line in alerts.read_text().splitlines() if line.strip()]
    # Faces that settle as no_mask in the same frame make one alert: the global rate limit.
    assert [(a["kind"], a["label"]) for a in sent] == [(SETTLE, "no_mask")] * 2

    proc = run_cli("stats", str(log), "--by", "day", "--plot", str(tmp_path / "chart.png"))
    assert proc.returncode == 0, proc.stderr
    total = next(line for line in proc.stdout.splitlines() if line.startswith("total"))
    labels = list(settled.values())
    counts = [labels.count(k) for k in ("mask", "no_mask", "incorrect")]
    expected = [people, *counts, people - len(labels)]
    assert total.split()[1:] == [str(2 * n) for n in expected]
    chart = cv2.imread(str(tmp_path / "chart.png"))
    assert chart is not None and chart.shape[1] >= 600


def test_stats_count_each_person_once_under_their_longest_label(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log.db", "cam")
    log.write(
        [
            _event(APPEAR, 1, None, T0),
            _event(SETTLE, 1, "mask", T0 + 1),
            _event(CHANGE, 1, "no_mask", T0 + 2),  # mask off for most of the visit
            _event(LEAVE, 1, "no_mask", T0 + 50),
            _event(APPEAR, 2, None, T0 + 30),
            _event(LEAVE, 2, None, T0 + 31),
            _event(APPEAR, 3, None, T0 + 70),
            _event(SETTLE, 3, "incorrect", T0 + 71),
            _event(LEAVE, 3, "incorrect", T0 + 90),
        ]
    )
    log.close()
    table = summarise(tmp_path / "log.db", by="minute")
    assert [(p[-5:], dict(c)) for p, c in table.rows] == [
        ("09:00", {"no_mask": 1, "unsettled": 1}),
        ("09:01", {"incorrect": 1}),
    ]
    assert summarise(tmp_path / "log.db", by="hour", source="other").rows == []
    plot(table, tmp_path / "minutes.png")
    assert cv2.imread(str(tmp_path / "minutes.png")) is not None
    with pytest.raises(MaskwatchError, match="unknown period"):
        summarise(tmp_path / "log.db", by="week")


def test_stats_of_another_programs_database_says_so(tmp_path: Path) -> None:
    """It said SQLite's "no such table: meta"."""
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE people (name TEXT)")
    proc = run_cli("stats", str(other))
    assert_one_line_error(proc, f"{other}: not a maskwatch event log (it holds another program's")


def test_a_file_that_is_not_an_event_log_is_one_clear_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 100)
    with pytest.raises(OutputError, match="not a usable maskwatch event log"):
        EventLog(junk, "cam")
    assert_one_line_error(run_cli("stats", str(junk)), "junk.db")
    out = tmp_path / "out"
    proc = run_cli(
        "detect", "--source", str(THREE_FACES), "--no-show", "--json", str(out / "r.jsonl"),
        "--events", str(junk),
    )  # fmt: skip
    assert_one_line_error(proc, "junk.db")
    assert not out.exists() or list(out.iterdir()) == [], "no half-written output is left"
    assert_one_line_error(
        run_cli("detect", "--json", "-", "--snapshots", str(tmp_path)), "--snapshots needs --events"
    )
    assert_one_line_error(
        run_cli("detect", "--no-show", "--events", "x.db", "--alert-cmd", "no-such-program-x"),
        "no such program",
    )
    assert_one_line_error(
        run_cli("detect", "--no-show", "--events", "x.db", "--alert-webhook", "ftp://x"),
        "http",
    )


def test_event_kinds_keep_their_strings_in_json_and_the_log(tmp_path: Path) -> None:
    assert [str(k) for k in Kind] == ["appear", "settle", "change", "leave"]
    event = _event(SETTLE, 1, "mask", T0)
    text = json.dumps(event.to_dict())
    assert '"kind": "settle"' in text
    camera, back = remote_event("cam", json.loads(text))  # as serve reads MQTT events
    assert camera == "cam" and back == event and back.kind is Kind.SETTLE
    with pytest.raises(ValueError, match="kind: Input should be 'appear', 'settle'"):
        remote_event("cam", {**event.to_dict(), "kind": "explode"})
    log = EventLog(tmp_path / "events.db", "cam")
    log.write([event])
    log.close()
    with sqlite3.connect(tmp_path / "events.db") as db:
        rows = db.execute("SELECT kind, typeof(kind) FROM events").fetchall()
    assert rows == [("settle", "text")]


def test_rate_limits_per_person_and_overall() -> None:
    policy = AlertPolicy(track_interval=60, global_interval=10)
    assert not policy.wants(_event(SETTLE, 1, "mask", T0))
    assert not policy.wants(_event(APPEAR, 1, None, T0))
    assert policy.wants(_event(CHANGE, 1, "incorrect", T0))
    assert policy.allow(_event(SETTLE, 1, "no_mask", T0))
    assert not policy.allow(_event(SETTLE, 2, "no_mask", T0 + 5))  # too soon overall
    assert policy.allow(_event(SETTLE, 2, "no_mask", T0 + 11))
    assert not policy.allow(_event(CHANGE, 1, "incorrect", T0 + 30))  # too soon for person 1
    assert policy.allow(_event(CHANGE, 1, "incorrect", T0 + 61))
    assert policy.allow(_event(SETTLE, 1, "no_mask", T0 + 75, source="other camera"))


def test_alerts_never_block_the_caller_and_failures_are_not_fatal(caplog) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()
    handled: list[int] = []

    def slow(event: Event) -> None:
        release.wait(30)
        handled.append(event.track)

    def broken(event: Event) -> None:
        raise AlertFailed("webhook down")

    dispatcher = AlertDispatcher([broken, slow], AlertPolicy(global_interval=0), queue_size=2)
    for track in range(1, 5):
        dispatcher.offer(_event(SETTLE, track, "no_mask", T0 + track))
    # All four offers returned while the first alert is still stuck in `slow`.
    assert handled == []
    assert dispatcher.counts.dropped >= 1
    release.set()
    dispatcher.close()
    assert handled == sorted(handled) and len(handled) == 4 - dispatcher.counts.dropped
    assert dispatcher.counts.failed == len(handled)
    assert "webhook down" in caplog.text


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204 if self.path == "/ok" else 500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_posts_json_and_reports_failures() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        event = _event(SETTLE, 7, "no_mask", T0)
        WebhookAlert(base + "/ok")(event)
        assert _Hook.received[-1]["track"] == 7 and _Hook.received[-1]["label"] == "no_mask"
        with pytest.raises(AlertFailed, match="500"):
            WebhookAlert(base + "/fail")(event)
    finally:
        server.shutdown()
    with pytest.raises(AlertFailed):
        WebhookAlert(base + "/ok", timeout=2)(event)  # nothing listens any more


def test_alert_command_gets_the_event_and_its_failure_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    CommandAlert(f"sh -c 'echo $MASKWATCH_LABEL $MASKWATCH_TRACK > {out}'")(
        _event(SETTLE, 3, "incorrect", T0)
    )
    assert out.read_text().split() == ["incorrect", "3"]
    with pytest.raises(AlertFailed, match="exited with 3: nope"):
        CommandAlert("sh -c 'echo nope >&2; exit 3'")(_event(SETTLE, 3, "no_mask", T0))


def test_stats_of_an_unknown_camera_names_the_logs_cameras(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log.db", "door 1")
    log.write([_event(APPEAR, 1, None, T0, "door 1"), _event(LEAVE, 1, None, T0 + 5, "door 1")])
    log.close()
    proc = run_cli("stats", str(tmp_path / "log.db"), "--source", "door1")
    assert proc.returncode == 0 and "total" in proc.stdout
    assert "warning: " in proc.stderr and "'door1'" in proc.stderr and "'door 1'" in proc.stderr
    assert run_cli("stats", str(tmp_path / "log.db"), "--source", "door 1").stderr == ""


def test_the_charts_legend_is_above_the_bars_not_over_them() -> None:
    counts: Counter[str] = Counter(mask=7, no_mask=3, incorrect=1, unsettled=2)
    table = StatsTable("hour", [(f"2026-11-29 {h:02d}:00", counts) for h in range(24)])
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = chart(table)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    bars = [bar.get_window_extent(renderer) for bar in fig.axes[0].patches]
    assert len(bars) == 24 * 4 and legend.height > 0
    assert not any(legend.overlaps(bar) for bar in bars)
    assert not legend.overlaps(fig.axes[0].title.get_window_extent(renderer))
    assert legend.y0 >= fig.axes[0].get_window_extent(renderer).y1  # above the plot
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["Mask", "No mask", "Mask worn incorrectly", "Not yet settled"]


def test_the_charts_people_axis_counts_whole_people() -> None:
    table = StatsTable("hour", [("2026-11-29 22:00", Counter(mask=1, no_mask=2, unsettled=1))])
    ticks = chart(table).axes[0].get_yticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_events_and_their_log_keep_no_password_of_a_camera_url(
    tmp_path: Path, three_faces: np.ndarray, detector, classifier
) -> None:  # type: ignore[no-untyped-def]
    """A camera URL's password stays out of the events (the log, MQTT, webhooks, the dashboard's
    recent events) and of the log's list of runs."""
    url = "rtsp://admin:hunter2@127.0.0.1/cam?pwd=qwerty9"
    seen: list[Event] = []
    outputs = EventOutputs(log=tmp_path / "ev.db", on_event=seen.append)
    tracker = IoUTracker(settle_frames=3, max_missed=5, memory_s=0)
    with Watch(Pipeline(detector, classifier, tracker)) as watch:
        outputs.open(watch, url)
        frames = panning_frames(three_faces, 10)
        watch.run(Frame(image, i, i / 15, url) for i, image in enumerate(frames))
    assert seen and all(e.source == "rtsp://admin:***@127.0.0.1/cam?pwd=***" for e in seen)
    stored = (tmp_path / "ev.db").read_bytes()
    assert b"hunter2" not in stored and b"qwerty9" not in stored
    assert summarise(tmp_path / "ev.db", source=url).rows, "stats --source takes the URL as given"
