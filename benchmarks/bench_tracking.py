"""Trackers compared on the labelled tracking scenes of tests/tracking_scenes.py.

The same YuNet detections of each rendered scene (people crossing, hidden behind a pillar,
leaving view and coming back within 2 s, and a real-camera-like case with jitter, missed
detections and only every 2nd-3rd frame seen) go through each tracker; motmetrics scores them.

- maskwatch: tracking.IoUTracker as shipped (expected box, re-association of lost tracks by
  distance, confirmation after 3 frames);
- maskwatch 0.1: the tracker it replaced (greedy IoU >= 0.3, no confirmation, 15 frames
  remembered), reproduced here;
- ByteTrack (supervision.ByteTrack, where the installed supervision still has it: < 0.27) with a
  2 s lost-track buffer and 3 frames to confirm;
- norfair (IoU distance, Kalman filter, 3 frames to confirm), where installed.

With --classify-every, the choice of `--classify-every`: each scene (and one where a person
puts a mask on) through the whole pipeline from classification on, classifying every face of
every frame against classifying people every N of their frames: the share of faces classified,
and how far events and settled labels agree.

    python benchmarks/bench_tracking.py
    python benchmarks/bench_tracking.py --classify-every     # about 2 minutes
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from machine import describe_machine
from maskwatch.classifier import MaskClassifier
from maskwatch.pipeline import Pipeline
from maskwatch.tracking import IoUTracker, iou_matrix
from maskwatch.types import NO_TRACK, Faces
from tracking_scenes import (
    FPS,
    MASK_ON,
    SCENES,
    Step,
    _detector,
    agreement,
    evaluate,
    sequence,
    watch_scene,
)

EVERY = (1, 5, 10, 15, 20, 30)


def maskwatch() -> Step:
    tracker = IoUTracker()

    def step(faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        out, _ = tracker.update(faces)
        return out.boxes, out.tracks

    return step


def maskwatch_0_1() -> Step:
    """Greedy IoU matching against last boxes; tracks end after 15 unseen frames."""
    tracks: dict[int, tuple[np.ndarray, int]] = {}  # id -> (box, missed)
    next_id = 1

    def step(faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        nonlocal next_id
        ids = list(tracks)
        overlap = iou_matrix(np.array([tracks[i][0] for i in ids]).reshape(-1, 4), faces.boxes)
        out = np.full(len(faces), NO_TRACK, np.int64)
        for flat in np.argsort(-overlap, axis=None):
            t, f = np.unravel_index(flat, overlap.shape)
            if overlap[t, f] < 0.3:
                break
            if ids[t] not in out and out[f] == NO_TRACK:
                out[f] = ids[t]
        for f in range(len(faces)):
            if out[f] == NO_TRACK:
                out[f], next_id = next_id, next_id + 1
            tracks[int(out[f])] = (faces.boxes[f], -1)
        for i, (box, missed) in list(tracks.items()):
            if missed + 1 > 15:
                del tracks[i]
            else:
                tracks[i] = (box, missed + 1)
        return faces.boxes, out

    return step


def bytetrack() -> Step:
    import supervision as sv

    tracker = sv.ByteTrack(lost_track_buffer=2 * FPS, frame_rate=FPS, minimum_consecutive_frames=3)

    def step(faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        found = sv.Detections(
            xyxy=faces.boxes.astype(np.float32).reshape(-1, 4),
            confidence=faces.scores.astype(np.float32),
            class_id=np.zeros(len(faces), int),
        )
        tracked = tracker.update_with_detections(found)
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.zeros(0)
        return tracked.xyxy, np.asarray(ids, np.int64)

    return step


def norfair_tracker() -> Step:
    import norfair

    tracker = norfair.Tracker(
        distance_function="iou",
        distance_threshold=0.7,
        hit_counter_max=2 * FPS,
        initialization_delay=2,
    )

    def step(faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        found = [
            norfair.Detection(points=box.reshape(2, 2), scores=np.array([s, s]))
            for box, s in zip(faces.boxes, faces.scores, strict=True)
        ]
        now = {id(d) for d in found}  # only objects given a detection in this frame
        objects = [o for o in tracker.update(found) if id(o.last_detection) in now]
        boxes = np.array([o.last_detection.points.reshape(4) for o in objects]).reshape(-1, 4)
        ids = np.array([NO_TRACK if o.id is None else o.id for o in objects], np.int64)
        return boxes, ids

    return step


TRACKERS: dict[str, Callable[[], Step]] = {
    "maskwatch": maskwatch,
    "maskwatch 0.1": maskwatch_0_1,
    "ByteTrack (supervision)": bytetrack,
    "norfair": norfair_tracker,
}


def classify_every() -> None:
    """Every face of every frame against each N of EVERY, on every scene."""
    print(describe_machine())
    detector, classifier = _detector(), MaskClassifier()
    runs = []
    for name in [*(s.name for s in SCENES), MASK_ON.name]:
        pipelines = [Pipeline(detector, classifier, IoUTracker(classify_every=n)) for n in EVERY]
        runs.append(watch_scene(name, *pipelines))
    total = [sum(r[1:], r[0]) for r in zip(*runs, strict=True)]
    print(
        f"{'N':>4} {'classified':>10} {'events same':>11} {'settled same':>12} {'labels same':>11}"
    )
    for n, watched in zip(EVERY, total, strict=True):
        events, settled, labels = agreement(total[0], watched)
        print(
            f"{n:4d} {watched.classified / watched.faces:10.1%} {events:11.1%} {settled:12.2%} "
            f"{labels:11.2%}"  # face labels shown in the same frames
        )
    print(f"({total[0].faces} faces in {len(runs)} scenes; N=1 is every face of every frame)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classify-every", action="store_true", help="choose --classify-every")
    if parser.parse_args().classify_every:
        classify_every()
        return
    print(describe_machine())
    sequences = [sequence(scene.name) for scene in SCENES]
    print(
        f"{'tracker':24} {'scene':13} {'IDF1':>5} {'IDsw':>4} {'MOTA':>5} "
        f"{'people':>6} {'counted':>7} {'error':>6} {'ms':>5}"
    )
    for name, make in TRACKERS.items():
        try:
            make()
        except (ImportError, AttributeError) as exc:
            print(f"{name:24} not available: {exc}")
            continue
        counted = people = 0
        for seq in sequences:
            score = evaluate(seq, make())
            counted += abs(score.counted - score.people)
            people += score.people
            print(
                f"{name:24} {seq.scene.name:13} {score.idf1:5.3f} {score.switches:4d} "
                f"{score.mota:5.3f} {score.people:6d} {score.counted:7d} "
                f"{score.count_error:6.1%} {score.ms:5.2f}"
            )
        print(f"{name:24} {'all':13} people-count error {counted / people:.1%}")


if __name__ == "__main__":
    main()
