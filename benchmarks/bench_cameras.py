"""How many cameras one process keeps up with: N simulated 15 fps 640x480 streams with 3 faces
each, each watched as `serve --source` watches a camera (its own Watch and pipeline with the
default settings, the batching classifier and the detector pool that every stream shares, the
annotated JPEG buffer behind the MJPEG stream and the dashboard board), read through LiveSource
as a real camera is (its newest frame only).

A simulated camera decodes the scene's frames from JPEG in turn, each at its time (as a camera
stream must be decoded), stamping its frame number into the top-left pixel so that the result
can be timed: frame-to-result latency runs from the frame's capture to its result leaving the
last output. A stream is kept up with when >= 95% of the frames captured in the measured window
were processed and their p95 latency is <= 150 ms. N grows until that fails.

    python benchmarks/bench_cameras.py                   # about 1.5 minutes
    python benchmarks/bench_cameras.py --cameras 8 --seconds 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench_detect import face_tiles, render
from machine import describe_machine
from maskwatch.defaults import SERVE_DETECTORS
from maskwatch.draw import Annotator
from maskwatch.faces import YuNetDetector, shared_detectors
from maskwatch.sources import LiveSource
from maskwatch.types import FrameResult
from maskwatch.watch import Watch, WatchSettings
from maskwatch.web.board import Board
from maskwatch.web.cameras import BoardEvents, JpegBuffer
from maskwatch.web.inference import BatchingClassifier

FPS = 15.0
SIZE = (640, 480)
PROCESSED = 0.95
P95_MS = 150.0


class SimulatedCamera:
    """What cv2.VideoCapture gives for a camera: JPEG frames decoded in turn at FPS."""

    def __init__(self, jpegs: list[np.ndarray], offset: int, captured: list[float]) -> None:
        self.jpegs = jpegs
        self.offset = offset
        self.captured = captured  # capture time of each frame number
        self.opened = True
        self.start: float | None = None

    def isOpened(self) -> bool:
        return self.opened

    def get(self, prop: int) -> float:
        return FPS if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.opened:
            return False, None
        now = time.monotonic()
        self.start = self.start or now
        count = len(self.captured)
        time.sleep(max(0.0, self.start + count / FPS - now))
        image = cv2.imdecode(self.jpegs[(self.offset + count) % len(self.jpegs)], cv2.IMREAD_COLOR)
        image[0, 0] = (count & 255, (count >> 8) & 255, (count >> 16) & 255)
        self.captured.append(time.monotonic())
        return True, image

    def release(self) -> None:
        self.opened = False


class Timing:
    """The last frame output: when each frame's result was ready, by frame number."""

    def __init__(self) -> None:
        self.done: dict[int, float] = {}
        self.classified = self.faces = 0

    def write(self, result: FrameResult) -> None:
        b, g, r = (int(v) for v in result.frame.image[0, 0])
        self.done[b | g << 8 | r << 16] = time.monotonic()
        self.classified += int(result.faces.classified.sum())
        self.faces += len(result.faces)

    def close(self, ok: bool = True) -> None:
        pass


def trial(cameras: int, jpegs: list[np.ndarray], warmup: float, seconds: float) -> dict[str, Any]:
    """`cameras` streams for warmup + seconds; figures over the frames captured after warmup."""
    classifier = BatchingClassifier()  # what serve shares between its cameras
    board = Board(None)
    settings = WatchSettings()
    detectors = shared_detectors(settings.detector, SERVE_DETECTORS)
    streams = []
    for i in range(cameras):
        captured: list[float] = []
        camera = SimulatedCamera(jpegs, i * len(jpegs) // cameras, captured)
        source = LiveSource(f"camera {i + 1}", lambda c=camera: c)  # type: ignore[misc]
        timing = Timing()

        def run(name: str = source.name, source: LiveSource = source, timing: Timing = timing):
            with Watch(settings.pipeline(classifier, detector=detectors), name) as watch:
                watch.add(JpegBuffer(Annotator(settings.blur)))
                watch.add_events(BoardEvents(board, name))
                watch.add(timing)
                watch.on_close(source.close)
                watch.run(source.frames(), workers=1)  # as a server camera runs

        thread = threading.Thread(target=run, daemon=True)
        streams.append((source, captured, timing, thread))
    for *_, thread in streams:
        thread.start()
    time.sleep(warmup)
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    time.sleep(0.5)  # results of the last frames of the window
    for source, *_ in streams:
        source.close()
    for *_, thread in streams:
        thread.join(timeout=10)
    board.close()
    latencies, total, classified, faces = [], 0, 0, 0
    for _, captured, timing, _ in streams:
        window = [n for n, t in enumerate(captured) if start <= t < end]
        total += len(window)
        latencies += [timing.done[n] - captured[n] for n in window if n in timing.done]
        classified, faces = classified + timing.classified, faces + timing.faces
    processed = len(latencies) / max(total, 1)
    p95 = 1000 * float(np.percentile(latencies, 95)) if latencies else float("inf")
    return {
        "cameras": cameras,
        "captured": total,
        "processed": processed,
        "p50": 1000 * statistics.median(latencies) if latencies else float("inf"),
        "p95": p95,
        "classified": classified / max(faces, 1),
        "ok": processed >= PROCESSED and p95 <= P95_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cameras", type=int, action="append", help="N to try (repeatable)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per N")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    counts = args.cameras or [1, 2, 4, 6, 8, 10, 12, 14, 16]
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "scene.mp4"
        render(video, SIZE, face_tiles(3, YuNetDetector()), 150)
        capture = cv2.VideoCapture(str(video))
        jpegs = []
        while (frame := capture.read())[0]:
            jpegs.append(cv2.imencode(".jpg", frame[1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1])
        capture.release()
    print(
        f"{FPS:g} fps {SIZE[0]}x{SIZE[1]} streams, 3 faces each; kept up with: >= "
        f"{PROCESSED:.0%} of frames processed and p95 latency <= {P95_MS:g} ms "
        f"({args.seconds:g} s measured after {args.warmup:g} s)"
    )
    print(
        f"{'cameras':>7} {'frames':>7} {'processed':>9} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'faces classified':>16}  kept up"
    )
    best = 0
    for n in counts:
        r = trial(n, jpegs, args.warmup, args.seconds)
        print(
            f"{n:7d} {r['captured']:7d} {r['processed']:9.1%} {r['p50']:7.1f} {r['p95']:7.1f} "
            f"{r['classified']:16.0%}  {'yes' if r['ok'] else 'no'}",
            flush=True,
        )
        if not r["ok"]:
            break
        best = n
    print(f"largest number of cameras kept up with: {best}")


if __name__ == "__main__":
    main()
