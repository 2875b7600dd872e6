"""Many streams on one `maskwatch serve`: uploads processed together up to a bound and refused
with 503 beyond it, WebSocket sessions that keep only their newest frame and say which frame
each answer is for, server cameras whose files play at their own frame rate and then end, and
streams taking turns on the shared detectors and batched classifier. The real server (a
subprocess on loopback), the real models and real photos."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from conftest import THREE_FACES, free_port, render_video, wait_for
from maskwatch.classifier import MaskClassifier
from maskwatch.defaults import SERVE_MJPEG_READERS
from maskwatch.faces import DetectorPool, crop_faces
from maskwatch.sources import FileSource, RealTime
from maskwatch.web.inference import BatchingClassifier


class Served:
    """`maskwatch serve ARGS` on a free loopback port, until closed."""

    def __init__(self, root: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/ws/detect"
        self.log = root / "server.log"
        self._log_file = open(self.log, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(self.port), *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.healthy, timeout=90, what="the server")

    def healthy(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            return httpx.get(self.base + "/api/v1/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def memory_mb(self, field: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field}")

    def cameras(self) -> list[dict[str, Any]]:
        reply: list[dict[str, Any]] = httpx.get(self.base + "/api/v1/cameras", timeout=10).json()
        return reply

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log_file.close()
        assert "Traceback" not in self.log.read_text(), self.log.read_text()


@contextlib.contextmanager
def served(root: Path, *args: str) -> Iterator[Served]:
    server = Served(root, *args)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def three_faces_photo() -> np.ndarray:
    image = cv2.imread(str(THREE_FACES))
    assert image is not None
    return image


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def test_uploads_run_together_up_to_the_bound_and_a_burst_beyond_it_gets_503(
    tmp_path: Path, three_faces_photo: np.ndarray
) -> None:
    photo = jpeg(cv2.resize(three_faces_photo, None, fx=3, fy=3))  # 1980x843: a real workload
    bound = 4

    def upload(barrier: threading.Barrier) -> httpx.Response:
        with httpx.Client(base_url=server.base, timeout=120) as client:
            client.get("/api/v1/health")  # connected before the burst
            barrier.wait()
            return client.post("/api/v1/detect", files={"image": ("door.jpg", photo)})

    def burst(clients: int) -> list[httpx.Response]:
        barrier = threading.Barrier(clients)
        with ThreadPoolExecutor(clients) as pool:
            return list(pool.map(lambda _: upload(barrier), range(clients)))

    with served(tmp_path, "--max-uploads", str(bound)) as server:
        alone = burst(1)[0].json()
        assert alone["faces"]
        together = burst(bound)
        assert [r.status_code for r in together] == [200] * bound
        assert all(r.json() == alone for r in together), "answers as when alone"
        replies = burst(4 * bound)
        statuses = [r.status_code for r in replies]
        assert set(statuses) == {200, 503}, statuses
        assert statuses.count(200) >= bound, "the first uploads to arrive are all served"
        for busy in (r for r in replies if r.status_code == 503):
            assert busy.headers["retry-after"] == "1"
            assert "busy" in busy.json()["error"]
        assert burst(1)[0].json() == alone, "the server goes on"


def answers_until(ws: ClientConnection, last: int) -> list[dict[str, Any]]:
    """Every answer until the one for frame `last`."""
    answers = []
    while True:
        answers.append(json.loads(ws.recv(timeout=120)))
        assert "error" not in answers[-1], answers[-1]
        if answers[-1]["frame"] == last:
            return answers


def test_websocket_answers_name_their_frame_and_a_flooding_client_drops_its_stale_frames(
    tmp_path: Path, three_faces_photo: np.ndarray
) -> None:
    frame = jpeg(cv2.resize(three_faces_photo, (640, 480)))
    rng = np.random.default_rng(0)
    heavy = jpeg(rng.integers(0, 256, (1080, 1920, 3), np.uint8), quality=95)  # ~1.7 MB
    with served(tmp_path) as server, connect(server.ws, max_size=None) as ws:
        ws.send(json.dumps({"frame": 100}))
        ws.send(frame)
        first = json.loads(ws.recv(timeout=60))
        assert (first["frame"], first["dropped"]) == (100, 0) and first["faces"]
        assert first["camera"].startswith("browser") and first["server_ms"] > 0
        ws.send(frame)
        assert json.loads(ws.recv(timeout=60))["frame"] == 101, "numbers count on"
        hostile = ('{"frame": -1}', '{"frame": true}', '{"frame": 1.5}', '{"frame": 1, "x": 2}',
                   '{"frame": 9007199254740992}', "[]", "[" * 100_000 + "]" * 100_000)  # fmt: skip
        for bad in hostile:
            ws.send(bad)
            assert "binary" in json.loads(ws.recv(timeout=10))["error"], bad

        for _ in range(40):  # a flood: frames 102..141 without waiting for an answer
            ws.send(frame)
        answers = answers_until(ws, 141)
        numbers = [a["frame"] for a in answers]
        assert numbers == sorted(set(numbers)) and len(numbers) < 40, numbers
        assert answers[-1]["dropped"] == 40 - len(answers), "every frame answered or dropped"

        before = server.memory_mb()
        flood = 60  # ~100 MB of frames, far more than the server may hold
        for _ in range(flood):
            ws.send(heavy)
        ws.send(frame)
        answers_until(ws, 142 + flood)
        grown = server.memory_mb("VmHWM") - before
        assert grown < 80, f"the server held the flood: {grown:.0f} MB more"


def test_real_time_plays_a_video_at_its_frame_rate_never_faster(video: Path) -> None:
    """On a simulated clock: a reader as fast as the video waits for each frame's time; one
    three times slower gets every frame, each at least a frame's time after the one before."""
    now = [0.0]

    def wait(seconds: float) -> None:
        now[0] += seconds

    fast = [(f.index, now[0]) for f in RealTime(FileSource([video], str(video)).frames(),
                                                lambda: now[0], wait)]  # fmt: skip
    assert [i for i, _ in fast] == list(range(30))
    assert [t for _, t in fast] == pytest.approx([i / 15 for i in range(30)]), "at 15 fps"

    now[0] = 0.0
    given = []
    for frame in RealTime(FileSource([video], str(video)).frames(), lambda: now[0], wait):
        given.append((frame.index, now[0]))
        now[0] += 0.2  # three frame intervals of work
    assert [i for i, _ in given] == list(range(30)), "every frame"
    gaps = np.diff([t for _, t in given])
    assert gaps.min() >= 1 / 15 - 1e-9, "never faster than the video"


def test_a_file_source_plays_and_ends_with_state_ended(tmp_path: Path, video: Path) -> None:
    with served(tmp_path, "--source", str(video)) as server:
        camera = wait_for(
            lambda: (c := server.cameras()[0])["state"] == "ended" and c,
            timeout=60,
            what="the video to end",
        )
        assert camera["error"] is None and camera["name"] == "camera 1"
        assert (camera["frames"], camera["dropped"]) == (30, 0), "every frame of a file"
        with httpx.stream("GET", server.base + "/api/v1/cameras/1/mjpeg", timeout=30) as mjpeg:
            body = b"".join(mjpeg.iter_bytes())  # ends: no frozen frame passed off as live
        assert body.count(b"--frame") <= 1


def test_streams_take_turns_a_flooding_session_starves_neither_camera_nor_session(
    tmp_path: Path, three_faces_photo: np.ndarray
) -> None:
    long_video = render_video(tmp_path / "long.mp4", three_faces_photo, frames=450)  # 30 s
    frame = jpeg(cv2.resize(three_faces_photo, (640, 480)))
    stop = threading.Event()

    def flood() -> int:
        answered = 0
        with connect(server.ws) as ws:
            while not stop.is_set():
                for _ in range(5):
                    ws.send(frame)
                with contextlib.suppress(TimeoutError):
                    while True:
                        json.loads(ws.recv(timeout=0.01))
                        answered += 1
        return answered

    with served(tmp_path, "--source", str(long_video)) as server:
        wait_for(lambda: server.cameras()[0]["frames"] > 0, timeout=60, what="the camera")
        with ThreadPoolExecutor(1) as pool:
            flooder = pool.submit(flood)
            try:
                camera_before = server.cameras()[0]["frames"]
                with connect(server.ws) as ws:
                    for number in range(10):
                        ws.send(frame)
                        answer = json.loads(ws.recv(timeout=60))
                        assert answer["frame"] == number and answer["faces"]
                camera_after = server.cameras()[0]["frames"]
            finally:
                stop.set()
            assert flooder.result() > 0
        assert camera_after > camera_before, "the camera went on while a session flooded"
        assert server.cameras()[0]["state"] == "running"


def test_the_shared_classifier_batches_frames_of_several_threads_and_answers_each(
    three_faces_photo: np.ndarray, detector: Any
) -> None:
    plain = MaskClassifier()
    meta = plain.meta
    faces = detector.detect(three_faces_photo, thorough=True)
    crops = crop_faces(three_faces_photo, faces.boxes, meta.input_size, meta.crop_margin)
    frames = [crops[i % 3 :][: 1 + i % 3] for i in range(8)]  # 1 to 3 crops each
    shared = BatchingClassifier(max_batch=64)
    barrier = threading.Barrier(len(frames))

    def ask(crops_of_frame: np.ndarray) -> np.ndarray:
        barrier.wait()
        return shared.predict(crops_of_frame)

    with ThreadPoolExecutor(len(frames) + 1) as pool:
        busy = pool.submit(shared.predict, np.concatenate([crops] * 21))  # 63 crops first
        results = list(pool.map(ask, frames))
        busy.result()
    for got, crops_of_frame in zip(results, frames, strict=True):
        np.testing.assert_allclose(got, plain.predict(crops_of_frame), atol=1e-5)
    assert shared.frames == len(frames) + 1
    assert shared.batches < shared.frames, "no batch held crops of several frames"


class GatedDetector:
    """The real YuNet, recording who asked in which order; its first call waits for `gate`, so
    that the others queue behind it."""

    def __init__(self, detector: Any, gate: threading.Event) -> None:
        self.detector = detector
        self.gate = gate
        self.order: list[str] = []

    def detect(self, image: np.ndarray, thorough: bool = False) -> Any:
        self.order.append(threading.current_thread().name)
        if len(self.order) == 1:
            self.gate.wait(timeout=60)
        return self.detector.detect(image, thorough)


def test_the_detector_pool_serves_streams_in_the_order_they_asked(
    detector: Any, three_faces_photo: np.ndarray
) -> None:
    gate = threading.Event()
    gated = GatedDetector(detector, gate)
    pool = DetectorPool(lambda: gated, size=1)
    found: dict[str, int] = {}

    def stream(name: str) -> threading.Thread:
        def run() -> None:
            found[name] = len(pool.detect(three_faces_photo))

        thread = threading.Thread(target=run, name=name)
        thread.start()
        return thread

    threads = [stream("first")]
    wait_for(lambda: gated.order, what="the first stream to hold the detector")
    for name in ("b", "c", "d", "e"):
        threads.append(stream(name))
        wait_for(lambda: pool.waiting == len(threads) - 1, what=f"{name} to queue")
    gate.set()
    for thread in threads:
        thread.join(timeout=60)
    assert gated.order == ["first", "b", "c", "d", "e"]
    assert set(found.values()) == {3}


def test_mjpeg_readers_waiting_for_frames_hold_no_thread_and_are_bounded(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    """More MJPEG readers than the server has worker threads, of a camera without new frames
    (its next one is 100 s away), then hanging up: the server keeps answering health, at most
    SERVE_MJPEG_READERS streams of the camera are open (503 with Retry-After beyond), and the
    streams of readers who left end."""
    clip = render_video(tmp_path / "slow.mp4", three_faces, 3, (160, 120), fps=0.01)
    with served(tmp_path, "--source", str(clip)) as server:
        wait_for(lambda: server.cameras()[0]["frames"] >= 1, timeout=60, what="the first frame")
        request = b"GET /api/v1/cameras/1/mjpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        readers = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(60)]
        try:
            for reader in readers:
                reader.settimeout(30)
                reader.sendall(request)
            heads = [reader.recv(4096) for reader in readers]
            assert httpx.get(server.base + "/api/v1/health", timeout=10).status_code == 200
            statuses = [head.split(b"\r\n", 1)[0] for head in heads]
            assert statuses.count(b"HTTP/1.1 200 OK") == SERVE_MJPEG_READERS
            refused = [head for head in heads if head.startswith(b"HTTP/1.1 503")]
            assert len(refused) == 60 - SERVE_MJPEG_READERS
            assert all(b"retry-after: 5" in head.lower() for head in refused)
        finally:
            for reader in readers:
                reader.close()
        assert httpx.get(server.base + "/api/v1/health", timeout=10).status_code == 200

        def admitted() -> bool:
            with httpx.stream("GET", server.base + "/api/v1/cameras/1/mjpeg", timeout=10) as r:
                return r.status_code == 200

        wait_for(admitted, timeout=30, what="the streams of readers who left to end")


def test_stopping_the_server_ends_a_cameras_mjpeg_stream_instead_of_cutting_it(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    """Ctrl-C while a browser watches a camera: its stream ends cleanly and the server stops,
    rather than waiting for the stream to finish (it never would) and then cancelling it."""
    clip = render_video(tmp_path / "long.mp4", three_faces, 1500, (320, 240))
    with served(tmp_path, "--source", str(clip)) as server:
        wait_for(lambda: server.cameras()[0]["frames"] >= 5, timeout=90, what="5 frames")
        parts: list[int] = []
        errors: list[Exception] = []

        def watch() -> None:
            url = server.base + "/api/v1/cameras/1/mjpeg"
            try:
                with httpx.stream("GET", url, timeout=30) as mjpeg:
                    for chunk in mjpeg.iter_bytes():
                        parts.append(chunk.count(b"--frame"))
            except httpx.HTTPError as exc:
                errors.append(exc)

        reader = threading.Thread(target=watch)
        reader.start()
        wait_for(lambda: sum(parts) >= 2, timeout=60, what="the stream's first frames")
        server.process.send_signal(signal.SIGINT)
        server.process.wait(timeout=30)
        reader.join(timeout=30)
        assert errors == [], "the stream was cut, not ended"
        assert "graceful shutdown exceeded" not in server.log.read_text()
