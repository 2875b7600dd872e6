"""Events, the SQLite log, stats and alerts: real models on a rendered video, a real HTTP server
for webhooks and real commands for --alert-cmd."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import sqlite3
import ssl
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from conftest import THREE_FACES, assert_one_line_error, panning_frames, run_cli, self_signed
from maskwatch.alerts import AlertDispatcher, AlertFailed, AlertPolicy, CommandAlert, WebhookAlert
from maskwatch.detect import EventOutputs, run_detect
from maskwatch.errors import MaskwatchError, OutputError
from maskwatch.events import Event, EventLog
from maskwatch.pipeline import Pipeline
from maskwatch.redact import redact
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
    authorizations: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        _Hook.authorizations.append(self.headers["Authorization"])
        self.send_response(204 if self.path == "/ok" else 500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _hook_server(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A real HTTP(S) server for webhooks: its base URL (/ok answers 204, anything else 500)."""
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    if tls:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _raw_server(
    answer: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """A webhook that reads one request, then answers it with `answer(connection)` as it
    likes (byte by byte, without end); yields its URL, and waits for `answer` to end."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve() -> None:
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with tls.wrap_socket(connection, server_side=True) if tls else connection as peer:
                peer.recv(65536)
                answer(peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        thread.join(60)
        listener.close()
    assert not thread.is_alive(), "the server was still answering a minute later"


def test_webhook_posts_json_and_reports_failures() -> None:
    event = _event(SETTLE, 7, "no_mask", T0)
    with _hook_server() as base:
        WebhookAlert(base + "/ok")(event)
        assert _Hook.received[-1]["track"] == 7 and _Hook.received[-1]["label"] == "no_mask"
        assert _Hook.authorizations[-1] is None
        with pytest.raises(AlertFailed, match="500"):
            WebhookAlert(base + "/fail")(event)
    with pytest.raises(AlertFailed, match=r"/ok: Connection refused$"):  # not urllib's <...>
        WebhookAlert(base + "/ok", timeout=2)(event)  # nothing listens any more


def test_a_webhook_url_with_user_and_password_sends_basic_auth_and_never_shows_it() -> None:
    event = _event(SETTLE, 7, "no_mask", T0)
    with _hook_server() as base:
        host = base.removeprefix("http://")
        WebhookAlert(f"http://alice:p%40ss:w0rd@{host}/ok")(event)
        assert _Hook.authorizations[-1] == "Basic " + base64.b64encode(b"alice:p@ss:w0rd").decode()
        with pytest.raises(AlertFailed, match="500") as failed:
            WebhookAlert(f"http://alice:hunter2@{host}/fail?token=t0ps3cret")(event)
    shown = redact(str(failed.value))  # as the command line shows every message
    assert shown.startswith(f"webhook http://{host}/fail?token=***")
    assert "hunter2" not in shown and "alice" not in shown and "t0ps3cret" not in shown


def test_a_webhook_answering_a_byte_at_a_time_is_given_up_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline is for the whole call (a socket's timeout is for each read), over TLS too;
    and a webhook over HTTPS gets its event."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + b"x" * 300
    pause = 0.1  # the whole answer takes 34 s

    def dribble(peer: socket.socket) -> None:
        for byte in answer:
            peer.sendall(bytes([byte]))
            time.sleep(pause)

    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts the self-signed one
    event = _event(SETTLE, 7, "no_mask", T0)
    with _hook_server(tls) as base:
        WebhookAlert(base + "/ok")(event)
    assert _Hook.received[-1]["track"] == 7
    for context in (None, tls):
        with _raw_server(dribble, context) as url:
            start = time.monotonic()
            with pytest.raises(AlertFailed, match="no answer within 1 s"):
                WebhookAlert(url, timeout=1)(event)
            assert time.monotonic() - start < len(answer) * pause / 2


def test_a_webhooks_answer_is_not_read_past_its_status() -> None:
    """A server with 256 MiB to send gets a status read, then the connection closed: it manages
    to send no more than the sockets' buffers hold."""
    sent: list[int] = []

    def flood(peer: socket.socket) -> None:
        peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % 2**28)
        chunk = b"x" * 2**20
        with contextlib.suppress(OSError):
            for _ in range(2**8):
                peer.sendall(chunk)
                sent.append(len(chunk))

    with _raw_server(flood) as url:
        WebhookAlert(url)(_event(SETTLE, 7, "no_mask", T0))
    assert sum(sent) < 2**26


def test_alert_command_gets_the_event_and_its_failure_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    CommandAlert(f"sh -c 'echo $MASKWATCH_LABEL $MASKWATCH_TRACK > {out}'")(
        _event(SETTLE, 3, "incorrect", T0)
    )
    assert out.read_text().split() == ["incorrect", "3"]
    with pytest.raises(AlertFailed, match="exited with 3: nope"):
        CommandAlert("sh -c 'echo nope >&2; exit 3'")(_event(SETTLE, 3, "no_mask", T0))


def _running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_a_timed_out_alert_command_ends_with_all_it_started(tmp_path: Path) -> None:
    """A command's children go with it at the timeout: one that let go of stderr, and one
    that holds it (which kept the old code waiting for it)."""
    for n, background in enumerate(["sleep 120 </dev/null >/dev/null 2>&1 &", "sleep 120 &"]):
        pid_file = tmp_path / f"pid{n}"
        command = f"sh -c '{background} echo $! > {pid_file}; wait'"
        with pytest.raises(AlertFailed, match="timed out after 1 s"):
            CommandAlert(command, timeout=1)(_event(SETTLE, 3, "no_mask", T0))
        pid = int(pid_file.read_text())
        try:
            for _ in range(100):
                if not _running(pid):
                    break
                time.sleep(0.1)
            assert not _running(pid), f"{background!r}: the sleep outlived its command"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_an_alert_command_that_leaves_a_child_holding_its_stderr_is_done_when_it_exits(
    tmp_path: Path,
) -> None:
    """`setsid sleep 200 &` then exit 0: it was waited for to the timeout and said to fail."""
    pid_file = tmp_path / "pid"
    command = f"sh -c 'setsid sleep 120 & echo $! > {pid_file}; exit 0'"
    started = time.monotonic()
    try:
        CommandAlert(command, timeout=60)(_event(SETTLE, 3, "no_mask", T0))
        assert time.monotonic() - started < 30, "it waited for the child"
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize(
    "url",
    ["http://u:S3#CRET@127.0.0.1/", "http://u:S3/CRET@127.0.0.1:80/", "http://u:S3CRET@[::1/"],
)
def test_a_webhook_url_that_cannot_be_read_is_one_line_without_its_password(
    url: str, tmp_path: Path
) -> None:
    """A ValueError traceback (an unclosed IPv6 bracket), or the password in the message (a #
    or / in it, not percent-encoded, which ends the part a parser takes for one)."""
    proc = run_cli("detect", "--source", str(THREE_FACES), "--no-show",
                   "--json", str(tmp_path / "o.jsonl"), "--alert-webhook", url)  # fmt: skip
    assert_one_line_error(proc, "not a URL that can be read")
    assert "S3" not in proc.stderr and "CRET" not in proc.stderr


def test_an_alert_commands_stderr_is_kept_to_its_last_bytes() -> None:
    """50 MB on stderr, then the line that says why: that line is shown, and the 50 MB never
    held."""
    command = "sh -c 'yes | head -c 50000000 >&2; echo last words >&2; exit 3'"
    tracemalloc.start()
    try:
        with pytest.raises(AlertFailed, match=r"exited with 3: last words$"):
            CommandAlert(command)(_event(SETTLE, 3, "no_mask", T0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**22, f"{peak} bytes at the peak"


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
