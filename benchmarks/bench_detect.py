"""Frames per second of the detect loop against the seed's loop, on rendered videos.

With --stream, one stream as a user runs it, side by side in one run: `maskwatch detect` on a
300-frame 640x480 video with 3 faces, start-up included (a fresh process each run, the command
line as a user types it), against the seed's loop (a fresh process too: its imports and model
set-up included); then the same frames in one process, steady: one stage after the other and
every face classified (maskwatch before issue 12), classifying people rather than frames, the
next frame detected meanwhile, and two frames detected at once on both cores with 4 read ahead
(what `detect` runs), with the faces each classified. The start-up runs write bytecode as an
installed package does (PYTHONDONTWRITEBYTECODE is dropped for them).

For each frame size and face count it renders a video of real faces (cut from the demo sample
photos, fetched through the cache, moving a little each frame) and runs:

- maskwatch's loop: decode, detect (YuNet), classify (all faces in one ONNX batch), track, draw;
  per-stage medians and end-to-end frames per second;
- the seed's loop on the same video: Haar cascade where the installed OpenCV has it (YuNet
  stands in where it does not: OpenCV 5 dropped Haar), then eager PyTorch MobileNetV2 at 224,
  one face at a time, as the seed ran Keras; its frames per second and the ratio.

    python benchmarks/bench_detect.py                       # 640x480 and 1280x720, 1/3/10 faces
    python benchmarks/bench_detect.py --size 640x480 --faces 3 --model float.onnx --spinning
    python benchmarks/bench_detect.py --stream                 # about 2.5 minutes
    python benchmarks/bench_detect.py --detectors              # YuNet: OpenCV DNN against ORT
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from machine import describe_machine
from maskwatch import hub
from maskwatch.classifier import MaskClassifier
from maskwatch.defaults import DETECT_VIDEO_SIDE, READ_AHEAD
from maskwatch.draw import draw_faces
from maskwatch.faces import YuNetDetector, stream_detector
from maskwatch.pipeline import Pipeline
from maskwatch.sources import open_source
from maskwatch.tracking import IoUTracker
from maskwatch.watch import Watch
from maskwatch.yunet import YuNetSession

STAGES = ("decode", "detect", "classify", "track", "draw")
WARMUP = 10


def face_tiles(count: int, detector: YuNetDetector) -> list[np.ndarray]:
    """`count` face regions (with context) cut from the sample photos."""
    tiles: list[np.ndarray] = []
    for name in ("sample-d898baff", "sample-e07e9c7e", "sample-896a9f04", "sample-05fe38c3"):
        image = cv2.imread(str(hub.fetch(name)))
        for box in detector.detect(image).boxes:
            x1, y1, x2, y2 = box.astype(int)
            pad = int((x2 - x1) * 0.3)
            tile = image[max(0, y1 - pad) : y2 + pad, max(0, x1 - pad) : x2 + pad]
            # One face per tile, one the detector still finds when the tile is shown small.
            if x2 - x1 >= 40 and all(
                len(detector.detect(cv2.resize(tile, (side, side)))) == 1 for side in (90, 200)
            ):
                tiles.append(tile)
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


def timed_frames(video: Path, step: Callable[[np.ndarray], dict[str, float]]) -> dict[str, Any]:
    """Run `step` (returning its own stage times) on every frame; decode is timed here."""
    times: dict[str, list[float]] = {}
    capture = cv2.VideoCapture(str(video))
    while True:
        t0 = time.perf_counter()
        ok, image = capture.read()
        if not ok:
            break
        stages = {"decode": time.perf_counter() - t0, **step(image)}
        stages["total"] = sum(stages.values())
        for name, value in stages.items():
            times.setdefault(name, []).append(value)
    capture.release()
    return {name: statistics.median(values[WARMUP:]) for name, values in times.items()}


def maskwatch_step(
    pipeline: Pipeline, tracker: IoUTracker, found: list[int]
) -> Callable[[np.ndarray], dict[str, float]]:
    def step(image: np.ndarray) -> dict[str, float]:
        t0 = time.perf_counter()
        faces = pipeline.detector.detect(image)
        t1 = time.perf_counter()
        faces = pipeline.predict(image, faces)
        t2 = time.perf_counter()
        faces, _ = tracker.update(faces)
        t3 = time.perf_counter()
        draw_faces(image, faces)
        t4 = time.perf_counter()
        found.append(len(faces))
        return dict(zip(STAGES[1:], (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True))

    return step


def seed_step() -> tuple[str, Callable[[np.ndarray], dict[str, float]]]:
    """The seed's loop: Haar (or YuNet where OpenCV has no Haar) and eager PyTorch, per face."""
    import torch
    from torch import nn

    from maskwatch.train.model import mobilenet_v2_features

    torch.set_grad_enabled(False)
    net = nn.Sequential(  # timing does not depend on weights
        mobilenet_v2_features(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(1280, 128),  # the seed's head
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 2),
        nn.Softmax(dim=1),
    )
    net.eval()
    if hasattr(cv2, "CascadeClassifier"):
        cascade = cv2.CascadeClassifier(
            str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
        )

        def find(image: np.ndarray) -> list[tuple[int, int, int, int]]:
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            found = cascade.detectMultiScale(gray, 1.1, 4)
            return [(x, y, x + w, y + h) for x, y, w, h in found]

        detector_name = "Haar cascade"
    else:  # OpenCV's own YuNet, at full size, as a tutorial for OpenCV 5 would use it
        yunet = cv2.FaceDetectorYN.create(str(hub.fetch(hub.YUNET.name)), "", (320, 320))

        def find(image: np.ndarray) -> list[tuple[int, int, int, int]]:
            yunet.setInputSize((image.shape[1], image.shape[0]))
            found = yunet.detect(image)[1]
            rows = [] if found is None else found[:, :4].astype(int)
            return [(x, y, x + w, y + h) for x, y, w, h in rows]

        detector_name = "OpenCV's YuNet at full size (this OpenCV has no Haar cascade)"

    def step(image: np.ndarray) -> dict[str, float]:
        t0 = time.perf_counter()
        boxes = find(image)
        t1 = time.perf_counter()
        for x1, y1, x2, y2 in boxes:
            face = cv2.cvtColor(image[max(0, y1) : y2, max(0, x1) : x2], cv2.COLOR_BGR2RGB)
            face = cv2.resize(face, (224, 224)).astype(np.float32) / 127.5 - 1.0
            net(torch.from_numpy(face.transpose(2, 0, 1)[None].copy()))
        t2 = time.perf_counter()
        return {"detect": t1 - t0, "classify": t2 - t1}

    return detector_name, step


def seed_run(video: Path) -> None:
    """The seed's loop over every frame of `video`, set-up included (run in its own process)."""
    step = seed_step()[1]
    capture = cv2.VideoCapture(str(video))
    while True:
        ok, image = capture.read()
        if not ok:
            break
        step(image)
    capture.release()


def _seconds(command: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def _in_process(video: Path, classify_every: int, workers: int) -> tuple[float, int, int]:
    """Steady frames per second of a watch over `video` (models loaded before timing), and
    the faces classified out of the faces found; `workers` 0: one stage after the other."""
    detector = stream_detector(lambda threads: YuNetDetector(threads=threads), max(1, workers))
    pipeline = Pipeline(detector, MaskClassifier(), IoUTracker(classify_every=classify_every))
    depth = READ_AHEAD if workers > 1 else 1  # as detect reads a file
    classified = found = 0

    class Count:
        def write(self, result: Any) -> None:
            nonlocal classified, found
            classified += int(result.faces.classified.sum())
            found += len(result.faces)

        def close(self, ok: bool = True) -> None:
            pass

    source = open_source(str(video))
    start = time.perf_counter()
    with Watch(pipeline) as watch:
        watch.add(Count())
        watch.run(source.frames(), overlap=workers > 0, workers=workers, depth=depth)
    return source.read / (time.perf_counter() - start), classified, found


def single_stream(frames: int, repeats: int) -> None:
    """`detect` against the seed's loop on one 640x480 video with 3 faces (see the docstring)."""
    print(f"machine: {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "stream.mp4"
        render(video, (640, 480), face_tiles(3, YuNetDetector()), frames)
        detect = [sys.executable, "-m", "maskwatch.cli", "-q", "detect", "--source", str(video)]
        detect += ["--no-show", "--json", str(Path(tmp) / "out.jsonl")]
        runs = {
            "seed loop (Haar or YuNet, PyTorch per face)": [
                sys.executable,
                __file__,
                "--seed-run",
                str(video),
            ],
            "maskwatch detect --classify-every 1": [*detect, "--classify-every", "1"],
            "maskwatch detect (default)": detect,
        }
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):  # interleaved, so that a slower spell of the machine hits all
            for name, command in runs.items():
                seconds[name].append(_seconds(command))
        print(
            f"\n{frames} frames 640x480, 3 faces, start-up included "
            f"(fresh process each; median of {repeats} interleaved runs):"
        )
        seed_fps = frames / statistics.median(seconds[next(iter(runs))])
        for name, values in seconds.items():
            fps = frames / statistics.median(values)
            print(
                f"  {name:46} {statistics.median(values):6.2f} s {fps:7.1f} frames/s "
                f"{fps / seed_fps:6.1f}x the seed's"
            )
        print("\nthe same frames in one process, steady (models loaded before timing):")
        for name, every, workers in (
            ("one stage after the other, every face", 1, 0),
            ("classifying people, not frames", 10, 0),
            ("... and the next frame detected meanwhile", 10, 1),
            ("... two at once on both cores, 4 ahead (detect's)", 10, 2),
        ):
            fps, classified, found = _in_process(video, every, workers)
            print(f"  {name:46} {fps:7.1f} frames/s, {classified:5d} of {found} faces classified")


def compare_detectors(repeats: int = 200) -> None:
    """YuNet run by OpenCV's DNN module (cv2.FaceDetectorYN) against ONNX Runtime (yunet.py),
    one and two threads, on a 640x480 frame with 3 faces; median milliseconds a frame."""
    print(f"machine: {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "faces.mp4"
        render(video, (640, 480), face_tiles(3, YuNetDetector()), 1)
        image = open_source(str(video)).frames().__next__().image
    opencv = cv2.FaceDetectorYN.create(str(hub.fetch(hub.YUNET.name)), "", (640, 480), 0.5)
    print(f"YuNet on one 640x480 frame, 3 faces (median of {repeats} runs):")
    for threads in (1, 2):
        cv2.setNumThreads(threads)
        session = YuNetSession(hub.fetch(hub.YUNET.name), threads)
        for name, run in (
            ("OpenCV DNN (cv2.FaceDetectorYN)", lambda: opencv.detect(image)),
            ("ONNX Runtime (maskwatch)", lambda s=session: s.run(image, 0.5, 0.3)),
        ):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            print(f"  {name:34} {threads} thread(s) {1000 * statistics.median(times[10:]):6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", action="append", help="WxH (repeatable; default both)")
    parser.add_argument("--faces", type=int, action="append", help="repeatable; default 1 3 10")
    parser.add_argument("--frames", type=int, help="default: 200 a video, 300 with --stream")
    parser.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all)")
    parser.add_argument("--spinning", action="store_true", help="let ORT threads spin-wait")
    parser.add_argument("--video-side", type=int, default=DETECT_VIDEO_SIDE)
    parser.add_argument("--no-seed", action="store_true", help="skip the seed loop")
    parser.add_argument("--stream", action="store_true", help="one stream against the seed's")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (--stream)")
    parser.add_argument("--detectors", action="store_true", help="YuNet: OpenCV against ORT")
    parser.add_argument("--seed-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_run:
        seed_run(args.seed_run)
        return
    if args.detectors:
        compare_detectors()
        return
    if args.stream:
        single_stream(args.frames or 300, args.repeats)
        return
    sizes = args.size or ["640x480", "1280x720"]
    counts = args.faces or [1, 3, 10]

    detector = YuNetDetector(video_side=args.video_side)
    classifier = MaskClassifier(args.model, threads=args.threads, spinning=args.spinning)
    pipeline = Pipeline(detector, classifier)
    seed = None if args.no_seed else seed_step()
    print(f"machine: {describe_machine()}")
    print(
        f"model: {classifier.path.name} ({classifier.input_size} px), ORT threads "
        f"{args.threads or 'all'}, spinning {'on' if args.spinning else 'off'}, "
        f"detector video side {args.video_side}"
    )
    if seed is not None:
        print(f"seed loop: {seed[0]}, eager PyTorch MobileNetV2 224 px one face at a time")
    header = "size      faces found  " + "  ".join(f"{s:>8}" for s in STAGES) + "     fps"
    print(header + ("   seed fps  ratio" if seed else ""))
    for size_text in sizes:
        size = tuple(int(v) for v in size_text.split("x"))
        for count in counts:
            with tempfile.TemporaryDirectory() as tmp:
                video = Path(tmp) / "bench.mp4"
                render(video, (size[0], size[1]), face_tiles(count, detector), args.frames or 200)
                found: list[int] = []
                ours = timed_frames(video, maskwatch_step(pipeline, IoUTracker(), found))
                fps = 1 / ours["total"]
                line = (
                    f"{size_text:<9} {count:>5} {statistics.median(found):>5.0f}  "
                    + "  ".join(f"{1000 * ours[s]:>5.2f}ms" for s in STAGES)
                    + f"  {fps:>6.1f}"
                )
                if seed is not None:
                    render(video, (size[0], size[1]), face_tiles(count, detector), 40)
                    theirs = timed_frames(video, seed[1])
                    seed_fps = 1 / theirs["total"]
                    line += f"  {seed_fps:>9.1f}  {fps / seed_fps:>5.1f}x"
                print(line, flush=True)
    print("(per-stage and end-to-end figures are medians over frames, after a warm-up)")


if __name__ == "__main__":
    main()
