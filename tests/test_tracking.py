"""Tracks: stable ids for moving faces, smoothed labels, tracks that end."""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.tracking import IoUTracker, iou_matrix
from maskwatch.types import APPEAR, CHANGE, LEAVE, NO_TRACK, SETTLE, Faces

CLASSES = ("mask", "no_mask")


def _faces(boxes: list[list[float]], probs: list[list[float]]) -> Faces:
    n = len(boxes)
    faces = Faces.from_detections(
        np.array(boxes, np.float32).reshape(n, 4), np.ones(n), np.zeros((n, 5, 2))
    )
    p = np.array(probs, np.float32).reshape(n, 2)
    return faces.with_probs(p, CLASSES)


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[5, 0, 15, 10]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150], [0.0]])
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


def _kinds(changes) -> list[tuple[str, int, str | None]]:  # type: ignore[no-untyped-def]
    return [(c.kind, c.track, c.label) for c in changes]


TWO = [[0, 0, 50, 50], [100, 0, 150, 50]]
TWO_PROBS = [[0.9, 0.1], [0.1, 0.9]]


def test_moving_faces_keep_their_ids_and_new_faces_get_new_ones() -> None:
    tracker = IoUTracker()
    for _ in range(3):
        first, changes = tracker.update(_faces(TWO, TWO_PROBS))
    assert list(first.tracks) == [1, 2]
    assert _kinds(changes) == [(APPEAR, 1, None), (APPEAR, 2, None)]
    # Faces listed in the other order and moved a little: same people.
    moved, changes = tracker.update(
        _faces([[105, 2, 155, 52], [4, 1, 54, 51]], [[0.1, 0.9], [0.9, 0.1]])
    )
    assert list(moved.tracks) == [2, 1] and changes == []
    third = [tracker.update(_faces([[300, 0, 350, 50]], [[0.5, 0.5]]))[0] for _ in "abc"]
    assert [list(t.tracks) for t in third] == [[NO_TRACK], [NO_TRACK], [3]]


def test_a_face_counts_as_a_person_only_after_confirm_frames_in_a_row() -> None:
    tracker = IoUTracker(confirm_frames=3)
    box, probs = [[0, 0, 50, 50]], [[0.9, 0.1]]
    changes = []
    for _ in range(2):  # two false detections for two frames, then nothing
        out, new = tracker.update(_faces(TWO, TWO_PROBS))
        assert list(out.tracks) == [NO_TRACK] * 2 and out.labels == ("mask", "no_mask")
        changes += new
    changes += tracker.update(_faces([], []))[1]
    assert changes == [] and tracker.tracks == []
    assert tracker.finish() == []
    for _ in range(3):
        out, changes = tracker.update(_faces(box, probs))
    assert list(out.tracks) == [1], "ids count people: the false detection used none"
    assert _kinds(changes) == [(APPEAR, 1, None)]


def test_one_odd_frame_does_not_flip_a_settled_label() -> None:
    tracker = IoUTracker()
    box = [[0, 0, 50, 50]]
    for _ in range(5):
        steady = tracker.update(_faces(box, [[0.95, 0.05]]))[0]
    assert steady.labels == ("mask",)
    odd = tracker.update(_faces(box, [[0.2, 0.8]]))[0]
    assert odd.labels == ("mask",)
    assert odd.probs[0, 0] > 0.6
    for _ in range(4):
        later = tracker.update(_faces(box, [[0.1, 0.9]]))[0]
    assert later.labels == ("no_mask",)


def test_tracks_end_after_being_unseen() -> None:
    tracker = IoUTracker(max_missed=2, confirm_frames=1)
    _, changes = tracker.update(_faces([[0, 0, 50, 50]], [[0.9, 0.1]]))
    assert _kinds(changes) == [(APPEAR, 1, None)]
    for _ in range(3):
        changes = tracker.update(_faces([], []))[1]
    assert _kinds(changes) == [(LEAVE, 1, None)]
    assert tracker.tracks == []
    again = tracker.update(_faces([[0, 0, 50, 50]], [[0.9, 0.1]]))[0]
    assert list(again.tracks) == [2]


def test_a_person_hidden_for_a_while_is_found_again_near_where_they_went() -> None:
    tracker = IoUTracker(confirm_frames=1, max_missed=30)
    for x in range(0, 50, 10):  # walking right, 10 px a frame
        tracker.update(_faces([[x, 0, x + 50, 60]], [[0.9, 0.1]]))
    for _ in range(20):  # behind something for 20 frames
        assert tracker.update(_faces([], []))[1] == []
    # Out again 100 px on (no overlap with where they were), and a stranger far away.
    out, changes = tracker.update(_faces([[140, 0, 190, 60], [500, 300, 550, 360]], TWO_PROBS))
    assert list(out.tracks) == [1, 2]
    assert _kinds(changes) == [(APPEAR, 2, None)]


@pytest.mark.parametrize(("fps", "kept"), [(15, True), (30, True), (60, True), (30, False)])
def test_a_person_is_remembered_for_two_seconds_at_any_frame_rate(fps: int, kept: bool) -> None:
    """30 frames are 2 s at 15 fps but 1 s at 30 and 0.5 s at 60: with frame times the tracker
    keeps a person for 2 s (memory_s) however fast frames come, and no longer."""
    tracker = IoUTracker(confirm_frames=1)
    box = [[0, 0, 50, 60]]
    tracker.update(_faces(box, [[0.9, 0.1]]), time=0.0)
    away = 1.9 if kept else 2.5  # seconds out of view
    frames = round(away * fps)
    left = [
        c for i in range(1, frames + 1) for c in tracker.update(_faces([], []), time=i / fps)[1]
    ]
    back, changes = tracker.update(_faces(box, [[0.9, 0.1]]), time=(frames + 1) / fps)
    if kept:
        assert left == [] and list(back.tracks) == [1] and changes == []
    else:
        assert _kinds(left) == [(LEAVE, 1, None)]
        assert list(back.tracks) == [2] and _kinds(changes) == [(APPEAR, 2, None)]  # someone new


def test_a_label_settles_after_agreeing_frames_and_changes_only_when_it_holds() -> None:
    tracker = IoUTracker(settle_frames=3, confirm_frames=2)
    box = [[0, 0, 50, 50]]
    faces, changes = tracker.update(_faces(box, [[0.9, 0.1]]))
    assert changes == [] and faces.settled == (False,)
    faces, changes = tracker.update(_faces(box, [[0.9, 0.1]]))
    assert _kinds(changes) == [(APPEAR, 1, None)] and faces.settled == (False,)
    faces, changes = tracker.update(_faces(box, [[0.9, 0.1]]))
    assert _kinds(changes) == [(SETTLE, 1, "mask")]
    assert faces.settled == (True,) and faces.to_dict()[0]["settled"] is True
    assert changes[0].confidence > 0.85
    # The person takes the mask off: the smoothed label turns, then must hold 3 frames; until
    # then the face shows its new label, not yet settled.
    seen, marks = [], []
    for _ in range(8):
        faces, changes = tracker.update(_faces(box, [[0.02, 0.98]]))
        seen += changes
        marks.append((faces.labels[0], faces.settled[0]))
    assert _kinds(seen) == [(CHANGE, 1, "no_mask")]
    assert ("no_mask", False) in marks and marks[-1] == ("no_mask", True)
    assert seen[0].previous == "mask"
    assert _kinds(tracker.finish()) == [(LEAVE, 1, "no_mask")]
    assert tracker.tracks == []


def test_a_label_that_held_before_confirmation_settles_when_the_person_appears() -> None:
    tracker = IoUTracker(settle_frames=2, confirm_frames=4)
    changes = []
    for _ in range(4):
        changes += tracker.update(_faces([[0, 0, 50, 50]], [[0.9, 0.1]]))[1]
    assert _kinds(changes) == [(APPEAR, 1, None), (SETTLE, 1, "mask")]


def test_uncertain_faces_never_settle_and_unseen_tracks_leave() -> None:
    tracker = IoUTracker(settle_frames=2, max_missed=1, uncertain_below=0.8)
    box = [[0, 0, 50, 50]]
    changes = []
    for _ in range(5):
        faces, new = tracker.update(_faces(box, [[0.55, 0.45]]))
        changes += new
        assert faces.labels == ("uncertain",) and faces.settled == (False,)
    assert _kinds(changes) == [(APPEAR, 1, None)]
    for _ in range(2):
        changes += tracker.update(_faces([], []))[1]
    assert _kinds(changes)[-1] == (LEAVE, 1, None)
    assert tracker.tracks == []


def test_settings_out_of_range_are_refused() -> None:
    for bad in ({"confirm_frames": 0}, {"min_iou": 1.5}, {"max_missed": -1}, {"reach": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            IoUTracker(**bad)  # type: ignore[arg-type]
