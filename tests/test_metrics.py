"""Metrics for operators: a real `serve` with a server camera playing a video rendered from the
shared photos, and a real `detect --metrics-port` reading a live MJPEG stream (the soak
benchmark's server) through an outage; both scraped over HTTP and parsed with prometheus_client's
own text parser. `/api/v1/health` tells each camera's state."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import assert_one_line_error, free_port, run_cli, wait_for
from maskwatch.web.app import ServeSettings, create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_soak import MjpegServer

LABELS = {"mask", "no_mask", "incorrect", "uncertain"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, token: str | None = None) -> Samples:
    """Every sample of a /metrics answer, by name and labels."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = httpx.get(url, headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return parse(reply.text)


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def labels_of(samples: Samples, name: str, key: str) -> set[str]:
    return {dict(labels)[key] for (n, labels) in samples if n == name}


def _try(check: Any) -> Any:
    try:
        return check()
    except (httpx.HTTPError, AssertionError):
        return None


@pytest.fixture()
def serving(tmp_path: Path, video: Path) -> Iterator[str]:
    """A real `serve` on loopback with a token, playing `video` (camera 1) and a missing file
    (camera 2), with an alert command that always fails."""
    port = free_port()
    missing = tmp_path / "gone.mp4"
    server = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port), "--token", "t0k",
         "--source", str(video), "--source", str(missing),
         "--alert-cmd", "false", "--alert-global-interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _try(lambda: httpx.get(base + "/api/v1/health")), 60, "the server")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_serve_counts_a_server_cameras_frames_faces_and_requests(serving: str, video: Path) -> None:
    base = serving
    assert httpx.get(base + "/metrics").status_code == 401  # the token, as for every API path

    def ended() -> Any:
        health = httpx.get(base + "/api/v1/health", headers={"Authorization": "Bearer t0k"})
        cameras = health.json()["cameras"]
        return cameras[0]["state"] == "ended" and cameras

    cameras = wait_for(ended, 90, "camera 1 to play its video to the end")
    played, failed = cameras
    assert played["name"] == "camera 1" and played["frames"] == 30 and played["error"] is None
    assert played["last_frame"].endswith("+00:00") and played["fps"] == 0  # it has ended
    assert failed["state"] == "failed" and "gone.mp4" in failed["error"]
    assert failed["last_frame"] is None

    first = scrape(base + "/metrics", "t0k")
    assert value(first, "maskwatch_frames_total", camera="camera 1") == 30  # none dropped
    assert value(first, "maskwatch_frames_total", camera="camera 2") == 0
    faces = labels_of(first, "maskwatch_faces_total", "label")
    assert faces <= LABELS and faces & {"mask", "no_mask"}
    face_count = sum(v for (n, labels), v in first.items() if n == "maskwatch_faces_total")
    assert face_count >= 3 * 25  # three faces in (nearly) every frame
    appeared = value(first, "maskwatch_events_total", camera="camera 1", kind="appear")
    assert appeared >= 3
    assert value(first, "maskwatch_events_total", camera="camera 1", kind="leave") == appeared
    settled = labels_of(first, "maskwatch_labels_settled_total", "label")
    assert settled and settled <= LABELS
    for label in ("mask", "no_mask", "incorrect", "unsettled"):  # everyone has left
        assert value(first, "maskwatch_people_in_view", camera="camera 1", label=label) == 0
    assert value(first, "maskwatch_reconnects_total", camera="camera 1") == 0
    failed = wait_for(
        lambda: value(scrape(base + "/metrics", "t0k"), "maskwatch_alerts_total",
                      camera="camera 1", result="failed"),
        30, "the failed alerts",
    )  # fmt: skip
    assert failed >= 1  # (no_mask settled at least once; `false` fails every alert)
    assert value(first, "maskwatch_alerts_total", camera="camera 1", result="sent") == 0

    # Request latency by route template: an unknown camera's raw path is never a label.
    assert httpx.get(base + "/api/v1/cameras/12345/mjpeg?token=t0k").status_code == 404
    health = {"route": "/api/v1/health", "method": "GET", "status": "200"}
    before = value(first, "maskwatch_http_request_duration_seconds_count", **health)
    httpx.get(base + "/api/v1/health")
    second = scrape(base + "/metrics", "t0k")
    assert value(second, "maskwatch_http_request_duration_seconds_count", **health) == before + 1
    mjpeg = {"route": "/api/v1/cameras/{index}/mjpeg", "method": "GET", "status": "404"}
    assert value(second, "maskwatch_http_request_duration_seconds_count", **mjpeg) == 1
    unauthorised = {"route": "/metrics", "method": "GET", "status": "401"}
    assert value(second, "maskwatch_http_request_duration_seconds_count", **unauthorised) == 1
    routes = labels_of(second, "maskwatch_http_request_duration_seconds_count", "route")
    assert not any("12345" in route for route in routes)
    assert value(second, "maskwatch_frames_total", camera="camera 1") == 30


def test_browser_sessions_are_counted_together(tmp_path: Path, video: Path) -> None:
    capture = cv2.VideoCapture(str(video))
    jpegs = [cv2.imencode(".jpg", capture.read()[1])[1].tobytes() for _ in range(4)]
    capture.release()
    with TestClient(create_app(ServeSettings())) as client:
        for _ in range(2):  # two sessions, one after the other
            with client.websocket_connect("/ws/detect") as socket_:
                for data in jpegs:
                    socket_.send_bytes(data)
                    assert socket_.receive_json()["faces"]
        samples = parse(client.get("/metrics").text)
    assert value(samples, "maskwatch_frames_total", camera="browser") == 8
    assert labels_of(samples, "maskwatch_faces_total", "camera") == {"browser"}


@pytest.mark.slow
def test_health_follows_a_server_camera_through_an_outage() -> None:
    stream = MjpegServer()
    try:
        with TestClient(create_app(ServeSettings(sources=[stream.url]))) as client:

            def state() -> str:
                camera = client.get("/api/v1/health").json()["cameras"][0]
                return str(camera["state"])

            wait_for(lambda: state() == "running" and value(
                parse(client.get("/metrics").text), "maskwatch_frames_total", camera="camera 1"
            ), 60, "frames from the stream")  # fmt: skip
            stream.stop()
            wait_for(lambda: state() == "reconnecting", 30, "the camera reconnecting")
            stream.start()
            wait_for(lambda: state() == "running", 60, "the camera back")
            camera = client.get("/api/v1/health").json()["cameras"][0]
            assert camera["error"] is None and camera["last_frame"] is not None
            samples = parse(client.get("/metrics").text)
            assert value(samples, "maskwatch_reconnects_total", camera="camera 1") == 1
    finally:
        stream.stop()


@pytest.mark.slow
def test_a_stopping_server_says_so_on_mjpeg_and_a_camera_failed_after_frames_answers_503(
    video: Path,
) -> None:
    """No stale last frame passed off as a stream: a camera that failed once it had frames, and
    any camera while the server stops, answer 503 with the reason."""
    stream = MjpegServer()
    try:
        app = create_app(ServeSettings(sources=[str(video), stream.url]))
        with TestClient(app) as client:

            def camera(index: int) -> dict[str, Any]:
                return dict(client.get("/api/v1/cameras").json()[index])

            wait_for(lambda: camera(1)["frames"] >= 2, 60, "frames from the stream")
            stream.stop()
            wait_for(lambda: camera(1)["state"] == "failed", 60, "the stream to fail")
            failed = client.get("/api/v1/cameras/2/mjpeg")
            assert failed.status_code == 503
            assert failed.json() == {"error": f"camera 2 failed: {camera(1)['error']}"}
            app.state.service.stopping()  # as at Ctrl-C
            stopping = client.get("/api/v1/cameras/1/mjpeg")
            assert stopping.status_code == 503
            assert stopping.json() == {"error": "the server is stopping"}
    finally:
        stream.stop()


@pytest.mark.slow
def test_detect_serves_metrics_of_a_live_stream_through_an_outage(tmp_path: Path) -> None:
    stream = MjpegServer()
    port = free_port()
    detect = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "detect", "--source", stream.url, "--no-show",
         "--metrics-port", str(port), "--token", "t0k"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    camera = {"camera": stream.url}
    try:
        wait_for(lambda: _try(lambda: httpx.get(url)), 60, "the metrics port")
        assert httpx.get(url).status_code == 401
        assert httpx.get(url + "?token=t0k").status_code == 200

        def frames() -> float:
            return value(scrape(url, "t0k"), "maskwatch_frames_total", **camera)

        early = wait_for(frames, 60, "frames counted")
        later = wait_for(lambda: (n := frames()) > early and n, 30, "more frames")
        assert later > early
        stream.outage(2.0)

        def reconnected() -> Samples | None:
            s = scrape(url, "t0k")
            back = value(s, "maskwatch_reconnects_total", **camera) >= 1
            return s if back and value(s, "maskwatch_frames_total", **camera) > later else None

        samples = wait_for(reconnected, 60, "a reconnect and frames after it")
        assert value(samples, "maskwatch_camera_fps", **camera) > 0
        assert ("maskwatch_dropped_frames_total", frozenset(camera.items())) in samples
        assert labels_of(samples, "maskwatch_faces_total", "label") <= LABELS
        assert value(samples, "maskwatch_events_total", kind="appear", **camera) >= 1
    finally:
        detect.send_signal(signal.SIGINT)  # Ctrl-C: outputs finished, the port closed
        _, err = detect.communicate(timeout=30)
        stream.stop()
    assert detect.returncode == 0, err
    assert "Traceback" not in err
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--metrics-port", "0"], "from 1 to 65535"),
        (["--metrics-port", "70000"], "from 1 to 65535"),
        (["--metrics-port", "http"], "not a whole number"),
        (["--metrics-port", ""], "not a whole number"),
        (["--metrics-host", "127.0.0.1"], "--metrics-host needs --metrics-port"),
        (["--metrics-port", "9100", "--metrics-host", "0.0.0.0"], "--no-auth"),
        (["--metrics-port", "9100", "--metrics-host", "no.such.host.invalid", "--no-auth"],
         "cannot listen on no.such.host.invalid:9100"),
    ],
)  # fmt: skip
def test_bad_metrics_options_are_one_line_errors(args: list[str], needle: str, video: Path) -> None:
    proc = run_cli("detect", "--source", str(video), "--no-show", "--json", "-", *args)
    assert_one_line_error(proc, needle)


def test_a_metrics_port_in_use_is_one_line_before_any_frame(video: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(
            "detect", "--source", str(video), "--no-show", "--json", "-",
            "--metrics-port", str(port),
        )  # fmt: skip
    assert_one_line_error(proc, f"--metrics-port {port}", "in use")
    assert proc.stdout == ""  # refused before any frame was read


def test_health_the_camera_list_and_the_dashboard_show_no_password_of_a_camera_url() -> None:
    """A failed camera's error names its URL: never with the password, with a token (the page's
    captions, the dashboard) or without (health)."""
    port = free_port()
    sources = [
        f"http://admin:p@ss-w0rd@127.0.0.1:{port}/a",
        f"http://127.0.0.1:{port}/b?pwd=qwerty9",
    ]
    with TestClient(create_app(ServeSettings(sources=sources))) as client:

        def errors() -> list[str]:
            return [c["error"] or "" for c in client.get("/api/v1/health").json()["cameras"]]

        wait_for(lambda: all(errors()), 60, "both cameras failing")
        shown = [client.get(f"/api/v1/{call}").text for call in ("health", "cameras", "stats")]
    assert all("ss-w0rd" not in text and "qwerty9" not in text for text in shown), shown
    shown = "".join(shown)
    assert "ss-w0rd" not in shown and "qwerty9" not in shown
    assert "http://admin:***@127.0.0.1" in shown and "pwd=***" in shown


def test_detect_prints_an_ipv6_metrics_address_a_browser_opens(video: Path) -> None:
    port = free_port()
    proc = run_cli("detect", "--source", str(video), "--no-show",
                   "--metrics-port", str(port), "--metrics-host", "::1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"metrics at http://[::1]:{port}/metrics" in proc.stderr


def test_a_camera_url_password_is_never_printed() -> None:
    proc = run_cli("detect", "--source", "http://admin:hunter2@127.0.0.1:1/cam?pwd=qwerty9&x=1",
                   "--no-show", "--json", "-")  # fmt: skip
    assert_one_line_error(proc, "cannot open http://admin:***@127.0.0.1:1/cam?pwd=***&x=1")
    assert "hunter2" not in proc.stderr and "qwerty9" not in proc.stderr
