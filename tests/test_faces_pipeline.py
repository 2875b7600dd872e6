"""Real YuNet on real photos, framing, and per-face classification."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import MIRROR
from maskwatch.faces import YuNetDetector, crop_face, crop_faces, square_box
from maskwatch.pipeline import classify_photo
from maskwatch.types import Frame, Mode


def test_yunet_finds_masked_and_unmasked_faces(detector, three_faces) -> None:  # type: ignore[no-untyped-def]
    faces = detector.detect(three_faces, thorough=True)
    assert len(faces) == 3
    h, w = three_faces.shape[:2]
    assert (faces.boxes[:, [0, 2]] <= w).all() and (faces.boxes[:, [1, 3]] <= h).all()
    assert (faces.scores > 0.5).all()
    # Landmarks lie inside their boxes (eyes, nose, mouth corners).
    for box, marks in zip(faces.boxes, faces.landmarks, strict=True):
        assert (marks[:, 0] >= box[0] - 2).all() and (marks[:, 0] <= box[2] + 2).all()


def test_small_photos_are_upscaled_so_small_faces_are_found() -> None:
    group = cv2.imread(str(MIRROR / "05fe38c36a13204e986c5558169cf0d4.jpg"))  # 8 faces
    tiny = cv2.resize(group, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    detector = YuNetDetector()
    single_pass = detector.detect(tiny)
    thorough = detector.detect(tiny, thorough=True)
    assert len(thorough) >= 6 > len(single_pass)
    # Boxes come back in the small photo's own pixels.
    assert thorough.boxes[:, [0, 2]].max() <= tiny.shape[1]
    assert thorough.boxes[:, [1, 3]].max() <= tiny.shape[0]


def test_crops_are_square_with_margin_and_padded_outside_the_frame() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    x0, y0, side = square_box(np.array([40, 30, 60, 70]), margin=0.25)
    assert side == 60 and (x0, y0) == (20, 20)
    corner = crop_face(image, np.array([-10, -10, 10, 10]), 32, margin=0.0)
    assert corner.shape == (32, 32, 3)
    assert corner[:8, :8].max() == 0 and corner[-8:, -8:].min() == 200
    assert crop_faces(image, np.zeros((0, 4)), 32).shape == (0, 32, 32, 3)


def test_each_face_is_classified_on_its_own_crop(pipeline, three_faces) -> None:  # type: ignore[no-untyped-def]
    result = pipeline.process(Frame(three_faces, 0, 0.0, "three.jpg", Mode.PHOTO))
    faces = result.faces
    assert len(faces) == 3 and len(faces.labels) == 3
    np.testing.assert_allclose(faces.probs.sum(axis=1), 1.0, atol=1e-4)
    meta = pipeline.classifier.meta
    for i, box in enumerate(faces.boxes):
        crop = crop_face(three_faces, box, meta.input_size, meta.crop_margin)
        alone = pipeline.classifier.predict(crop[None])[0]
        np.testing.assert_allclose(faces.probs[i], alone, atol=1e-4)
    whole_frame = list(classify_photo(pipeline.classifier, three_faces).probs.values())
    assert not any(np.allclose(p, whole_frame, atol=1e-3) for p in faces.probs)


def test_the_unmasked_face_and_a_masked_face_are_told_apart(pipeline, three_faces) -> None:  # type: ignore[no-untyped-def]
    """The sample photo (never in training) has a cloth mask, a mask below the nose, no mask."""
    labels = pipeline.process(Frame(three_faces, 0, 0.0, "three.jpg", Mode.PHOTO)).faces.labels
    assert "no_mask" in labels
    assert "mask" in labels or "incorrect" in labels


def test_empty_frame_gives_no_faces(pipeline) -> None:  # type: ignore[no-untyped-def]
    result = pipeline.process(Frame(np.full((480, 640, 3), 127, np.uint8), 0, 0.0, "grey"))
    assert len(result.faces) == 0 and result.to_dict()["faces"] == []


@pytest.mark.parametrize("size", [(1, 1), (3, 2000), (2000, 3), (0, 640), (480, 0)])
def test_degenerate_frames_do_not_crash(pipeline, size) -> None:  # type: ignore[no-untyped-def]
    frame = Frame(np.zeros((*size, 3), np.uint8), 0, 0.0, "odd")
    assert len(pipeline.process(frame).faces) == 0


def test_tracked_faces_are_labelled_once_from_their_tracks_by_the_models_threshold(  # type: ignore[no-untyped-def]
    detector, classifier, three_faces
) -> None:
    """The tracker labels the smoothed probabilities by the classifier's own threshold."""
    from maskwatch.labels import labels_for
    from maskwatch.pipeline import Pipeline
    from maskwatch.tracking import IoUTracker

    tracker = IoUTracker(confirm_frames=1)
    tracked = Pipeline(detector, classifier, tracker)
    threshold = classifier.meta.uncertain_below
    assert threshold > 0 and tracker.uncertain_below == threshold
    first = tracked.process(Frame(three_faces, 0, 0.0, "video")).faces
    moved = np.ascontiguousarray(np.roll(three_faces, 3, axis=1))
    second = tracked.process(Frame(moved, 1, 0.1, "video")).faces
    assert sorted(second.tracks) == [1, 2, 3]
    own = tracked.predict(moved, detector.detect(moved))
    assert own.labels == ()
    for i, track in enumerate(second.tracks):
        before = first.probs[list(first.tracks).index(track)]
        smoothed = tracker.smoothing * before + (1 - tracker.smoothing) * own.probs[i]
        np.testing.assert_allclose(second.probs[i], smoothed, atol=1e-5)
    assert second.labels == labels_for(second.probs, second.classes, threshold)


def test_photos_get_the_thorough_search_and_no_tracking(detector, classifier, three_faces) -> None:  # type: ignore[no-untyped-def]
    """The frame's mode decides both: a small photo is searched upscaled and never tracked."""
    from maskwatch.pipeline import Pipeline
    from maskwatch.tracking import IoUTracker
    from maskwatch.types import NO_TRACK

    group = cv2.imread(str(MIRROR / "05fe38c36a13204e986c5558169cf0d4.jpg"))  # 8 faces
    tiny = cv2.resize(group, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    tracked = Pipeline(detector, classifier, IoUTracker(confirm_frames=1))
    photo = tracked.process(Frame(tiny, 0, 0.0, "tiny.jpg", Mode.PHOTO))
    assert len(photo.faces) >= 6 > len(tracked.process(Frame(tiny, 0, 0.0, "tiny.mp4")).faces)
    assert set(photo.faces.tracks) == {NO_TRACK} and photo.changes == ()
    for mode in (Mode.PHOTO, Mode.VIDEO):
        result = tracked.process(Frame(three_faces, 1, 0.1, "three", mode))
        assert (NO_TRACK in set(result.faces.tracks)) == (mode is Mode.PHOTO)
        assert bool(result.changes) == (mode is Mode.VIDEO)
