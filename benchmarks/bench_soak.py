"""Soak test: `detect` on a long live MJPEG stream with an outage in the middle.

A local HTTP server streams 640x480 MJPEG at 15 frames per second, rendered from real faces
(the demo sample photos) that drift across the frame. Halfway through, the server goes away
for `--outage` seconds (connections closed and refused), then comes back. The detect loop
reads it as any network camera (capture thread, newest frame only, reconnect with backoff)
and writes events to an SQLite log. Printed: resident memory over time, frames served,
processed and dropped, reconnects, events, and the machine.

    python benchmarks/bench_soak.py                   # 10 minutes, 10 s outage
    python benchmarks/bench_soak.py --seconds 30 --outage 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from machine import describe_machine
from maskwatch import hub
from maskwatch.classifier import MaskClassifier
from maskwatch.detect import EventOutputs, run_detect
from maskwatch.faces import YuNetDetector
from maskwatch.pipeline import Pipeline
from maskwatch.sources import open_source
from maskwatch.tracking import IoUTracker

FPS = 15.0
SIZE = (640, 480)


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Scene:
    """JPEG frames of sample faces drifting to the right and wrapping round."""

    def __init__(self) -> None:
        photo = cv2.imread(str(hub.fetch("sample-896a9f04")))
        scale = 0.8 * SIZE[0] / photo.shape[1]
        self.photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        self.index = 0

    def next_jpeg(self) -> bytes:
        width, height = SIZE
        canvas = np.full((height, width, 3), 90, np.uint8)
        h, w = self.photo.shape[:2]
        x = (self.index * 2) % (width - w + 1)
        y = (height - h) // 2
        canvas[y : y + h, x : x + w] = self.photo
        self.index += 1
        return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


class MjpegServer:
    """multipart/x-mixed-replace MJPEG over HTTP on 127.0.0.1; `outage()` takes it down."""

    def __init__(self) -> None:
        self.scene = Scene()
        self.served = 0
        self.up = threading.Event()
        self.up.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not server.up.is_set():
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while server.up.is_set():
                        data = server.scene.next_jpeg()
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(data)}\r\n\r\n".encode()
                            + data
                            + b"\r\n"
                        )
                        server.served += 1
                        time.sleep(1 / FPS)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.handler = Handler
        self.port = 0
        self.start()

    def start(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.up.set()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def outage(self, seconds: float) -> None:
        """Close the stream and refuse connections for `seconds`."""
        self.stop()
        time.sleep(seconds)
        self.start()

    def stop(self) -> None:
        self.up.clear()
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="stream length")
    parser.add_argument("--outage", type=float, default=10.0, help="outage length, in the middle")
    parser.add_argument("--sample-every", type=float, default=None, help="memory sample period")
    args = parser.parse_args()
    every = args.sample_every or max(1.0, args.seconds / 20)

    pipeline = Pipeline(YuNetDetector(), MaskClassifier(), IoUTracker())
    server = MjpegServer()
    source = open_source(server.url)
    samples: list[tuple[float, float, int]] = []
    started = time.monotonic()
    done = threading.Event()

    def sampler() -> None:
        while not done.wait(every):
            samples.append((time.monotonic() - started, rss_mb(), source.read))

    def script() -> None:
        time.sleep(args.seconds / 2)
        server.outage(args.outage)
        time.sleep(max(0.0, args.seconds / 2 - args.outage))
        source.close()

    samples.append((0.0, rss_mb(), 0))
    threading.Thread(target=sampler, daemon=True).start()
    threading.Thread(target=script, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_detect(
            source, pipeline, show=False, events=EventOutputs(log=Path(tmp) / "events.db")
        )
    done.set()
    elapsed = time.monotonic() - started
    server.stop()
    samples.append((elapsed, rss_mb(), source.read))

    print(f"machine: {describe_machine()}")
    print(
        f"stream: {SIZE[0]}x{SIZE[1]} MJPEG at {FPS:.0f} fps over HTTP for {elapsed:.0f} s, "
        f"outage of {args.outage:.0f} s at {args.seconds / 2:.0f} s"
    )
    print("    time  RSS MB  frames processed")
    for at, mb, frames in samples:
        print(f"  {at:6.0f}  {mb:6.1f}  {frames:>8}")
    steady = [mb for at, mb, _ in samples if at >= min(60.0, elapsed / 4)]
    growth = max(steady) - min(steady) if steady else 0.0
    print(f"memory after warm-up: {min(steady):.1f} to {max(steady):.1f} MB (range {growth:.1f})")
    print(
        f"frames: served {server.served}, processed {source.read}, "
        f"dropped (replaced by a newer one before processing) {source.dropped}"
    )
    print(f"reconnects: {source.reconnects}")
    print(f"run: {summary.describe()}")


if __name__ == "__main__":
    main()
