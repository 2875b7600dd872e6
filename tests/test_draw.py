"""Overlays: labels kept inside the image, settled and unsettled labels told apart."""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.draw import draw_faces, face_caption, place_label
from maskwatch.labels import COLOURS
from maskwatch.types import Faces

CLASSES = ("mask", "no_mask", "incorrect")


def _faces(box: list[float], label: str, settled: bool, track: int = 19) -> Faces:
    faces = Faces.from_detections(np.array([box]), np.array([0.9]), np.zeros((1, 5, 2)))
    probs = np.array([[0.2, 0.14, 0.66]])
    faces = faces.with_predictions(probs, CLASSES, (label,), (settled,))
    return faces.with_tracks(np.array([track]))


def _coloured(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - colour) <= 2, axis=2)


@pytest.mark.parametrize(
    ("box", "size"),
    [
        ((600, 5, 638, 60), (640, 480)),  # at the right edge: "#19 Mask worn..." ran off it
        ((0, 0, 40, 40), (640, 480)),  # top left: below the top edge
        ((300, 440, 340, 479), (640, 480)),
        ((5, 5, 60, 60), (120, 90)),  # an image narrower than the label: drawn smaller
    ],
)
def test_labels_stay_inside_the_image(
    box: tuple[int, int, int, int], size: tuple[int, int]
) -> None:
    text = face_caption("incorrect", 0.66, 19)
    (x1, y1, x2, y2), _ = place_label(text, box, size, 1.2)
    assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]


def test_a_label_at_the_right_edge_is_drawn_whole_inside_the_frame() -> None:
    image = np.full((480, 640, 3), 90, np.uint8)
    out = draw_faces(image, _faces([600, 100, 638, 140], "incorrect", True))
    pill = _coloured(out, COLOURS["incorrect"])
    columns = np.flatnonzero(pill[60:100].any(axis=0))
    assert columns.min() < 600 - 100, "the label moved left to fit"
    text = np.all(out[60:100, columns.min() : 640] == 255, axis=2)
    assert text.any(axis=0)[-40:].sum() < text.any(axis=0)[:-40].sum()  # not cut at the edge


def test_settled_and_unsettled_faces_are_drawn_differently() -> None:
    image = np.full((480, 640, 3), 90, np.uint8)
    box = [200, 200, 320, 340]
    colour = COLOURS["no_mask"]
    solid = draw_faces(image, _faces(box, "no_mask", True))
    dashed = draw_faces(image, _faces(box, "no_mask", False))
    left_edge = slice(210, 330), 200  # the box's left side, below its label
    assert _coloured(solid[left_edge][:, None], colour).mean() == 1.0
    assert 0.3 < _coloured(dashed[left_edge][:, None], colour).mean() < 0.8
    label = slice(180, 199), slice(200, 320)
    assert _coloured(solid[label], colour).mean() > 0.5  # a filled pill
    assert _coloured(dashed[label], colour).mean() < 0.3  # a dark pill, coloured outline/text
