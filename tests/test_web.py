"""`maskwatch serve` and MQTT: the API on real photos, the page in a real browser (Debian's
chromium through playwright-core, its fake camera fed a y4m video of real faces), and a real
Mosquitto broker on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import THREE_FACES, panning_frames
from maskwatch.events import Event
from maskwatch.mqtt import MqttPublisher, MqttSubscriber, parse_mqtt_url
from maskwatch.types import APPEAR, LEAVE, SETTLE
from maskwatch.web.app import ServeSettings, create_app
from test_cli import assert_one_line_error, run_cli

BROWSER_TESTS = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def moving_frames(photo: np.ndarray, count: int) -> list[np.ndarray]:
    return panning_frames(photo, count, period=20)


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
    stranger = TestClient(client.app)
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        stranger.websocket_connect("/ws/detect") as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 1008 and "needs a token" in refused.value.reason


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
    last = replies[-1]
    assert last["camera"].startswith("browser") and last["server_ms"] > 0
    assert sum(f["track"] is not None for f in last["faces"]) >= 3  # new faces: null for now
    stats = wait_for(
        lambda: (s := client.get("/api/v1/stats").json())["timeline"]["total"]["people"] and s,
        what="the browser camera's people in the log",
    )
    camera = stats["cameras"][last["camera"]]
    assert camera["people_seen"] >= 3 and camera["in_view"] == {}  # they left with the session
    kinds = {e["kind"] for e in stats["recent"]}
    assert {APPEAR, SETTLE, LEAVE} <= kinds
    assert stats["stored"] is True
    mine = client.get("/api/v1/stats", params={"camera": last["camera"], "by": "hour"}).json()
    assert mine["timeline"]["total"]["people"] == stats["timeline"]["total"]["people"]
    other = client.get("/api/v1/stats", params={"camera": "door 9"}).json()
    assert other["timeline"]["total"]["people"] == 0
    assert client.get("/api/v1/stats", params={"by": "week"}).status_code == 422


def test_server_side_source_streams_annotated_mjpeg(tmp_path: Path, video: Path) -> None:
    app = create_app(ServeSettings(sources=[str(video), str(tmp_path / "missing.mp4")]))
    with TestClient(app) as client:
        cameras = wait_for(
            lambda: (c := client.get("/api/v1/cameras").json())[1]["error"] and c,
            what="the missing camera's error",
        )
        assert cameras[0]["name"] == "camera 1" and "missing.mp4" in cameras[1]["error"]
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


def test_serve_refuses_an_open_bind_without_a_token() -> None:
    assert_one_line_error(run_cli("serve", "--host", "0.0.0.0"), "--token", "--no-auth")
    assert_one_line_error(run_cli("serve", "--mqtt", "http://x/y"), "mqtt://")


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_the_page_draws_labelled_boxes_over_a_real_browser_camera(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    video = write_y4m(tmp_path / "camera.y4m", moving_frames(three_faces, 60))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port), "--token", "t0k"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), timeout=60, what="the server")
        shot = tmp_path / "page.png"
        proc = subprocess.run(
            ["node", str(BROWSER_TESTS / "page.mjs"), base, "t0k", str(video), str(shot)],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=BROWSER_TESTS,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=20)
    page = out["page"]
    assert page["frames"] >= 15 and page["fps"] > 0 and page["rtt"] > 0
    assert {f["label"] for f in page["faces"]} & {"mask", "no_mask"}
    assert page["overlay"]["drawn"] > 500, "boxes and captions drawn over the video"
    assert out["dashboard"]["people"] >= 1 and out["dashboard"]["events"] >= 1
    assert cv2.imread(str(shot)) is not None


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/api/v1/health", timeout=1, verify=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_serve_over_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    """The README's recipe for phones: openssl's self-signed certificate, --cert and --key."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
         "-subj", "/CN=maskwatch", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
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


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Any]:
    """A real Mosquitto on a free loopback port; `restart()` brings it back after `stop()`."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("needs mosquitto")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")

    class Broker:
        url = f"mqtt://127.0.0.1:{port}"
        process: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.process = subprocess.Popen(
                [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_for(lambda: _listening(port), what="mosquitto")

        def stop(self) -> None:
            if self.process is not None:
                self.process.terminate()
                self.process.wait(timeout=10)
                self.process = None

    b = Broker()
    b.start()
    yield b
    b.stop()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _event(track: int, kind: str = SETTLE, label: str | None = "no_mask") -> Event:
    return Event(time.time(), "door", track, kind, track, label, 0.9, (1.0, 2.0, 3.0, 4.0))


def test_detect_publishes_its_events_to_a_real_broker(broker: Any, video: Path) -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    subscriber = MqttSubscriber(broker.url + "/site/#", lambda t, p: got.append((t, p)))
    try:
        time.sleep(0.5)
        proc = run_cli(
            "detect", "--source", str(video), "--no-show", "--mqtt", broker.url + "/site/door-1"
        )
        assert proc.returncode == 0, proc.stderr
        # The tracks still open leave together when the video ends: wait for all of them.
        wait_for(
            lambda: 0 < [p["kind"] for _, p in got].count(LEAVE)
            == [p["kind"] for _, p in got].count(APPEAR),
            what="a leave event for each appear",
        )
    finally:
        subscriber.close()
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
    with pytest.raises(Exception, match="mqtt://"):
        parse_mqtt_url("mqtt://host/site/#")
