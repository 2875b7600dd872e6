"""Tracks: stable ids for moving faces, smoothed labels, tracks that end."""

from __future__ import annotations

import numpy as np

from maskwatch.classifier import labels_for
from maskwatch.tracking import IoUTracker, iou_matrix
from maskwatch.types import APPEAR, CHANGE, LEAVE, SETTLE, Faces

CLASSES = ("mask", "no_mask")


def _faces(boxes: list[list[float]], probs: list[list[float]]) -> Faces:
    n = len(boxes)
    faces = Faces.from_detections(
        np.array(boxes, np.float32).reshape(n, 4), np.ones(n), np.zeros((n, 5, 2))
    )
    p = np.array(probs, np.float32).reshape(n, 2)
    return faces.with_predictions(p, CLASSES, labels_for(p, list(CLASSES), 0.0))


def _labels(p: np.ndarray) -> tuple[str, ...]:
    return labels_for(p, list(CLASSES), 0.0)


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[5, 0, 15, 10]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150], [0.0]])
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


def test_moving_faces_keep_their_ids_and_new_faces_get_new_ones() -> None:
    tracker = IoUTracker()
    first = tracker.update(
        _faces([[0, 0, 50, 50], [100, 0, 150, 50]], [[0.9, 0.1], [0.1, 0.9]]), _labels
    )[0]
    assert list(first.tracks) == [1, 2]
    # Faces listed in the other order and moved a little: same people.
    moved = tracker.update(
        _faces([[105, 2, 155, 52], [4, 1, 54, 51]], [[0.1, 0.9], [0.9, 0.1]]), _labels
    )[0]
    assert list(moved.tracks) == [2, 1]
    third = tracker.update(_faces([[300, 0, 350, 50]], [[0.5, 0.5]]), _labels)[0]
    assert list(third.tracks) == [3]


def test_one_odd_frame_does_not_flip_a_settled_label() -> None:
    tracker = IoUTracker()
    box = [[0, 0, 50, 50]]
    for _ in range(5):
        tracker.update(_faces(box, [[0.95, 0.05]]), _labels)[0]
    odd = tracker.update(_faces(box, [[0.2, 0.8]]), _labels)[0]
    assert odd.labels == ("mask",)
    assert odd.probs[0, 0] > 0.6
    for _ in range(4):
        later = tracker.update(_faces(box, [[0.1, 0.9]]), _labels)[0]
    assert later.labels == ("no_mask",)


def test_tracks_end_after_being_unseen() -> None:
    tracker = IoUTracker(max_missed=2)
    tracker.update(_faces([[0, 0, 50, 50]], [[0.9, 0.1]]), _labels)[0]
    for _ in range(3):
        tracker.update(_faces([], []), _labels)[0]
    assert tracker.tracks == []
    again = tracker.update(_faces([[0, 0, 50, 50]], [[0.9, 0.1]]), _labels)[0]
    assert list(again.tracks) == [2]


def _kinds(changes) -> list[tuple[str, int, str | None]]:  # type: ignore[no-untyped-def]
    return [(c.kind, c.track, c.label) for c in changes]


def test_a_label_settles_after_agreeing_frames_and_changes_only_when_it_holds() -> None:
    tracker = IoUTracker(settle_frames=3)
    box = [[0, 0, 50, 50]]
    _, changes = tracker.update(_faces(box, [[0.9, 0.1]]), _labels)
    assert _kinds(changes) == [(APPEAR, 1, None)]
    _, changes = tracker.update(_faces(box, [[0.9, 0.1]]), _labels)
    assert changes == []
    _, changes = tracker.update(_faces(box, [[0.9, 0.1]]), _labels)
    assert _kinds(changes) == [(SETTLE, 1, "mask")]
    assert changes[0].confidence > 0.85
    # The person takes the mask off: the smoothed label turns, then must hold 3 frames.
    seen = []
    for _ in range(8):
        seen += tracker.update(_faces(box, [[0.02, 0.98]]), _labels)[1]
    assert _kinds(seen) == [(CHANGE, 1, "no_mask")]
    assert seen[0].previous == "mask"
    assert _kinds(tracker.finish()) == [(LEAVE, 1, "no_mask")]
    assert tracker.tracks == []


def test_uncertain_faces_never_settle_and_unseen_tracks_leave() -> None:
    tracker = IoUTracker(settle_frames=2, max_missed=1)
    unsure = lambda p: labels_for(p, list(CLASSES), 0.8)  # noqa: E731
    box = [[0, 0, 50, 50]]
    changes = []
    for _ in range(5):
        changes += tracker.update(_faces(box, [[0.55, 0.45]]), unsure)[1]
    assert _kinds(changes) == [(APPEAR, 1, None)]
    for _ in range(2):
        changes += tracker.update(_faces([], []), unsure)[1]
    assert _kinds(changes)[-1] == (LEAVE, 1, None)
    assert tracker.tracks == []
