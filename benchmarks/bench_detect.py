"""Frames per second of `detect` on rendered 640x480 / 1280x720 videos with 1, 3 or 10 faces.

Prints per-stage medians (decode, detect, classify, draw) and end-to-end frames per second,
and the machine it ran on. Faces come from the demo sample photos, fetched through the cache.

    python benchmarks/bench_detect.py --size 640x480 --faces 3 --frames 200
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
from maskwatch.classifier import MaskClassifier
from maskwatch.draw import draw_faces
from maskwatch.faces import YuNetDetector
from maskwatch.pipeline import Pipeline


def face_tiles(count: int, detector: YuNetDetector) -> list[np.ndarray]:
    """`count` face regions (with context) cut from the sample photos."""
    tiles: list[np.ndarray] = []
    for name in ("sample-896a9f04", "sample-d898baff", "sample-05fe38c3", "sample-e07e9c7e"):
        image = cv2.imread(str(hub.fetch(name)))
        for box in detector.detect(image).boxes:
            x1, y1, x2, y2 = box.astype(int)
            pad = int((x2 - x1) * 0.4)
            tiles.append(image[max(0, y1 - pad) : y2 + pad, max(0, x1 - pad) : x2 + pad])
    if len(tiles) < count:
        raise SystemExit(f"only {len(tiles)} faces available in the samples")
    return tiles[:count]


def render(path: Path, size: tuple[int, int], tiles: list[np.ndarray], frames: int) -> None:
    width, height = size
    cols = int(np.ceil(np.sqrt(len(tiles) * width / height)))
    rows = int(np.ceil(len(tiles) / cols))
    cell = min(width // cols, height // rows)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, size)
    for i in range(frames):
        canvas = np.full((height, width, 3), 100, np.uint8)
        for k, tile in enumerate(tiles):
            scale = 0.8 * cell / max(tile.shape[:2])
            small = cv2.resize(tile, None, fx=scale, fy=scale)
            r, c = divmod(k, cols)
            y = r * cell + (i % 10)
            x = c * cell + (i % 20)
            h, w = small.shape[:2]
            canvas[y : y + min(h, height - y), x : x + min(w, width - x)] = small[
                : min(h, height - y), : min(w, width - x)
            ]
        writer.write(canvas)
    writer.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--faces", type=int, default=3)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument(
        "--detect-min-side", type=int, default=None, help="override the detector's upscaling target"
    )
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    detector = (
        YuNetDetector()
        if args.detect_min_side is None
        else YuNetDetector(min_side=args.detect_min_side)
    )
    pipeline = Pipeline(detector, MaskClassifier())
    stages: dict[str, list[float]] = {
        "decode": [],
        "detect": [],
        "classify": [],
        "draw": [],
        "total": [],
    }
    found: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "bench.mp4"
        render(video, (size[0], size[1]), face_tiles(args.faces, detector), args.frames)
        capture = cv2.VideoCapture(str(video))
        while True:
            t0 = time.perf_counter()
            ok, image = capture.read()
            if not ok:
                break
            t1 = time.perf_counter()
            faces = detector.detect(image)
            t2 = time.perf_counter()
            faces = pipeline.classify_faces(image, faces)
            t3 = time.perf_counter()
            draw_faces(image, faces)
            t4 = time.perf_counter()
            for name, value in zip(
                stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True
            ):
                stages[name].append(value)
            found.append(len(faces))
        capture.release()
    warm = {k: v[10:] for k, v in stages.items()}
    print(f"machine: {describe_machine()}")
    print(
        f"video: {args.size}, {args.faces} faces placed, {len(found)} frames, "
        f"median faces found {statistics.median(found):.0f}"
    )
    for name, values in warm.items():
        print(f"  {name:<9} median {1000 * statistics.median(values):7.2f} ms")
    print(f"end to end: {1 / statistics.median(warm['total']):.1f} frames per second (median)")


if __name__ == "__main__":
    main()
