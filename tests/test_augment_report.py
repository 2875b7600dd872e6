"""Augmentation on real crops, and the report's figures (train/metrics.py) on small hand-made
tables."""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.defaults import CROP_MARGIN
from maskwatch.faces import crop_face
from maskwatch.train.augment import (
    RealAugment,
    paint_mask,
    paint_mouth_object,
    paint_neckwear,
    recolour_lower_face,
    seed_augment,
)
from maskwatch.train.metrics import (
    Predictions,
    choose_threshold,
    compute_metrics,
    headline_sets,
    mask_vs_no_mask,
    recall_at_precision,
    selective,
    summarise,
)

CLASSES = ["mask", "no_mask", "incorrect"]


def _unmasked_face(detector, photo: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """The unmasked face of the sample photo (the man on the right), as a 160 px crop framed
    with `margin`, and its landmarks in crop pixels."""
    from maskwatch.faces import square_box

    faces = detector.detect(photo, thorough=True)
    i = int(np.argmax(faces.boxes[:, 0]))
    x0, y0, side = square_box(faces.boxes[i], margin)
    crop = crop_face(photo, faces.boxes[i], 160, margin)
    return crop, (faces.landmarks[i] - [x0, y0]) * 160 / side


@pytest.fixture(scope="module")
def bare_face(detector, three_faces):  # type: ignore[no-untyped-def]
    """The unmasked face as the detector frames it."""
    return _unmasked_face(detector, three_faces, CROP_MARGIN)


@pytest.fixture(scope="module")
def loose_face(detector, three_faces):  # type: ignore[no-untyped-def]
    """The same face framed 45% wider on each side: neck and collar in view."""
    return _unmasked_face(detector, three_faces, 0.45)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Where a painting visibly changed the crop."""
    return np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 20


@pytest.mark.parametrize("placement", ["worn", "below_nose", "on_chin"])
def test_synthetic_masks_cover_the_lower_face_only(bare_face, placement) -> None:  # type: ignore[no-untyped-def]
    crop, marks = bare_face
    painted = paint_mask(crop, marks, placement, np.random.default_rng(0))
    changed = _changed(crop, painted)
    eyes_y = int(marks[:2, 1].mean())
    assert changed.sum() > 400
    assert not changed[: max(0, eyes_y - 3)].any(), "the mask reached above the eyes"
    nose_y = int(marks[2, 1])
    above_nose = changed[eyes_y:nose_y].mean()
    if placement == "worn":
        assert above_nose > 0.02
    else:
        assert above_nose < 0.02


@pytest.mark.parametrize(
    ("paint", "framing", "untouched_to", "least"),
    [(paint_neckwear, "loose_face", 1.8, 200), (paint_mouth_object, "bare_face", 0.3, 50)],
    ids=["neckwear below the jaw, the chin bare", "an object at the mouth, not the eyes"],
)
def test_hard_negatives_are_drawn_where_they_belong(  # type: ignore[no-untyped-def]
    paint, framing: str, untouched_to: float, least: int, request: pytest.FixtureRequest
) -> None:
    """Nothing changes above the eyes' height plus `untouched_to` times eyes-to-mouth."""
    crop, marks = request.getfixturevalue(framing)
    eyes_y = marks[:2, 1].mean()
    untouched = int(eyes_y + untouched_to * (marks[3:, 1].mean() - eyes_y))
    for seed in range(5):
        changed = _changed(crop, paint(crop, marks, np.random.default_rng(seed)))
        assert changed.sum() > least, seed
        assert not changed[:untouched].any(), seed


def test_hard_negatives_keep_a_bare_face_bare(bare_face) -> None:  # type: ignore[no-untyped-def]
    crop, marks = bare_face
    augment = RealAugment(synthetic_mask=0.0, recolour=0.0, erase=0.0, hard_negatives=1.0)
    rng = np.random.default_rng(3)
    for _ in range(10):
        out, label = augment(crop, "no_mask", marks, CLASSES, rng)
        assert label == "no_mask" and out.shape == crop.shape
    assert augment(crop, "mask", marks, CLASSES, rng)[1] == "mask"


def test_recolouring_keeps_the_upper_face(bare_face) -> None:  # type: ignore[no-untyped-def]
    crop, marks = bare_face
    out = recolour_lower_face(crop, marks, "mask", np.random.default_rng(1))
    eyes_y = int(marks[:2, 1].mean())
    assert np.array_equal(out[:eyes_y], crop[:eyes_y])
    assert not np.array_equal(out[-20:], crop[-20:])


def test_real_augment_relabels_synthetic_masks(bare_face) -> None:  # type: ignore[no-untyped-def]
    crop, marks = bare_face
    augment = RealAugment(synthetic_mask=1.0)
    rng = np.random.default_rng(2)
    labels = {augment(crop, "no_mask", marks, CLASSES, rng)[1] for _ in range(30)}
    assert labels == {"mask", "incorrect"}
    two_class = {augment(crop, "no_mask", marks, ["mask", "no_mask"], rng)[1] for _ in range(10)}
    assert two_class == {"mask"}
    no_marks = np.full((5, 2), np.nan)
    out, label = augment(crop, "no_mask", no_marks, CLASSES, rng)
    assert label == "no_mask" and out.shape == crop.shape and out.dtype == np.uint8


def test_seed_geometry_keeps_size_and_changes_pixels(bare_face) -> None:  # type: ignore[no-untyped-def]
    crop, _ = bare_face
    out = seed_augment(crop, np.random.default_rng(3))
    assert out.shape == crop.shape and not np.array_equal(out, crop)


def _table(rows: list[tuple[int, list[float]]], sources: list[str] | None = None) -> Predictions:
    y = np.array([r[0] for r in rows])
    probs = np.array([r[1] for r in rows], np.float32)
    return Predictions(CLASSES, y, probs, sources or ["s"] * len(rows), np.full(len(rows), 50.0))


def test_mask_vs_no_mask_ignores_incorrect_faces_and_the_third_class() -> None:
    p = _table(
        [
            (0, [0.4, 0.1, 0.5]),  # mask, "incorrect" on top, but mask beats no_mask: right
            (0, [0.2, 0.7, 0.1]),  # wrong
            (1, [0.1, 0.8, 0.1]),  # right
            (2, [0.9, 0.05, 0.05]),  # an incorrect face: not counted
        ]
    )
    balanced, n = mask_vs_no_mask(p)
    assert n == 3 and balanced == pytest.approx((0.5 + 1.0) / 2)


def test_recall_at_precision_and_selective_accuracy() -> None:
    p = _table(
        [
            (2, [0.1, 0.1, 0.8]),
            (2, [0.2, 0.2, 0.6]),
            (0, [0.3, 0.2, 0.5]),
            (2, [0.5, 0.1, 0.4]),
            (1, [0.3, 0.6, 0.1]),
        ]
    )
    recall, threshold = recall_at_precision(p, "incorrect", 0.6)
    assert recall == pytest.approx(1.0) and threshold == pytest.approx(0.4)
    recall, threshold = recall_at_precision(p, "incorrect", 0.9)
    assert recall == pytest.approx(2 / 3) and threshold == pytest.approx(0.6)
    coverage, accuracy = selective(p, 0.55)
    assert coverage == pytest.approx(0.6) and accuracy == pytest.approx(1.0)


def test_threshold_is_the_lowest_that_reaches_the_target() -> None:
    confident_right = [(0, [0.95, 0.03, 0.02])] * 18
    unsure_wrong = [(1, [0.45, 0.35, 0.2])] * 2
    p = _table(confident_right + unsure_wrong)
    threshold = choose_threshold(p, target_accuracy=0.97, max_uncertain=0.15)
    assert 0.45 < threshold <= 0.95
    assert selective(p, threshold) == (pytest.approx(0.9), pytest.approx(1.0))


def test_confusion_and_per_class_figures_by_hand() -> None:
    # true:      mask mask mask no_mask no_mask incorrect
    # predicted: mask mask no_mask no_mask mask incorrect
    m = compute_metrics(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 0, 2]), CLASSES)
    assert m.confusion.tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m.n == 6 and m.accuracy == pytest.approx(4 / 6)
    assert m.recall() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert m.precision() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert m.f1() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    per_class = m.to_dict()["per_class"]
    assert per_class["mask"] == {"precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "support": 3}


def test_balanced_accuracy_ignores_a_class_absent_from_the_truth() -> None:
    # No incorrect face at all; one mask face called incorrect.
    m = compute_metrics(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1]), CLASSES)
    assert m.recall() == pytest.approx([0.5, 1.0, 0.0])
    assert m.balanced_accuracy == pytest.approx(0.75), "the absent class must not count as 0"
    assert m.precision()[2] == 0.0 and m.f1()[2] == 0.0


def test_headline_sets_leave_out_synthetic_sources_and_small_faces() -> None:
    rows = [
        (0, [0.9, 0.05, 0.05]),
        (1, [0.2, 0.7, 0.1]),
        (1, [0.6, 0.3, 0.1]),
        (2, [0.1, 0.1, 0.8]),
    ]
    sources = ["observations", "ilc", "ilc", "kary"]
    p = Predictions(
        CLASSES,
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows], np.float32),
        sources,
        np.array([50.0, 20.0, 30.0, 100.0]),
    )
    sets = headline_sets(p, ["observations"])
    assert {k: v.tolist() for k, v in sets.items()} == {
        "all": [True, True, True, True],
        "real, >= 24 px": [False, False, True, True],
        "ilc, >= 24 px": [False, False, True, False],
        "kary, >= 24 px": [False, False, False, True],
    }
    payload = summarise(p, 0.5, sets)
    assert payload["by_source"]["ilc"]["accuracy"] == 0.5
    assert payload["headline"]["all"]["accuracy"] == 0.75
    assert payload["headline"]["real, >= 24 px"]["n"] == 2
    assert payload["headline"]["real, >= 24 px"]["accuracy"] == 0.5
    # mask vs no_mask on all faces: mask 1/1 right, no_mask 1/2 right.
    assert payload["headline"]["all"]["mask_vs_no_mask_balanced_accuracy"] == 0.75
