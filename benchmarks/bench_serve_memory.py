"""Memory of `maskwatch serve` under concurrent uploads of the largest picture it accepts.

Starts the real server (a subprocess on loopback), makes a JPEG of just under the pixel budget
(50 megapixels by default: a real photo scaled up), fires `--uploads` of it at once with httpx
and reads the server's peak resident memory (VmHWM in /proc/PID/status) before and after.
Printed: the peak, the statuses, the median and slowest latency, and the machine.

    python benchmarks/bench_serve_memory.py                 # 8 uploads of 50 MP
    python benchmarks/bench_serve_memory.py --uploads 16
"""

from __future__ import annotations

import argparse
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

from machine import describe_machine
from maskwatch.defaults import MAX_IMAGE_PIXELS, SERVE_MAX_UPLOAD_MB


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


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--megapixels", type=float, default=MAX_IMAGE_PIXELS / 1e6)
    args = parser.parse_args()

    data = largest_jpeg(int(args.megapixels * 1e6))
    upload_mb = max(SERVE_MAX_UPLOAD_MB, len(data) / 2**20 + 1)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port),
         "--max-upload-mb", f"{upload_mb:.1f}", "--max-pixels", str(args.megapixels)],
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        idle = peak_rss_mb(server.pid)

        def upload(_: int) -> tuple[int, float]:
            t0 = time.perf_counter()
            reply = httpx.post(
                base + "/api/v1/detect", files={"image": ("big.jpg", data)}, timeout=600
            )
            return reply.status_code, time.perf_counter() - t0

        with ThreadPoolExecutor(args.uploads) as pool:
            results = list(pool.map(upload, range(args.uploads)))
        peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    latencies = sorted(seconds for _, seconds in results)
    statuses = sorted(status for status, _ in results)
    print(f"machine: {describe_machine()}")
    print(
        f"{args.uploads} concurrent uploads of a {args.megapixels:g} MP JPEG "
        f"({len(data) / 2**20:.1f} MB)"
    )
    print(f"statuses: {statuses}")
    print(f"latency: median {statistics.median(latencies):.2f} s, slowest {latencies[-1]:.2f} s")
    print(f"server peak RSS: {peak:.0f} MB (idle after start: {idle:.0f} MB)")


if __name__ == "__main__":
    main()
