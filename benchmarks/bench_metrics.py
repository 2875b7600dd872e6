"""What metrics cost: the counting outputs per frame, on the results and events of a real watch
over a rendered video of real faces (with the pipeline's own time per frame for scale), and one
/metrics answer with many cameras.

    python benchmarks/bench_metrics.py
    python benchmarks/bench_metrics.py --frames 120 --rounds 5 --cameras 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import cv2
import numpy as np

from machine import describe_machine
from maskwatch import hub
from maskwatch.classifier import MaskClassifier
from maskwatch.events import Event
from maskwatch.faces import YuNetDetector
from maskwatch.metrics import Metrics
from maskwatch.pipeline import Pipeline
from maskwatch.tracking import IoUTracker
from maskwatch.types import APPEAR, Frame, FrameResult
from maskwatch.watch import Watch


def frames(count: int) -> list[np.ndarray]:
    """640x480 frames of the sample photo of three faces drifting to the right."""
    photo = cv2.imread(str(hub.fetch("sample-896a9f04")))
    scale = 0.8 * 640 / photo.shape[1]
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = photo.shape[:2]
    out = []
    for i in range(count):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        x = (i * 2) % (640 - w + 1)
        canvas[(480 - h) // 2 : (480 - h) // 2 + h, x : x + w] = photo
        out.append(canvas)
    return out


def recorded(images: list[np.ndarray]) -> tuple[list[FrameResult], list[list[Event]], float]:
    """Each frame's result and events from one real watch, and its median ms per frame."""
    watch = Watch(Pipeline(YuNetDetector(), MaskClassifier(), IoUTracker()), "bench")
    results, events, times = [], [], []
    with watch:
        for i, image in enumerate(images):
            t0 = time.perf_counter()
            result = watch.pipeline.process(Frame(image, i, i / 15.0, "bench"))
            times.append(time.perf_counter() - t0)
            results.append(result)
            events.append(watch.stream.events(result))
    return results, events, 1000 * statistics.median(times)


def counting_us(results: list[FrameResult], events: list[list[Event]]) -> float:
    """Median microseconds per frame the metrics outputs take (a frame and its events)."""
    outputs = Outputs()
    Metrics().camera("bench").watch(outputs)  # type: ignore[arg-type]
    frame_output, event_output = outputs.frames[0], outputs.events[0]
    times = []
    for result, happened in zip(results, events, strict=True):
        t0 = time.perf_counter()
        frame_output.write(result)
        event_output.write(happened)
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


class Outputs:
    """Takes a camera's counting outputs as a watch would, without a pipeline."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.events: list[Any] = []

    def add(self, output: Any) -> None:
        self.frames.append(output)

    def add_events(self, output: Any) -> None:
        self.events.append(output)


def scrape_ms(cameras: int, repeats: int = 50) -> tuple[float, int]:
    """Median milliseconds of one /metrics text with `cameras` cameras, and its size."""
    metrics = Metrics()
    for n in range(cameras):
        outputs = Outputs()
        metrics.camera(f"camera {n}").watch(outputs)  # type: ignore[arg-type]
        box = (1.0, 2.0, 3.0, 4.0)
        outputs.events[0].write([Event(time.time(), "s", 0, APPEAR, 1, None, 0.9, box)])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        text = metrics.text()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cameras", type=int, default=20)
    args = parser.parse_args()
    print(describe_machine())
    results, events, loop = recorded(frames(args.frames))
    counting = statistics.median(counting_us(results, events) for _ in range(args.rounds))
    print(
        f"640x480, 3 faces, {args.frames} frames: pipeline {loop:.1f} ms/frame, metrics "
        f"outputs {counting:.1f} us/frame (median of {args.rounds} rounds)"
    )
    ms, size = scrape_ms(args.cameras)
    print(f"/metrics text with {args.cameras} cameras: {ms:.2f} ms, {size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
