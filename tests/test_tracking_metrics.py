"""The adopted tracker on the labelled tracking scenes (tests/tracking_scenes.py): standard MOT
metrics (motmetrics) and the people count meet the targets, and the scenes are hard enough that
a tracker without memory or confirmation misses them. Classifying people rather than frames
gives the same events and settled labels as classifying every face of every frame."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from maskwatch.pipeline import Pipeline
from maskwatch.tracking import IoUTracker
from maskwatch.types import Faces
from tracking_scenes import (
    FPS,
    MASK_ON,
    SCENES,
    Step,
    Watched,
    agreement,
    evaluate,
    sequence,
    watch_scene,
)

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


def test_classifying_people_not_frames_keeps_events_and_settled_labels(
    detector, classifier
) -> None:  # type: ignore[no-untyped-def]
    every: list[Watched] = []
    people: list[Watched] = []
    for name in [*(s.name for s in SCENES), MASK_ON.name]:
        base, ours = watch_scene(
            name,
            Pipeline(detector, classifier, IoUTracker(classify_every=1)),
            Pipeline(detector, classifier, IoUTracker()),  # the default: every 10 frames
        )
        assert base.classified == base.faces
        every.append(base)
        people.append(ours)
    events, settled, _ = agreement(sum(every[1:], every[0]), sum(people[1:], people[0]))
    assert events >= 0.99 and settled >= 0.99, (events, settled)
    assert sorted(every[-1].events) == sorted(people[-1].events)
    assert ("mask_on", "change", 1, "mask", "no_mask") in people[-1].events
    assert sum(w.classified for w in people) < 0.5 * sum(w.faces for w in people)


def test_a_tracker_that_never_rechecks_settled_people_misses_a_mask_put_on(
    detector, classifier
) -> None:  # type: ignore[no-untyped-def]
    never = IoUTracker(classify_every=1000, reclassify_iou=0, reclassify_size=100)
    (watched,) = watch_scene(MASK_ON.name, Pipeline(detector, classifier, never))
    assert not [e for e in watched.events if e[1] == "change"], watched.events
