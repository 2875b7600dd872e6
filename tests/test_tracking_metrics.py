"""The adopted tracker on the labelled tracking scenes (tests/tracking_scenes.py): standard MOT
metrics (motmetrics) and the people count meet the targets, and the scenes are hard enough that
a tracker without memory or confirmation misses them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from maskwatch.tracking import IoUTracker
from maskwatch.types import Faces
from tracking_scenes import FPS, SCENES, Step, evaluate, sequence

pytestmark = pytest.mark.slow


def _step(tracker: IoUTracker) -> Step:
    def step(faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        out, _ = tracker.update(faces)
        return out.boxes, out.tracks

    return step


@pytest.mark.parametrize("name", [s.name for s in SCENES])
def test_the_tracker_counts_people_right_and_keeps_their_ids(name: str) -> None:
    score = evaluate(sequence(name), _step(IoUTracker()))
    assert score.count_error <= 0.05, score
    assert score.idf1 >= 0.9, score
    assert score.switches <= 1, score


def test_people_out_of_view_for_up_to_2_s_keep_their_id() -> None:
    seq = sequence("leave_return")
    gaps = []
    for person in range(len(seq.scene.actors)):
        shown = [f for f, t in zip(seq.frames, seq.truths, strict=True) if person in t.ids]
        gaps += [b - a for a, b in itertools.pairwise(shown) if b - a > 1]
    assert len(gaps) == 2 and all(FPS < gap <= 2 * FPS for gap in gaps), gaps
    score = evaluate(seq, _step(IoUTracker()))
    assert (score.counted, score.switches) == (score.people, 0), score


def test_the_camera_scene_is_seen_thinned_and_with_missed_faces() -> None:
    seq = sequence("camera")
    assert set(np.diff(seq.frames)) == {2, 3}
    found = sum(len(f) for f in seq.faces)
    assert found < 0.95 * sum(len(t.ids) for t in seq.truths)


@pytest.mark.parametrize("name", ["occlusion", "leave_return", "camera"])
def test_a_tracker_without_memory_would_miscount(name: str) -> None:
    forgetful = IoUTracker(max_missed=2, reach=0, confirm_frames=1)
    score = evaluate(sequence(name), _step(forgetful))
    assert score.count_error > 0.2, score
