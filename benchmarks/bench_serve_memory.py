"""Memory of `maskwatch serve` under concurrent uploads of the largest picture it accepts, and
with its most webcam sessions streaming at once.

Starts the real server (a subprocess on loopback), makes a JPEG of just under the pixel budget
(50 megapixels by default: a real photo scaled up), fires `--uploads` of it at once with httpx
and reads the server's peak resident memory (VmHWM in /proc/PID/status) before and after. Then
opens `--sessions` WebSocket sessions (the server's --max-sessions), each sending `--frames`
1280x720 frames, plus one more session, which must be refused with 1013.
Printed: the peaks, the statuses, the median and slowest latency, and the machine.

    python benchmarks/bench_serve_memory.py                 # 8 uploads of 50 MP, 8 sessions
    python benchmarks/bench_serve_memory.py --uploads 16 --sessions 0
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from machine import describe_machine
from maskwatch.defaults import MAX_IMAGE_PIXELS, SERVE_MAX_SESSIONS, SERVE_MAX_UPLOAD_MB


def photo_path() -> Path:
    """A real photo with faces: the tests' three-faces sample from ../shared."""
    shared = Path(
        os.environ.get("MASKWATCH_SHARED", Path(__file__).resolve().parents[2] / "shared")
    )
    return shared / "mirror" / "896a9f045de3f8f60941690b94f8a770.jpg"


def largest_jpeg(pixels: int) -> bytes:
    """The sample photo scaled up to just under `pixels`, as JPEG (quality 80)."""
    photo = cv2.imread(str(photo_path()))
    if photo is None:
        raise SystemExit(f"cannot read {photo_path()}; set MASKWATCH_SHARED")
    height, width = photo.shape[:2]
    scale = (pixels / (width * height)) ** 0.5
    size = (int(width * scale), int(height * scale))
    while size[0] * size[1] > pixels:
        size = (size[0] - 1, size[1])
    big = cv2.resize(photo, size, interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(base: str, server: subprocess.Popen[bytes]) -> None:
    """Until the server at `base` answers its health check (SystemExit if it never does)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.2)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def frame_jpeg() -> bytes:
    """The sample photo as a 1280x720 webcam frame."""
    photo = cv2.imread(str(photo_path()))
    return cv2.imencode(".jpg", cv2.resize(photo, (1280, 720)))[1].tobytes()


def stream(url: str, frame: bytes, frames: int) -> int:
    """Send `frames` frames over one session, one at a time; the results with faces."""
    found = 0
    with connect(url, max_size=None) as ws:
        for _ in range(frames):
            ws.send(frame)
            found += bool(json.loads(ws.recv(timeout=120)).get("faces"))
    return found


def refused_code(url: str) -> int | None:
    """The close code of a session beyond the limit (None if it was served)."""
    with connect(url) as ws:
        try:
            ws.recv(timeout=30)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


def run_uploads(base: str, pid: int, data: bytes, uploads: int, megapixels: float) -> None:
    def upload(_: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        reply = httpx.post(base + "/api/v1/detect", files={"image": ("big.jpg", data)}, timeout=600)
        return reply.status_code, time.perf_counter() - t0

    with ThreadPoolExecutor(uploads) as pool:
        results = list(pool.map(upload, range(uploads)))
    latencies = sorted(seconds for _, seconds in results)
    print(f"{uploads} concurrent uploads of a {megapixels:g} MP JPEG ({len(data) / 2**20:.1f} MB)")
    print(f"statuses: {sorted(status for status, _ in results)}")
    print(f"latency: median {statistics.median(latencies):.2f} s, slowest {latencies[-1]:.2f} s")
    print(f"server peak RSS: {peak_rss_mb(pid):.0f} MB")


def run_sessions(base: str, pid: int, sessions: int, frames: int) -> None:
    url = base.replace("http:", "ws:") + "/ws/detect"
    frame = frame_jpeg()
    before = peak_rss_mb(pid)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(sessions + 1) as pool:
        streams = [pool.submit(stream, url, frame, frames) for _ in range(sessions)]
        time.sleep(1.0)  # the sessions are open: one more is over the limit
        extra = pool.submit(refused_code, url)
        results = [s.result() for s in streams]
    seconds = time.perf_counter() - t0
    print(
        f"{sessions} WebSocket sessions x {frames} frames of 1280x720: "
        f"{sum(results)}/{sessions * frames} with faces in {seconds:.1f} s; "
        f"one more session closed with {extra.result()}"
    )
    print(f"server peak RSS: {peak_rss_mb(pid):.0f} MB (before the sessions: {before:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--megapixels", type=float, default=MAX_IMAGE_PIXELS / 1e6)
    parser.add_argument("--sessions", type=int, default=SERVE_MAX_SESSIONS)
    parser.add_argument("--frames", type=int, default=20, help="per session")
    args = parser.parse_args()

    data = largest_jpeg(int(args.megapixels * 1e6))
    upload_mb = max(SERVE_MAX_UPLOAD_MB, len(data) / 2**20 + 1)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port),
         "--max-upload-mb", f"{upload_mb:.1f}", "--max-pixels", str(args.megapixels),
         "--max-sessions", str(max(args.sessions, 1))],
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, server)
        idle = peak_rss_mb(server.pid)
        print(f"machine: {describe_machine()}")
        print(f"server idle after start: {idle:.0f} MB")
        if args.uploads:
            run_uploads(base, server.pid, data, args.uploads, args.megapixels)
        if args.sessions:
            run_sessions(base, server.pid, args.sessions, args.frames)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
