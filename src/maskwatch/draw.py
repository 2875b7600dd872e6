"""Overlays: a coloured box and "Mask 97%" label per face, and an FPS counter."""

from __future__ import annotations

import cv2
import numpy as np

from maskwatch.labels import COLOURS, DISPLAY
from maskwatch.types import NO_TRACK, Faces

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


def draw_faces(image: np.ndarray, faces: Faces) -> np.ndarray:
    """A copy of `image` with every face boxed and labelled."""
    out = image.copy()
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
