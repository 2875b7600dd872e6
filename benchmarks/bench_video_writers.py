"""Milliseconds per frame and bytes per frame of the video writers behind `detect --save`:
H.264 through PyAV and OpenCV's mp4v (.mp4) and MJPG (.avi), on frames of a real photo
panning slowly with sensor noise (as a saved video of a camera looks).

    python benchmarks/bench_video_writers.py                  # 640x480 and 1280x720, 150 frames
    python benchmarks/bench_video_writers.py --size 640x480 --frames 300 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from machine import describe_machine
from maskwatch import hub
from maskwatch.encoders import H264Encoder, OpenCVEncoder, pyav_with_x264

PHOTO = "sample-896a9f04"  # the demo's photo of three faces


def frames(photo: np.ndarray, size: tuple[int, int], count: int) -> list[np.ndarray]:
    """`photo` panning 2 px a frame, with a camera's sensor noise (which costs bits)."""
    base = cv2.resize(photo, size).astype(np.int16)
    noise = np.random.default_rng(0)
    return [
        np.clip(np.roll(base, 2 * i, axis=1) + noise.normal(0, 3, base.shape), 0, 255).astype(
            np.uint8
        )
        for i in range(count)
    ]


def measure(kind: str, images: list[np.ndarray], folder: Path) -> tuple[float, float]:
    """(ms per frame, bytes per frame) of one run, the close (flush) included."""
    size = (images[0].shape[1], images[0].shape[0])
    suffix = ".avi" if kind == "MJPG" else ".mp4"
    path = folder / f"bench{suffix}"
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    if kind == "H.264":
        av = pyav_with_x264()
        assert av is not None, "needs PyAV with libx264"
        encoder: H264Encoder | OpenCVEncoder = H264Encoder(av, path, suffix, 15.0, size)
    else:
        encoder = OpenCVEncoder(path, suffix, 15.0, size)
    for image in images:
        encoder.write(image)
    encoder.close()
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / len(images), path.stat().st_size / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", help="WxH (repeatable)")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.size or ["640x480", "1280x720"]]
    photo = cv2.imread(str(hub.fetch(PHOTO)))
    print(describe_machine())
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in sizes:
            images = frames(photo, (width, height), args.frames)
            for kind in ("H.264", "mp4v", "MJPG"):
                runs = [measure(kind, images, Path(tmp)) for _ in range(args.runs)]
                ms = statistics.median(r[0] for r in runs)
                kb = statistics.median(r[1] for r in runs) / 1024
                print(f"{width}x{height} {kind:6} {ms:7.2f} ms/frame {kb:8.1f} KB/frame")


if __name__ == "__main__":
    main()
