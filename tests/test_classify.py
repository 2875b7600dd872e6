"""`maskwatch classify` frames the face itself: real photos where the face fills the picture, where
the person is small in it, and where there is no face."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATASETS, MIRROR, run_cli
from maskwatch.faces import find_subject, largest_face
from maskwatch.images import load_image
from maskwatch.pipeline import classify_photo
from maskwatch.tracking import iou_matrix
from maskwatch.types import Frame, Mode

GROUP_PHOTO = MIRROR / "05fe38c36a13204e986c5558169cf0d4.jpg"  # people in a street
ILC_PHOTO = DATASETS / "ilc" / "images" / "177cd8213775da3a8ea5785f72f79a56.jpg"
ILC_MASKED_FACE = (slice(79, 192), slice(443, 532))  # its annotated box: a mask, forehead to chin
SMALL_FACE_PHOTO = DATASETS / "kary" / "incorrect" / "p1_inc_138.jpg"  # mask on the chin


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    street = load_image(GROUP_PHOTO)
    return {
        "tight": load_image(ILC_PHOTO)[ILC_MASKED_FACE],
        "person": street[80:432, 240:390],  # a woman in a black mask, head to knees
        "small": load_image(SMALL_FACE_PHOTO),
        "road": street[300:, :],  # legs and the street: no face
    }


def test_a_face_that_fills_the_image_is_found_in_a_border(detector, images) -> None:  # type: ignore[no-untyped-def]
    tight = images["tight"]
    assert len(detector.detect(tight, thorough=True)) == 0  # as it is, YuNet misses it
    box = find_subject(detector, tight)
    assert box is not None
    height, width = tight.shape[:2]
    # The face reaches past the crop where it was cut; the box stays in the crop's pixels.
    assert box[1] < 0 and box[3] > 0.9 * height and 0 < (box[0] + box[2]) / 2 < width


def test_the_largest_face_is_framed_as_detect_frames_it(pipeline, images) -> None:  # type: ignore[no-untyped-def]
    for name in ("person", "small"):
        image = images[name]
        seen = pipeline.process(Frame(image, 0, 0.0, name, Mode.PHOTO)).faces
        largest = largest_face(seen)
        assert largest is not None
        result = classify_photo(pipeline.classifier, image, name, pipeline.detector)
        assert result.framed == "face" and result.box is not None
        assert iou_matrix(np.array([result.box]), seen.boxes[largest : largest + 1])[0, 0] > 0.9
        assert result.label == seen.labels[largest]
        for label, p in result.probs.items():
            assert abs(p - seen.probs[largest][seen.classes.index(label)]) < 0.05


def test_an_image_without_a_face_is_classified_whole(pipeline, images) -> None:  # type: ignore[no-untyped-def]
    road = images["road"]
    framed = classify_photo(pipeline.classifier, road, "road", pipeline.detector)
    whole = classify_photo(pipeline.classifier, road, "road")
    assert framed.framed == whole.framed == "image" and framed.box is None
    assert framed.probs == whole.probs
    assert "box" not in framed.to_dict()


def test_classify_says_how_each_image_was_framed(tmp_path: Path, images) -> None:  # type: ignore[no-untyped-def]
    for name, image in images.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), image)
    rows = {}
    for flags in ((), ("--no-reframe",)):
        run = run_cli("classify", str(tmp_path), *flags)
        assert run.returncode == 0, run.stderr
        rows[flags] = {Path(r["path"]).stem: r for r in map(json.loads, run.stdout.splitlines())}
    reframed, whole = rows[()], rows[("--no-reframe",)]
    assert {n: r["framed"] for n, r in reframed.items()} == {
        "tight": "face",
        "person": "face",
        "small": "face",
        "road": "image",
    }
    assert all(r["framed"] == "image" and "box" not in r for r in whole.values())
    assert all(len(r["box"]) == 4 for r in reframed.values() if r["framed"] == "face")
    # Framed on the face, the small faces are labelled what they are; whole, they are not sure.
    assert reframed["person"]["label"] == "mask" and reframed["small"]["label"] == "incorrect"
    assert reframed["tight"]["label"] == "mask"
    assert whole["person"]["confidence"] < reframed["person"]["confidence"]
    assert whole["small"]["confidence"] < reframed["small"]["confidence"]
    assert reframed["road"] == whole["road"]
