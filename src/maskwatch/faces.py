"""Face detection (YuNet through ONNX Runtime: yunet.py) and the one way faces are framed.

Training and inference both frame crops with `crop_face`, so the classifier sees at run time
what it saw in training.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from maskwatch import hub
from maskwatch.defaults import (
    CROP_MARGIN,
    DETECT_MAX_SIDE,
    DETECT_MIN_SIDE,
    DETECT_MIN_SIDE_RANGE,
    DETECT_SCORE_THRESHOLD,
    DETECT_SIDE_RANGE,
    DETECT_VIDEO_SIDE,
    DETECT_WORKERS,
    SCORE_THRESHOLD_RANGE,
    SUBJECT_PAD,
    Range,
)
from maskwatch.errors import ModelError
from maskwatch.types import Faces
from maskwatch.yunet import YuNetSession


class FaceDetector(Protocol):
    """Anything that finds faces in a BGR image. `thorough` asks for a slower, more complete
    search (used for still photos, where there is no next frame to catch a missed face)."""

    def detect(self, image: np.ndarray, thorough: bool = False) -> Faces: ...


class YuNetDetector:
    """YuNet face detector.

    Video frames whose long side exceeds `video_side`, and photos beyond `max_side`, are
    scaled down for detection (boxes come back in original pixels): a 1280x720 frame is searched
    at 640x360, four times faster, finding faces from about 20 px in the original. A thorough
    search (still photos) also runs on the frame upscaled to `min_side` when it is smaller, so
    that faces of 20-40 px are found, and merges both passes by non-maximum suppression.
    `threads` is ONNX Runtime's for this detector (0: every core). Not for several threads at
    once: give each its own detector.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        score_threshold: float = DETECT_SCORE_THRESHOLD,
        nms_threshold: float = 0.3,
        min_side: int = DETECT_MIN_SIDE,
        max_side: int = DETECT_MAX_SIDE,
        video_side: int = DETECT_VIDEO_SIDE,
        threads: int = 0,
    ) -> None:
        for name, value, allowed in (
            ("score_threshold", score_threshold, SCORE_THRESHOLD_RANGE),
            ("nms_threshold", nms_threshold, Range(0, 1)),
            ("min_side", min_side, DETECT_MIN_SIDE_RANGE),
            ("max_side", max_side, DETECT_SIDE_RANGE),
            ("video_side", video_side, DETECT_SIDE_RANGE),
        ):
            allowed.check(name, value)  # the network would fail later with a bare error
        path = model_path if model_path is not None else hub.fetch(hub.YUNET.name)
        if not Path(path).is_file():
            raise ModelError(f"face detector model not found: {path}")
        self._session = YuNetSession(Path(path), threads)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_side = min_side
        self.max_side = max_side
        self.video_side = video_side

    def scales(self, width: int, height: int, thorough: bool) -> list[float]:
        """Resize factors to detect at: 1 (or down to the size limit), plus up to min_side if
        thorough."""
        long_side = max(width, height)
        limit = self.max_side if thorough else min(self.max_side, self.video_side)
        if long_side > limit:
            return [limit / long_side]
        if thorough and 0 < long_side < self.min_side:
            return [1.0, self.min_side / long_side]
        return [1.0]

    def _detect_at(self, image: np.ndarray, scale: float) -> np.ndarray:
        """Raw YuNet rows (x, y, w, h, 10 landmark coordinates, score) in original pixels."""
        if scale != 1.0:
            interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
            height, width = image.shape[:2]
            # At least one pixel: a 40000x1 strip scaled to 1920 wide would be 0 high.
            target = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, target, interpolation=interpolation)
        rows = self._session.run(image, self.score_threshold, self.nms_threshold)
        rows[:, :14] *= np.float32(1.0 / scale)
        return rows

    def detect(self, image: np.ndarray, thorough: bool = False) -> Faces:
        height, width = image.shape[:2]
        if height == 0 or width == 0:
            return Faces()
        passes = [self._detect_at(image, s) for s in self.scales(width, height, thorough)]
        found = np.concatenate(passes)
        if len(passes) > 1 and len(found) > 1:
            keep = cv2.dnn.NMSBoxes(
                found[:, :4].tolist(),
                found[:, 14].tolist(),
                self.score_threshold,
                self.nms_threshold,
            )
            found = found[np.asarray(keep, np.int64).reshape(-1)]
        if len(found) == 0:
            return Faces()
        boxes = np.concatenate([found[:, :2], found[:, :2] + found[:, 2:4]], axis=1)
        boxes = np.clip(boxes, 0, [width, height, width, height])
        return Faces.from_detections(boxes, found[:, 14], found[:, 4:14])


@dataclass
class _Turn:
    """A thread waiting for a detector; handed one directly when it is its turn."""

    ready: threading.Event = field(default_factory=threading.Event)
    detector: FaceDetector | None = None


class DetectorPool:
    """`size` face detectors as one FaceDetector, for several threads: each `detect` borrows
    one, waiting its turn in strict arrival order when all are busy (serve's streams share one
    pool; detect's successive frames of one stream use another)."""

    def __init__(self, make: Callable[[], FaceDetector], size: int) -> None:
        self.size = size
        self._free = [make() for _ in range(size)]
        self._waiting: deque[_Turn] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """Frames waiting for a detector now."""
        with self._lock:
            return len(self._waiting)

    def detect(self, image: np.ndarray, thorough: bool = False) -> Faces:
        detector = self._borrow()
        try:
            return detector.detect(image, thorough)
        finally:
            self._give_back(detector)

    def _borrow(self) -> FaceDetector:
        with self._lock:
            if self._free:
                return self._free.pop()
            turn = _Turn()
            self._waiting.append(turn)
        turn.ready.wait()
        assert turn.detector is not None
        return turn.detector

    def _give_back(self, detector: FaceDetector) -> None:
        with self._lock:
            if not self._waiting:
                self._free.append(detector)
                return
            turn = self._waiting.popleft()
        turn.detector = detector
        turn.ready.set()


def shared_detectors(make: Callable[[int], FaceDetector], size: int) -> DetectorPool:
    """`size` detectors lent in turn, each made by `make(threads)` with an equal share of the
    cores (more threads each would only fight over them)."""
    cores = os.cpu_count() or 1
    return DetectorPool(lambda: make(max(1, cores // size)), size)


def stream_detector(
    make: Callable[[int], FaceDetector], workers: int = DETECT_WORKERS
) -> DetectorPool:
    """Detectors for the successive frames of one stream (`detect`, `demo`): `workers` of them,
    no more than the cores."""
    return shared_detectors(make, max(1, min(workers, os.cpu_count() or 1)))


def parallel_frames(detector: FaceDetector) -> int:
    """How many frames `detector` can work on at once."""
    return detector.size if isinstance(detector, DetectorPool) else 1


def square_box(box: np.ndarray, margin: float = CROP_MARGIN) -> tuple[int, int, int]:
    """The square crop window for a face box: centred on it, its long side plus `margin` on each
    side. Returns (x0, y0, side) in pixels; the window may extend past the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return round(cx - side / 2.0), round(cy - side / 2.0), max(1, round(side))


def crop_face(
    image: np.ndarray, box: np.ndarray, size: int, margin: float = CROP_MARGIN
) -> np.ndarray:
    """One face as a `size`x`size` BGR crop; parts outside the frame are black.

    Only the part inside the frame is resized, into its place in the crop, so memory stays
    `size`x`size` however far the square window reaches past the frame (the window of a
    40000x1 strip classified whole is 40000 px square)."""
    x0, y0, side = square_box(box, margin)
    height, width = image.shape[:2]
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(width, x0 + side), min(height, y0 + side)
    crop = np.zeros((size, size, 3), np.uint8)
    scale = size / side
    dx0, dy0 = round((sx0 - x0) * scale), round((sy0 - y0) * scale)
    dx1, dy1 = round((sx1 - x0) * scale), round((sy1 - y0) * scale)
    if sx1 > sx0 and sy1 > sy0 and dx1 > dx0 and dy1 > dy0:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        crop[dy0:dy1, dx0:dx1] = cv2.resize(
            image[sy0:sy1, sx0:sx1], (dx1 - dx0, dy1 - dy0), interpolation=interpolation
        )
    return crop


# Where a frontal face's five YuNet landmarks (right eye, left eye, nose tip, right and left
# mouth corner) lie, in units of the face box's long side from the box's centre: the median of
# 113 frontal no-mask faces of kary and ilc (eyes level within 3% of the box), made symmetric.
FACE_TEMPLATE = np.array(
    [[-0.181, -0.112], [0.181, -0.112], [0.0, 0.096], [-0.158, 0.239], [0.158, 0.239]],
    np.float32,
)


def face_template(
    size: int, margin: float = CROP_MARGIN, offset: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """FACE_TEMPLATE in the pixels of a `size` crop framed like `square_box` frames a frontal
    face with `margin`, its window's centre moved by `offset` times the face box's side."""
    shifted = FACE_TEMPLATE - np.asarray(offset, np.float32)
    return np.float32(size / 2) + shifted * np.float32(size / (1.0 + 2.0 * margin))


def alignment(
    landmarks: np.ndarray,
    size: int,
    margin: float = CROP_MARGIN,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray | None:
    """The 2x3 similarity transform (rotation, uniform scale, shift) from photo pixels to the
    crop that takes a face's five landmarks onto `face_template`; None when the landmarks are
    missing or too degenerate to fix one."""
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    if not np.isfinite(points).all() or np.ptp(points, axis=0).max() < 1e-3:
        return None
    template = face_template(size, margin, offset)
    matrix, _ = cv2.estimateAffinePartial2D(points, template, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():
        return None
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    return matrix if scale > 1e-6 else None


def align_face(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The `size`x`size` BGR crop that `matrix` (from `alignment`) maps the photo onto; parts
    outside the frame are black. Only the window of the photo that lands in the crop is read,
    shrunk first with area averaging when the face is larger than the crop (as `crop_face`
    does), so a large face is not aliased."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    reach = corners @ inverse.T
    height, width = image.shape[:2]
    x0, y0 = (max(0, int(np.floor(v))) for v in reach.min(axis=0))
    x1, y1 = (
        min(width, int(np.ceil(reach[:, 0].max()))),
        min(height, int(np.ceil(reach[:, 1].max()))),
    )
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)
    window = image[y0:y1, x0:x1]
    to_crop = matrix.astype(np.float64).copy()
    to_crop[:, 2] += to_crop[:, :2] @ np.array([x0, y0], np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 1.0:
        target = (max(1, round(window.shape[1] * scale)), max(1, round(window.shape[0] * scale)))
        window = cv2.resize(window, target, interpolation=cv2.INTER_AREA)
        ratio = np.array([(x1 - x0) / window.shape[1], (y1 - y0) / window.shape[0]])
        # cv2.resize maps pixel centres: window pixel w = ratio * (q + 0.5) - 0.5.
        to_crop[:, 2] += to_crop[:, :2] @ (0.5 * (ratio - 1.0))
        to_crop[:, :2] = to_crop[:, :2] @ np.diag(ratio)
    return cv2.warpAffine(
        window, to_crop, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 2) points mapped by a 2x3 affine matrix."""
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def crop_faces(
    image: np.ndarray, boxes: np.ndarray, size: int, margin: float = CROP_MARGIN
) -> np.ndarray:
    """All faces of a frame as one (N, size, size, 3) uint8 BGR batch."""
    if len(boxes) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([crop_face(image, box, size, margin) for box in boxes])


def largest_face(faces: Faces) -> int | None:
    """Index of the largest detected face, or None when there is none."""
    if len(faces) == 0:
        return None
    areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    return int(np.argmax(areas))


def find_subject(
    detector: FaceDetector, image: np.ndarray, pad: float = SUBJECT_PAD
) -> np.ndarray | None:
    """The box of the largest face in a photo of one person, or None when there is none.

    The photo is searched inside a black border of `pad` times its width and height on each side
    (scaled down first so the whole stays within DETECT_MAX_SIDE), so a face that fills the photo
    or is cut by its edge is found whole; when that finds nothing, the photo as it is (some
    tight crops are found only so). The box is in the photo's pixels and may reach past it,
    where the face was cut; `crop_face` frames it as `detect` frames any face.
    """
    height, width = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / ((1.0 + 2.0 * pad) * max(width, height)))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    pad_y, pad_x = round(pad * small.shape[0]), round(pad * small.shape[1])
    padded = cv2.copyMakeBorder(small, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=0)
    faces = detector.detect(padded, thorough=True)
    largest = largest_face(faces)
    if largest is not None:
        offset = np.array([pad_x, pad_y, pad_x, pad_y], np.float32)
        return (faces.boxes[largest] - offset) / np.float32(scale)
    faces = detector.detect(image, thorough=True)
    largest = largest_face(faces)
    return None if largest is None else faces.boxes[largest]
