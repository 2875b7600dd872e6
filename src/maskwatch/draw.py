"""Overlays: a coloured box and "Mask 97%" label per face, pixelated faces, an FPS counter, and
the `Annotator` that every annotating output (saved images and video, the window, a server
camera's MJPEG stream) owns."""

from __future__ import annotations

import cv2
import numpy as np

from maskwatch.defaults import Blur
from maskwatch.labels import COLOURS, DISPLAY, MASK
from maskwatch.types import NO_TRACK, Faces, FrameResult

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def face_caption(label: str | None, confidence: float, track: int = NO_TRACK) -> str:
    """'Mask 97%', 'No mask 88%', with '#id ' in front when the face is tracked."""
    text = DISPLAY.get(label or "", "Face")
    if label:
        text = f"{text} {round(confidence * 100)}%"
    return f"#{track} {text}" if track != NO_TRACK else text


def _put_label(
    image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float
) -> None:
    thickness = max(1, round(scale * 2))
    (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    top = y - th - baseline - 4
    if top < 0:
        top = y
    cv2.rectangle(image, (x, top), (x + tw + 6, top + th + baseline + 4), colour, cv2.FILLED)
    cv2.putText(
        image, text, (x + 3, top + th + 2), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA
    )


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
    confidences = faces.confidences()
    for i, box in enumerate(faces.boxes):
        label = faces.labels[i] if faces.labels else None
        colour = COLOURS.get(label or "", (200, 200, 200))
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, max(2, round(base * 3)))
        caption = face_caption(label, float(confidences[i]), int(faces.tracks[i]))
        scale = float(np.clip((x2 - x1) / 160.0, 0.4, 1.2) * max(1.0, base))
        _put_label(out, caption, x1, y1, colour, scale)
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
        """The annotated frame; callers that draw on it must copy it first."""
        if self._last is None or self._last[0] is not result:
            self._last = (result, draw_faces(result.frame.image, result.faces, self.blur))
        return self._last[1]
