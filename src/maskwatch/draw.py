"""Overlays: a coloured box and "Mask 97%" label per face, pixelated faces, an FPS counter, and
the `Annotator` that every annotating output (saved images and video, the window, a server
camera's MJPEG stream) owns.

A settled label (what events and the dashboard count) has a solid box and a filled label; one
still settling a dashed box and a dark label outlined in its colour. Labels stay inside the
image."""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from maskwatch.defaults import Blur
from maskwatch.labels import COLOURS, DISPLAY, MASK
from maskwatch.types import NO_TRACK, Faces, FrameResult

_FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_LABEL_SCALE = 0.3  # labels shrink to fit a small image, down to this
UNSETTLED_FILL = (40, 40, 40)  # BGR: the dark pill of a label that has not settled


def face_caption(label: str | None, confidence: float, track: int = NO_TRACK) -> str:
    """'Mask 97%', 'No mask 88%', with '#id ' in front when the face is tracked."""
    text = DISPLAY.get(label or "", "Face")
    if label:
        text = f"{text} {round(confidence * 100)}%"
    return f"#{track} {text}" if track != NO_TRACK else text


def _label_size(text: str, scale: float) -> tuple[int, int, int, int]:
    """Width and height of the label's pill, and the text's height and thickness."""
    thickness = max(1, round(scale * 2))
    (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    return tw + 6, th + baseline + 4, th, thickness


def place_label(
    text: str, box: tuple[int, int, int, int], size: tuple[int, int], scale: float
) -> tuple[tuple[int, int, int, int], float]:
    """Where a face's label goes, (x1, y1, x2, y2), and at what scale: over the box's top left
    corner, kept inside an image of `size` (width, height) by moving it left, below the top edge,
    or drawing it smaller."""
    width, height = size
    w, h = _label_size(text, scale)[:2]
    while w > width and scale > MIN_LABEL_SCALE:
        scale = max(MIN_LABEL_SCALE, scale * 0.8)
        w, h = _label_size(text, scale)[:2]
    x = max(0, min(box[0], width - w))
    top = box[1] - h if box[1] - h >= 0 else box[1]
    top = max(0, min(top, height - h))
    return (x, top, x + w, top + h), scale


def _put_label(
    image: np.ndarray,
    text: str,
    box: tuple[int, int, int, int],
    colour: tuple[int, int, int],
    scale: float,
    settled: bool = True,
) -> None:
    """A settled label is a pill filled with the label's colour; an unsettled one a dark pill
    outlined in it. The text is white."""
    height, width = image.shape[:2]
    (x1, y1, x2, y2), scale = place_label(text, box, (width, height), scale)
    th, thickness = _label_size(text, scale)[2:]
    cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour if settled else UNSETTLED_FILL, -1)
    if not settled:
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, max(1, thickness // 2 + 1))
    white = (255, 255, 255)
    cv2.putText(image, text, (x1 + 3, y1 + th + 2), _FONT, scale, white, thickness, cv2.LINE_AA)


def _dashed_rectangle(
    image: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int], thickness: int
) -> None:
    """A rectangle drawn as dashes: the box of a face whose label has not settled."""
    x1, y1, x2, y2 = box
    dash, gap = 4 * thickness + 4, 3 * thickness + 3
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    for (ax, ay), (bx, by) in itertools.pairwise(corners):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, max(length, 1), dash + gap):
            end = min(start + dash, length)
            f0, f1 = start / max(length, 1), end / max(length, 1)
            p0 = (round(ax + (bx - ax) * f0), round(ay + (by - ay) * f0))
            p1 = (round(ax + (bx - ax) * f1), round(ay + (by - ay) * f1))
            cv2.line(image, p0, p1, colour, thickness)


def blur_faces(image: np.ndarray, faces: Faces, which: Blur) -> np.ndarray:
    """A copy of `image` with faces made unrecognisable (strong pixelation): with NO_MASK every
    face not labelled `mask` (`no_mask`, `incorrect`, and `uncertain` too: privacy errs on the
    safe side), with ALL every face."""
    if which == Blur.NONE or len(faces) == 0:
        return image
    out = image.copy()
    height, width = out.shape[:2]
    for i, box in enumerate(faces.boxes):
        label = faces.labels[i] if faces.labels else None
        if which == Blur.NO_MASK and label == MASK:
            continue
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        region = out[y1:y2, x1:x2]
        small = cv2.resize(region, (6, 6), interpolation=cv2.INTER_AREA)
        out[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    return out


def draw_faces(image: np.ndarray, faces: Faces, blur: Blur = Blur.NONE) -> np.ndarray:
    """A copy of `image` with every face boxed and labelled (and blurred as `blur` asks)."""
    out = blur_faces(image, faces, blur) if blur != Blur.NONE else image.copy()
    base = max(out.shape[:2]) / 1000.0
    thickness = max(2, round(base * 3))
    confidences = faces.confidences()
    for i, box in enumerate(faces.boxes):
        label = faces.labels[i] if faces.labels else None
        settled = bool(faces.settled[i]) if faces.settled else True
        colour = COLOURS.get(label or "", (200, 200, 200))
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        if settled:
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        else:
            _dashed_rectangle(out, (x1, y1, x2, y2), colour, thickness)
        caption = face_caption(label, float(confidences[i]), int(faces.tracks[i]))
        scale = float(np.clip((x2 - x1) / 160.0, 0.4, 1.2) * max(1.0, base))
        _put_label(out, caption, (x1, y1, x2, y2), colour, scale, settled)
    return out


def draw_fps(image: np.ndarray, fps: float) -> None:
    """Frames-per-second counter in the top left corner, drawn in place."""
    text = f"{fps:.1f} FPS"
    cv2.putText(image, text, (10, 28), _FONT, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(image, text, (10, 28), _FONT, 0.8, (255, 255, 255), 2, cv2.LINE_AA)


class Annotator:
    """Draws a result's faces (blurred as `blur` asks) once per result, however many outputs
    show it: the window and a saved video share one drawing."""

    def __init__(self, blur: Blur | str = Blur.NONE) -> None:
        self.blur = Blur(blur)
        self._last: tuple[FrameResult, np.ndarray] | None = None

    def __call__(self, result: FrameResult) -> np.ndarray:
        """The annotated frame; callers that draw on it must copy it first. Safe from several
        threads (a server camera's recording and its MJPEG readers): at worst a frame is drawn
        twice."""
        last = self._last
        if last is None or last[0] is not result:
            last = self._last = (result, draw_faces(result.frame.image, result.faces, self.blur))
        return last[1]
