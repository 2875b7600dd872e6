"""`maskwatch serve` and MQTT: the API on real photos, the page in a real browser (Debian's
chromium through playwright-core, its fake camera fed a y4m video of real faces), and a real
Mosquitto broker on loopback."""

from __future__ import annotations

import io
import json
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from conftest import (
    CHROMIUM,
    THREE_FACES,
    assert_one_line_error,
    free_port,
    panning_frames,
    run_browser,
    run_cli,
    self_signed,
    wait_for,
)
from maskwatch.defaults import IN_VIEW_MAX
from maskwatch.errors import MaskwatchError
from maskwatch.events import Event
from maskwatch.mqtt import MqttPublisher, MqttSubscriber, parse_mqtt_url
from maskwatch.postgres import EventTarget
from maskwatch.stats import Row, log_rows
from maskwatch.types import APPEAR, LEAVE, SETTLE
from maskwatch.web import board as board_module
from maskwatch.web.app import ServeSettings, create_app
from maskwatch.web.board import Board
from maskwatch.web.service import is_own_name


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def moving_frames(photo: np.ndarray, count: int) -> list[np.ndarray]:
    return panning_frames(photo, count, period=20)


def right_edge_frames(photo: np.ndarray, count: int) -> list[np.ndarray]:
    """`photo` across a 640x480 frame, shifted right (and swaying) so that its rightmost face
    nears the frame's edge, where labels used to run off."""
    small = cv2.resize(photo, None, fx=640 / photo.shape[1], fy=640 / photo.shape[1])
    top = (480 - small.shape[0]) // 2
    frames = []
    for i in range(count):
        shift = 110 + 4 * (i % 10)
        canvas = np.full((480, 640, 3), 90, np.uint8)
        canvas[top : top + small.shape[0], shift:] = small[:, : 640 - shift]
        frames.append(canvas)
    return frames


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """A raw YUV4MPEG2 (4:2:0) video, the format Chromium's fake camera reads."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def three_faces_jpeg() -> bytes:
    return THREE_FACES.read_bytes()


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ServeSettings(token="secret", max_upload_mb=1, events=tmp_path / "ev.db"))
    with TestClient(app) as c:
        c.headers["Authorization"] = "Bearer secret"
        yield c


def test_api_detects_faces_in_an_uploaded_photo(
    client: TestClient, three_faces_jpeg: bytes
) -> None:
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["auth"] is True
    reply = client.post("/api/v1/detect", files={"image": ("door.jpg", three_faces_jpeg)})
    assert reply.status_code == 200
    result = reply.json()
    assert set(result) == {"source", "frame", "time", "width", "height", "faces"}
    assert result["source"] == "door.jpg" and result["width"] == 660
    labels = {f["label"] for f in result["faces"]}
    assert {"mask", "no_mask"} <= labels
    assert all(f["track"] is None for f in result["faces"])
    assert "/api/v1/detect" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_api_refuses_bad_uploads_and_missing_tokens(client: TestClient, tmp_path: Path) -> None:
    not_image = client.post("/api/v1/detect", files={"image": ("x.jpg", b"GIF89a not really")})
    assert not_image.status_code == 415 and "not a readable image" in not_image.json()["error"]
    huge = client.post("/api/v1/detect", files={"image": ("big.jpg", b"\xff" * (2 * 2**20))})
    assert huge.status_code == 413 and "error" in huge.json()
    assert client.post("/api/v1/detect").status_code == 422
    anonymous = httpx.Client(transport=client._transport, base_url=str(client.base_url))
    denied = anonymous.get("/api/v1/stats")
    assert denied.status_code == 401 and "token" in denied.json()["error"]
    assert anonymous.get("/api/v1/stats", params={"token": "secret"}).status_code == 200
    assert anonymous.get("/api/v1/health").status_code == 200
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/static/app.js").status_code == 200
    icon = anonymous.get("/favicon.ico")  # public, like the page that asks for it
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert Image.open(io.BytesIO(icon.content)).ico.sizes() >= {(16, 16), (32, 32)}
    svg = anonymous.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    stranger = TestClient(client.app)
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        stranger.websocket_connect("/ws/detect") as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 1008 and "needs a token" in refused.value.reason
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        stranger.websocket_connect("/ws/detect?token=guess") as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 1008 and "is not this server's" in refused.value.reason


def test_websocket_tracks_a_browser_camera_and_the_dashboard_counts_it(
    client: TestClient, three_faces: np.ndarray
) -> None:
    with client.websocket_connect("/ws/detect?token=secret") as ws:
        replies = []
        for frame in moving_frames(three_faces, 12):
            ws.send_bytes(jpeg(frame))
            replies.append(json.loads(ws.receive_text()))
        ws.send_bytes(b"not a jpeg")
        assert "error" in json.loads(ws.receive_text())
        name = replies[-1]["camera"]
        during = client.get("/api/v1/stats").json()
    last = replies[-1]
    assert name.startswith("browser") and last["server_ms"] > 0
    assert sum(f["track"] is not None for f in last["faces"]) >= 3  # new faces: null for now
    camera = during["cameras"][name]
    assert camera["people_seen"] >= 3 and sum(camera["in_view"].values()) >= 3
    assert "error" not in camera
    settled = [f["label"] for f in last["faces"] if f["settled"]]
    assert settled and all(f["track"] is not None for f in last["faces"] if f["settled"])
    compliance = during["compliance"][name]  # the session's people, all in the newest period
    assert len(compliance["share"]) == 12 and compliance["step_s"] == 300
    assert compliance["settled"][-1] >= len(settled) and sum(compliance["settled"][:-1]) == 0
    assert compliance["share"][-1] == compliance["mask"][-1] / compliance["settled"][-1]
    stats = wait_for(
        lambda: not (s := client.get("/api/v1/stats").json())["cameras"] and s,
        what="the ended session to leave the dashboard",
    )
    assert stats["people_seen"] == camera["people_seen"]  # its people stay in the total
    assert stats["timeline"]["total"]["people"] == camera["people_seen"]
    kinds = {e["kind"] for e in stats["recent"]}
    assert {APPEAR, SETTLE, LEAVE} <= kinds
    assert stats["stored"] is True
    mine = client.get("/api/v1/stats", params={"camera": name, "by": "hour"}).json()
    assert mine["timeline"]["total"]["people"] == stats["timeline"]["total"]["people"]
    other = client.get("/api/v1/stats", params={"camera": "door 9"}).json()
    assert other["timeline"]["total"]["people"] == 0
    assert client.get("/api/v1/stats", params={"by": "week"}).status_code == 422


@pytest.mark.parametrize("stored", [True, False], ids=["event-log", "memory"])
def test_many_short_sessions_leave_the_camera_list_and_keep_their_history(
    tmp_path: Path, three_faces: np.ndarray, stored: bool
) -> None:
    """50 sessions of 5 frames; every 10th shows the three faces, the rest an empty room."""
    sessions, frames, crowded = 50, 5, range(1, 51, 10)
    people, empty = jpeg(three_faces), jpeg(np.full((120, 160, 3), 90, np.uint8))
    settings = ServeSettings(events=tmp_path / "ev.db" if stored else None)
    with TestClient(create_app(settings)) as client:
        for session in range(1, sessions + 1):
            with client.websocket_connect("/ws/detect") as ws:
                for _ in range(frames):
                    ws.send_bytes(people if session in crowded else empty)
                    reply = json.loads(ws.receive_text())
                    assert reply["camera"] == f"browser {session}"
                    assert len(reply["faces"]) == (3 if session in crowded else 0)
            assert len(client.get("/api/v1/stats").json()["cameras"]) <= 1
        stats = wait_for(
            lambda: not (s := client.get("/api/v1/stats").json())["cameras"] and s,
            what="every ended session to leave the dashboard",
        )
        one = client.get("/api/v1/stats", params={"camera": "browser 11"}).json()
    assert stats["people_seen"] == 3 * len(crowded)
    assert stats["timeline"]["total"]["people"] == 3 * len(crowded)
    assert one["timeline"]["total"]["people"] == 3
    if stored:  # a run per session that saw anyone, under the session's name
        with closing(sqlite3.connect(tmp_path / "ev.db")) as db:
            names = [row[0] for row in db.execute("SELECT source FROM runs ORDER BY id")]
        assert names == [f"browser {session}" for session in crowded]


def test_the_board_sorts_cameras_naturally_and_shows_a_failed_cameras_error() -> None:
    board = Board()
    for name in ("browser 10", "browser 2", "Door 1", "browser 1", "camera 02"):
        board.camera(name)
    board.camera("camera 3", lambda: "cannot open camera 3")
    cameras = board.live()["cameras"]
    assert list(cameras) == ["browser 1", "browser 2", "browser 10", "camera 02", "camera 3",
                             "Door 1"]  # fmt: skip
    assert cameras["camera 3"] == {"in_view": {}, "people_seen": 0,
                                   "error": "cannot open camera 3"}  # fmt: skip
    assert cameras["browser 1"] == {"in_view": {}, "people_seen": 0}
    board.end("browser 2")
    assert "browser 2" not in board.live()["cameras"]


@pytest.mark.parametrize("stored", [True, False], ids=["event-log", "memory"])
def test_the_board_reports_mask_compliance_per_camera_over_the_last_hour(
    tmp_path: Path, stored: bool
) -> None:
    now = time.time()
    board = Board(tmp_path / "ev.db" if stored else None)
    for name in ("door", "hall"):
        board.camera(name)

    def visit(camera: str, track: int, ago: float, label: str | None) -> None:
        at = now - ago
        events = [Event(at, camera, track, APPEAR, track, None, 0.0, (0.0, 0.0, 9.0, 9.0))]
        if label is not None:
            events.append(Event(at + 5, camera, track, SETTLE, track, label, 0.9, (0, 0, 9, 9)))
        board.add(camera, [*events, Event(at + 20, camera, track, LEAVE, track, label, 0.9,
                                          (0.0, 0.0, 9.0, 9.0))])  # fmt: skip

    visit("door", 1, 2 * 3600, "no_mask")  # before the last hour: left out
    visit("door", 2, 50 * 60, "mask")  # 10 minutes into the hour: period 2
    visit("door", 3, 100, "mask")
    visit("door", 4, 90, "no_mask")
    visit("door", 5, 80, None)  # never settled: not counted
    visit("hall", 1, 100, None)
    got = board.compliance(now)
    board.close()
    assert set(got) == {"door", "hall"}
    door = got["door"]
    assert door["start"] == pytest.approx(now - 3600, abs=1e-3) and door["step_s"] == 300
    assert door["settled"] == [0, 0, 1, *[0] * 8, 2] and door["mask"] == [0, 0, 1, *[0] * 8, 1]
    assert door["share"] == [None, None, 1.0, *[None] * 8, 0.5]
    assert got["hall"]["share"] == [None] * 12


def test_the_dashboards_poll_reads_the_event_log_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[EventTarget] = []

    def counted(
        log: EventTarget, since: float | None = None, appeared_since: float | None = None
    ) -> list[Row]:
        reads.append(log)
        return log_rows(log, since, appeared_since)

    monkeypatch.setattr(board_module, "log_rows", counted)
    with TestClient(create_app(ServeSettings(events=tmp_path / "ev.db"))) as client:
        stats = client.get("/api/v1/stats").json()
    assert reads == [tmp_path / "ev.db"]
    assert list(stats) == ["cameras", "people_seen", "recent", "timeline", "compliance", "stored"]


@pytest.mark.parametrize("stored", [True, False], ids=["event-log", "memory"])
def test_the_dashboards_timeline_of_the_last_periods_is_the_end_of_the_whole_timeline(
    tmp_path: Path, stored: bool
) -> None:
    """`periods` (the dashboard asks for 60) gives the last periods of the whole timeline, and
    from a log reads only the people who appeared within them: someone who came before and is
    still in view is left out whole, not counted again where their visit was cut. The
    compliance is the last hour's events whatever the periods: someone first seen just before
    the hour who settled within it counts, as without `periods`."""
    now = time.time()
    board = Board(tmp_path / "ev.db" if stored else None)
    box = (0.0, 0.0, 9.0, 9.0)
    visits = [(1, 4000, "mask"), (2, 1000, "no_mask"), (3, 150, "mask"), (4, 3630, "no_mask")]
    for track, ago, label in visits:
        at = now - ago
        appear = Event(at, "door", track, APPEAR, track, None, 0.0, box)
        board.add("door", [appear, Event(at + 60, "door", track, SETTLE, track, label, 0.9, box)])
    board.add("door", [Event(now - 60, "door", 1, LEAVE, 1, "mask", 0.9, box)])  # a long visit
    whole = board.history("minute", now=now)
    last = board.history("minute", now=now, periods=5)
    reads: list[tuple[float | None, float | None]] = []

    def counted(
        log: EventTarget, since: float | None = None, appeared_since: float | None = None
    ) -> list[Row]:
        reads.append((since, appeared_since))
        return log_rows(log, since, appeared_since)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(board_module, "log_rows", counted)
        by_day = board.history("day", now=now, periods=1)
    by_hour = board.history("hour", now=now, periods=60)
    board.close()
    assert whole["timeline"]["total"]["people"] == 4
    assert last["timeline"]["rows"] == whole["timeline"]["rows"][-1:]
    assert last["timeline"]["total"]["people"] == 1
    assert last["compliance"] == whole["compliance"] == by_day["compliance"]
    assert by_hour["compliance"] == whole["compliance"]
    assert sum(whole["compliance"]["door"]["settled"]) == 3, "4, first seen before, settled in it"
    today = time.localtime(now).tm_yday
    assert by_day["timeline"]["total"]["people"] == sum(
        time.localtime(now - ago).tm_yday == today for _, ago, _ in visits
    )
    if stored:
        midnight = time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1))
        assert reads == [(None, midnight), (now - 3600, None)]
        tracks = [r.track for r in log_rows(tmp_path / "ev.db", appeared_since=now - 3600)]
        assert tracks == [2, 2, 3, 3]


def test_the_stats_api_refuses_a_timeline_of_no_or_too_many_periods(tmp_path: Path) -> None:
    with TestClient(create_app(ServeSettings(events=tmp_path / "ev.db"))) as client:
        for periods in (0, -1, 10**6):
            answer = client.get(f"/api/v1/stats?by=day&periods={periods}")
            assert answer.status_code == 422, periods
            assert "periods must be from 1 to 100000" in answer.text
        assert client.get("/api/v1/stats?by=day&periods=100000").status_code == 200


def test_a_damaged_event_log_shows_the_servers_own_events_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The SQLite log overwritten with junk, or replaced by a folder, while the server runs:
    the dashboard's poll falls back to this server's events, as for a database away."""
    log = tmp_path / "ev.db"
    board = Board(log)
    box = (0.0, 0.0, 9.0, 9.0)
    board.add("door", [Event(time.time(), "door", 1, APPEAR, 1, None, 0.0, box)])
    try:
        log.write_bytes(b"junk" * 1000)
        assert board.history()["timeline"]["total"]["people"] == 1
        log.unlink()
        log.mkdir()
        assert board.history()["timeline"]["total"]["people"] == 1
    finally:
        board.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, "throttled"
    assert "the dashboard shows this server's events only" in warnings[0]


def test_an_impossible_time_in_the_log_leaves_the_compliance_as_it_was(tmp_path: Path) -> None:
    """Rows no calendar can show are left out of the compliance as of the timeline, rather
    than failing every poll."""
    now = time.time()
    board = Board(tmp_path / "ev.db")
    board.camera("door")
    box = (0.0, 0.0, 9.0, 9.0)
    for track, label in ((1, "mask"), (2, "no_mask")):
        appear = Event(now - 60, "door", track, APPEAR, track, None, 0.0, box)
        board.add("door", [appear, Event(now - 55, "door", track, SETTLE, track, label, 0.9, box)])
    with closing(sqlite3.connect(tmp_path / "ev.db")) as db, db:
        db.execute("UPDATE events SET time = 9e999 WHERE track = 2")
        db.execute("UPDATE events SET time = -1e300 WHERE track = 1 AND kind = ?", (APPEAR,))
    door = board.compliance(now)["door"]
    timeline = board.timeline()
    last = board.history(now=now, periods=5)["timeline"]  # track 1's impossible appear is no
    board.close()  # earlier event: it is counted from its settle, as in the whole timeline
    assert door["settled"][-1] == 1 and door["mask"][-1] == 1
    assert timeline["total"]["people"] == 1
    assert last["total"] == timeline["total"]


def test_a_camera_met_mid_run_counts_who_settles_in_view_as_seen() -> None:
    """An MQTT camera that started before the server: a settle of a track whose appear was
    never received puts the person in view and counts them seen, once; the leave takes them
    out."""
    board = Board()
    box = (0.0, 0.0, 9.0, 9.0)
    settle = Event(time.time(), "door", 7, SETTLE, 7, "mask", 0.9, box)
    board.add("door", [settle, settle], run="mqtt")
    assert board.live()["cameras"]["door"] == {"in_view": {"mask": 1}, "people_seen": 1}
    board.add("door", [Event(time.time(), "door", 7, LEAVE, 7, "mask", 0.9, box)], run="mqtt")
    assert board.live()["cameras"]["door"] == {"in_view": {}, "people_seen": 1}
    assert board.live()["people_seen"] == 1


def test_settles_that_never_leave_keep_at_most_in_view_max_people_in_view() -> None:
    """Anyone publishing settles without leaves cannot grow the board without limit: the
    people in view the longest are dropped beyond IN_VIEW_MAX."""
    board = Board()
    box = (0.0, 0.0, 9.0, 9.0)
    now = time.time()
    settles = [Event(now, "door", t, SETTLE, t, "mask", 0.9, box) for t in range(IN_VIEW_MAX + 5)]
    board.add("door", settles, run="mqtt")
    door = board.live()["cameras"]["door"]
    assert door == {"in_view": {"mask": IN_VIEW_MAX}, "people_seen": IN_VIEW_MAX + 5}
    board.add("door", [Event(now, "door", t, LEAVE, t, "mask", 0.9, box) for t in range(5)])
    assert board.live()["cameras"]["door"]["in_view"] == {"mask": IN_VIEW_MAX}, "already gone"


def test_server_side_source_streams_annotated_mjpeg(tmp_path: Path, video: Path) -> None:
    app = create_app(ServeSettings(sources=[str(video), str(tmp_path / "missing.mp4")]))
    with TestClient(app) as client:
        cameras = wait_for(
            lambda: (c := client.get("/api/v1/cameras").json())[1]["error"] and c,
            what="the missing camera's error",
        )
        assert cameras[0]["name"] == "camera 1" and "missing.mp4" in cameras[1]["error"]
        assert [list(c) for c in cameras] == [["name", "state", "frames", "dropped", "error"]] * 2
        assert cameras[1] == {
            "name": "camera 2",
            "state": "failed",
            "frames": 0,
            "dropped": 0,
            "error": cameras[1]["error"],
        }
        health = client.get("/api/v1/health").json()["cameras"]
        assert [list(c) for c in health] == [
            ["name", "state", "error", "frames", "last_frame", "fps"]
        ] * 2
        assert {k: health[1][k] for k in ("name", "state", "error", "frames")} == {
            k: cameras[1][k] for k in ("name", "state", "error", "frames")
        }
        board = client.get("/api/v1/stats").json()["cameras"]
        assert list(board) == ["camera 1", "camera 2"]
        assert board["camera 2"]["error"] == cameras[1]["error"]
        assert "error" not in board["camera 1"]
        body = b""
        with client.stream("GET", "/api/v1/cameras/1/mjpeg") as stream:
            assert stream.headers["content-type"].startswith("multipart/x-mixed-replace")
            for chunk in stream.iter_bytes():
                body += chunk
                if body.count(b"--frame") >= 3:
                    break
        start = body.index(b"\xff\xd8")
        frame = cv2.imdecode(np.frombuffer(body[start : body.index(b"\xff\xd9") + 2], np.uint8), 1)
        assert frame.shape == (480, 640, 3)
        assert client.get("/api/v1/cameras/9/mjpeg").status_code == 404
        failed = client.get("/api/v1/cameras/2/mjpeg")  # no empty 200 for a failed camera
        assert failed.status_code == 503
        assert failed.json() == {"error": f"camera 2 failed: {cameras[1]['error']}"}


def test_serve_refuses_an_open_bind_without_a_token() -> None:
    assert_one_line_error(run_cli("serve", "--host", "0.0.0.0"), "--token", "--no-auth")
    assert_one_line_error(run_cli("serve", "--mqtt", "http://x/y"), "mqtt://")


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_the_page_draws_labelled_boxes_over_a_real_browser_camera(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    video = write_y4m(tmp_path / "camera.y4m", moving_frames(three_faces, 60))
    shot = tmp_path / "page.png"
    with serving() as base:
        out = run_browser("page.mjs", base, "t0k", str(video), str(shot))
    page = out["page"]
    assert page["frames"] >= 15 and page["fps"] > 0 and page["rtt"] > 0
    assert {f["label"] for f in page["faces"]} & {"mask", "no_mask"}
    assert page["overlay"]["drawn"] > 500, "boxes and captions drawn over the video"
    assert out["dashboard"]["people"] >= 1 and out["dashboard"]["events"] >= 1
    assert cv2.imread(str(shot)) is not None


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_the_dashboard_lists_cameras_naturally_with_errors_and_drops_ended_sessions(
    tmp_path: Path,
) -> None:
    missing = [str(tmp_path / f"gone-{i}.mp4") for i in range(1, 11)]
    sources = [arg for path in missing for arg in ("--source", path)]
    with serving(*sources) as base:
        out = run_browser("dashboard.mjs", base, "t0k", timeout=120)
    cameras = [f"camera {i}" for i in range(1, 11)]
    start = out["start"]
    assert [row[0]["text"] for row in start["rows"]] == cameras
    assert start["choices"] == ["", *cameras]
    for row, path in zip(start["rows"], missing, strict=True):
        assert row[1]["text"] == "0"
        assert row[2]["error"] and path in row[2]["text"]
    session = out["reply"]["camera"]
    assert [row[0]["text"] for row in out["during"]["rows"]] == [session, *cameras]
    assert out["during"]["choices"] == ["", session, *cameras]
    assert out["after"]["rows"] == start["rows"] and out["after"]["choices"] == start["choices"]


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_the_page_and_dashboard_fit_a_desktop_and_a_phone(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    """Screenshots (kept in the test's folder) at 1280x800 and 390x844, and what they must
    show: nothing wider than the window, labels inside the picture, Stop releasing the camera
    and Start working again, the favicon, the legends, a failed camera's error, sparklines."""
    video = write_y4m(tmp_path / "camera.y4m", right_edge_frames(three_faces, 60))
    missing = tmp_path / "gone.mp4"
    with serving("--source", str(missing), "--events", str(tmp_path / "ev.db")) as base:
        out = run_browser("look.mjs", base, "t0k", str(video), str(tmp_path), timeout=400)
    pushed = 0
    for size in ("desktop", "phone"):
        seen = out[size]
        for name in (f"page-{size}.png", f"dashboard-{size}.png"):
            assert cv2.imread(str(tmp_path / name)) is not None, name
        assert seen["overflow"] == 0 and seen["dashboard"]["overflow"] == 0, size
        assert seen["dashboard"]["tableOverflow"] == 0, size
        labels = seen["labels"]
        assert labels["labels"] > 0 and labels["outside"] <= 0.5, (size, labels)
        assert labels["settled"] > 0 and labels["overlayMatchesVideo"]
        assert labels["videoBottom"] <= labels["window"]["height"], "the video fits the window"
        pushed += labels["pushed"]
        assert seen["favicon"] == {"status": 200, "type": "image/x-icon", "link": 200}
        assert seen["missing"] == [], "no 404 on the page or the dashboard"
        assert seen["legend"] == ["mask", "no_mask", "incorrect", "uncertain"]
        stop = seen["stop"]
        assert stop["start"] and not stop["stop"] and stop["released"] and stop["video"]
        assert stop["framesAfter"] == 0 and stop["labels"] == 0
        assert seen["restarted"]
        board = seen["dashboard"]
        assert board["legend"] == ["mask", "no_mask", "incorrect", "unsettled"]
        failed = next(r for r in board["rows"] if r["name"] == "camera 1")
        assert failed["error"] and str(missing) in failed["error"]
        sessions = [r for r in board["rows"] if r["name"].startswith("browser")]
        assert any(r["points"] >= 1 and r["last"].endswith("%") for r in sessions)
        assert all(r["sparkline"] for r in sessions)
        assert board["chips"] > 4 and board["wrappedChips"] == [], size
    assert pushed > 0, "some labels had to be moved to stay inside the picture"


def test_api_docs_are_public_and_served_from_the_package(client: TestClient) -> None:
    """/docs and /redoc describe the API, as /openapi.json does, so they need no token; their
    scripts come from the server (fastapi-offline's copies), never a CDN; the operations they
    try still need the token."""
    anonymous = httpx.Client(transport=client._transport, base_url=str(client.base_url))
    for page in ("/docs", "/redoc"):
        html = anonymous.get(page)
        assert html.status_code == 200
        assert "http://" not in html.text and "https://" not in html.text, page
    assets = ["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"]
    for name in assets:
        assert anonymous.get(f"/static/docs/{name}").status_code == 200, name
    assert anonymous.get("/static/docs/..%2F..%2Fapp.py").status_code == 404
    assert anonymous.get("/api/v1/stats").status_code == 401


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_api_docs_render_in_chromium_without_internet() -> None:
    with serving() as base:
        out = run_browser("docs.mjs", base, timeout=120)
    assert out["elsewhere"] == [], "requests that tried to leave the server"
    assert {"POST /api/v1/detect", "GET /api/v1/stats", "GET /api/v1/health"} <= set(out["swagger"])
    assert "maskwatch" in out["swaggerTitle"]
    assert len(out["redoc"]) == len(out["swagger"]) and out["redocPaths"]


@contextmanager
def serving(*args: str) -> Iterator[str]:
    """`maskwatch serve --token t0k ARGS` on a free loopback port until the block ends; its
    base URL once it answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port), "--token", "t0k",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), timeout=60, what="the server")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=20)


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/api/v1/health", timeout=1, verify=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_over_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    """The README's recipe for phones: openssl's self-signed certificate, --cert and --key."""
    self_signed(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port),
         "--cert", str(tmp_path / "cert.pem"), "--key", str(tmp_path / "key.pem")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _up(f"https://127.0.0.1:{port}"), timeout=60, what="HTTPS")
        trusted = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        page = httpx.get(f"https://127.0.0.1:{port}/", verify=trusted)
        assert page.status_code == 200 and "static/app.js" in page.text
    finally:
        server.terminate()
        server.wait(timeout=20)


def _event(track: int, kind: str = SETTLE, label: str | None = "no_mask") -> Event:
    return Event(time.time(), "door", track, kind, track, label, 0.9, (1.0, 2.0, 3.0, 4.0))


def test_detect_publishes_its_events_to_a_real_broker(broker: Any, video: Path) -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    subscriber = MqttSubscriber(broker.url + "/site/#", lambda t, p: got.append((t, p)))
    try:
        # The subscription must be in place before the camera publishes: a probe comes through
        # (sent again until it does: one sent before the subscription took hold is lost).
        probe = MqttPublisher(broker.url + "/site/probe")
        wait_for(lambda: probe.connected, what="the probe's connection")

        def probe_arrived() -> bool:
            if any(t == "site/probe" for t, _ in got):
                return True
            probe.publish(_event(1))
            return False

        wait_for(probe_arrived, what="the probe")
        probe.close()
        got.clear()
        proc = run_cli(
            "detect", "--source", str(video), "--no-show", "--mqtt", broker.url + "/site/door-1"
        )
        assert proc.returncode == 0, proc.stderr
        # The tracks still open leave together when the video ends: wait for all of them.
        wait_for(
            lambda: (
                0
                < [p["kind"] for _, p in got].count(LEAVE)
                == [p["kind"] for _, p in got].count(APPEAR)
            ),
            what="a leave event for each appear",
        )
    finally:
        subscriber.close()
    got = [(t, p) for t, p in got if t != "site/probe"]  # late probes
    assert {t for t, _ in got} == {"site/door-1"}
    assert {p["camera"] for _, p in got} == {"site/door-1"}
    kinds = [p["kind"] for _, p in got]
    assert kinds.count(APPEAR) == kinds.count(LEAVE) >= 3 and SETTLE in kinds


def test_a_camera_queues_a_bounded_number_of_events_while_the_broker_is_down(
    broker: Any,
) -> None:
    broker.stop()
    publisher = MqttPublisher(broker.url + "/site/door-2", queue_size=5)
    try:
        for track in range(1, 9):
            publisher.publish(_event(track))
        assert publisher.queued == 5 and publisher.dropped == 3
        got: list[dict[str, Any]] = []
        broker.start()
        subscriber = MqttSubscriber(broker.url + "/site/#", lambda t, p: got.append(p))
        try:
            # The subscriber must be in before the camera's queue is sent: wait for it.
            wait_for(lambda: subscriber._client.is_connected(), what="the subscriber")
            time.sleep(0.5)
            wait_for(lambda: len(got) == 5, timeout=60, what="the queued events")
        finally:
            subscriber.close()
        assert [p["track"] for p in got] == [4, 5, 6, 7, 8]
        assert publisher.queued == 0
    finally:
        publisher.close()


def test_serve_shows_every_camera_of_a_site_from_mqtt(broker: Any) -> None:
    app = create_app(ServeSettings(mqtt=broker.url + "/site/#"))
    with TestClient(app) as client:
        time.sleep(1.0)
        publisher = MqttPublisher(broker.url + "/site/door-3")
        try:
            wait_for(lambda: publisher._client.is_connected(), what="the camera's connection")
            publisher.publish(_event(1, APPEAR, None))
            publisher.publish(_event(1, SETTLE, "mask"))
            stats = wait_for(
                lambda: (
                    (s := client.get("/api/v1/stats").json())["cameras"].get("site/door-3") and s
                ),
                what="the remote camera on the dashboard",
            )
        finally:
            publisher.close()
    assert stats["cameras"]["site/door-3"] == {"in_view": {"mask": 1}, "people_seen": 1}
    assert stats["timeline"]["total"]["mask"] == 1
    with pytest.raises(MaskwatchError, match="without \\+ or #"):
        parse_mqtt_url("mqtt://host/site/#")


def test_health_tells_a_failed_cameras_error_only_to_a_client_with_the_token(
    tmp_path: Path,
) -> None:
    """Health needs no token; a failed camera's error names its source (a URL's host, path and
    user), so only a client with the token is told it."""
    missing = tmp_path / "private" / "door.mp4"
    with TestClient(create_app(ServeSettings(token="secret", sources=[str(missing)]))) as client:

        def failed() -> Any:
            camera = client.get("/api/v1/health").json()["cameras"][0]
            return camera["state"] == "failed" and camera

        anonymous = wait_for(failed, what="camera 1 failing")
        guessed = client.get("/api/v1/health", params={"token": "guess"}).json()["cameras"][0]
        told = client.get("/api/v1/health", headers={"Authorization": "Bearer secret"}).json()
    assert anonymous == guessed and anonymous["name"] == "camera 1" and "error" not in anonymous
    assert "private" not in json.dumps(anonymous)
    assert str(missing) in told["cameras"][0]["error"]


@pytest.mark.parametrize(
    ("name", "own"),
    [
        ("camera 1", True),
        ("Camera  1", True),
        ("camera\u200b 1", True),  # a zero-width space
        ("\uff43amera \uff11", True),  # full-width letters and digits
        ("browser 12", True),
        ("camera1", True),
        ("site/camera 1", False),
        ("camera", False),
        ("site/door-1", False),
    ],
)
def test_names_of_the_servers_own_cameras_are_recognised_as_shown(name: str, own: bool) -> None:
    assert is_own_name(name) is own


def test_an_mqtt_camera_cannot_pose_as_a_server_camera_or_a_webcam_session(
    broker: Any, tmp_path: Path
) -> None:
    """Anyone who can publish can name any camera: events named as one of the server's own
    (`camera 1`, `browser 1`) are dropped, so they never count on that camera's row."""
    import paho.mqtt.client as mqtt

    missing = tmp_path / "gone.mp4"  # camera 1: on the board from the start (failed)
    app = create_app(ServeSettings(mqtt=broker.url + "/site/#", sources=[str(missing)]))
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
    publisher.loop_start()
    with TestClient(app) as client:

        def cameras() -> dict[str, Any]:
            return dict(client.get("/api/v1/stats").json()["cameras"])

        def send(name: str) -> None:
            event = {**_event(1, APPEAR, None).to_dict(), "camera": name}
            publisher.publish("site/door", json.dumps(event), qos=1).wait_for_publish(10)

        def subscribed() -> bool:
            send("site/probe")
            return "site/probe" in cameras()

        try:
            wait_for(subscribed, what="the server's subscription")
            for poser in ("camera 1", "Camera  1", "browser 1"):
                send(poser)
            send("site/door")  # one publisher, QoS 1: it arrives after the others
            shown = wait_for(lambda: "site/door" in (c := cameras()) and c, what="site/door")
        finally:
            publisher.loop_stop()
            publisher.disconnect()
        metrics = client.get("/metrics").text
    assert set(shown) == {"camera 1", "site/probe", "site/door"}
    assert shown["camera 1"]["people_seen"] == 0
    assert "maskwatch_mqtt_invalid_messages_total 3.0\n" in metrics
