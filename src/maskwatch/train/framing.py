"""Training crops framed like `detect` frames them: the detector's box with the same margin.

Every photo goes through YuNet (the thorough search `detect` uses on photos). Class-folder
images contribute their largest face (the whole image when none is found); one-label folders
contribute every face found that is large and clear enough; a VOC box is replaced by the
detection that overlaps it best (IoU >= 0.4), so the classifier learns on the framing it will see
at run time, and is kept as drawn when nothing matches.

`align=True` (for comparison only; `detect` and `classify` frame square crops) frames each face
by its five landmarks instead, onto a canonical face template (faces.alignment); a face without
landmarks (a box kept as drawn, a whole image) keeps its square crop.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from maskwatch.defaults import FRAMING_OFFSET, LOOSE_MARGIN, TIGHT_MARGIN
from maskwatch.errors import SourceError
from maskwatch.faces import (
    FaceDetector,
    align_face,
    alignment,
    crop_face,
    largest_face,
    square_box,
    transform_points,
)
from maskwatch.images import load_image
from maskwatch.tracking import iou_matrix
from maskwatch.train.data import ANNOTATED, LARGEST_FACE, SUBJECT, Sample
from maskwatch.train.dedup import photo_hashes
from maskwatch.types import Faces

log = logging.getLogger("maskwatch")

MATCH_IOU = 0.4
# Faces taken from unannotated photos must be clear: the label is assumed, not checked.
SUBJECT_MIN_SIDE = 24
SUBJECT_MIN_SCORE = 0.7


@dataclass
class FramedSet:
    """Crops of the faces that could be framed, and one entry per distinct photo.

    landmarks are in crop pixels, photo_landmarks in photo pixels (NaN where the face came from
    an annotation or the whole image); face_sizes are the shorter side of each face box in photo
    pixels. `aligned` says which crops were aligned by their landmarks (`align` asked for it).
    """

    crops: np.ndarray
    samples: list[Sample]
    photo_of: np.ndarray
    landmarks: np.ndarray
    face_sizes: np.ndarray
    photo_landmarks: np.ndarray
    aligned: np.ndarray
    align: bool = False
    photos: list[str] = field(default_factory=list)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.uint64))
    mirrored: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.uint64))
    framing: Counter[str] = field(default_factory=Counter)

    def subset(self, mask: np.ndarray) -> FramedSet:
        """The faces where `mask` is true (photos and hashes are shared, not filtered)."""
        idx = np.flatnonzero(mask)
        return replace(
            self,
            crops=self.crops[idx],
            samples=[self.samples[i] for i in idx],
            photo_of=self.photo_of[idx],
            landmarks=self.landmarks[idx],
            face_sizes=self.face_sizes[idx],
            photo_landmarks=self.photo_landmarks[idx],
            aligned=self.aligned[idx],
        )


_NO_LANDMARKS = np.full((5, 2), np.nan, np.float32)


def frame_face(
    image: np.ndarray,
    box: np.ndarray,
    marks: np.ndarray,
    size: int,
    margin: float,
    offset: tuple[float, float] = (0.0, 0.0),
    align: bool = False,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """One face's crop, its landmarks in crop pixels, and whether it was aligned: by its
    landmarks when `align` and they fix a transform, else the square window around its box
    (moved by `offset` times the box's long side)."""
    matrix = alignment(marks, size, margin, offset) if align else None
    if matrix is not None:
        return align_face(image, matrix, size), transform_points(matrix, marks), True
    side = max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0)
    moved = box + np.tile(np.asarray(offset, np.float32) * side, 2)
    x0, y0, window = square_box(moved, margin)
    crop_marks = (marks - np.array([x0, y0], np.float32)) * np.float32(size / window)
    return crop_face(image, moved, size, margin), crop_marks.astype(np.float32), False


def _outside(sample: Sample, image: np.ndarray) -> bool:
    """Whether an annotated box lies entirely outside its photo."""
    if sample.kind != ANNOTATED or sample.box is None:
        return False
    x1, y1, x2, y2 = sample.box
    height, width = image.shape[:2]
    return x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height


def _faces_of(
    sample: Sample, image: np.ndarray, faces: Faces, use_detector: bool
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(box, landmarks, how it was framed) for each face this sample stands for."""
    if sample.kind == SUBJECT:
        sides = np.minimum(
            faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1]
        )
        clear = (sides >= SUBJECT_MIN_SIDE) & (faces.scores >= SUBJECT_MIN_SCORE)
        if not clear.any():
            return []
        best = int(np.flatnonzero(clear)[np.argmax(sides[clear])])
        return [(faces.boxes[best], faces.landmarks[best], "detected")]
    if sample.kind == LARGEST_FACE:
        largest = largest_face(faces)
        if largest is not None:
            return [(faces.boxes[largest], faces.landmarks[largest], "detected")]
        h, w = image.shape[:2]
        return [(np.array([0, 0, w, h], np.float32), _NO_LANDMARKS, "whole image")]
    box = np.asarray(sample.box, np.float32)
    if use_detector and len(faces):
        overlap = iou_matrix(box[None], faces.boxes)[0]
        best = int(np.argmax(overlap))
        if overlap[best] >= MATCH_IOU:
            return [(faces.boxes[best], faces.landmarks[best], "matched detection")]
    return [(box, _NO_LANDMARKS, "annotated box")]


def frame_samples(
    samples: list[Sample],
    detector: FaceDetector,
    size: int,
    margin: float,
    use_detector: bool = True,
    align: bool = False,
) -> FramedSet:
    """Read every photo once, detect its faces, and crop the faces of its samples.

    `use_detector=False` crops VOC boxes exactly as annotated (for comparison only); `align`
    aligns the crops of faces with landmarks (module docstring).
    """
    by_photo: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_photo.setdefault(str(s.image), []).append(i)
    crops: list[np.ndarray] = []
    kept: list[Sample] = []
    photo_of: list[int] = []
    landmarks: list[np.ndarray] = []
    photo_landmarks: list[np.ndarray] = []
    aligned: list[bool] = []
    sizes: list[float] = []
    photos: list[str] = []
    hashes: list[tuple[np.uint64, np.uint64]] = []
    mirrored: list[tuple[np.uint64, np.uint64]] = []
    framing: Counter[str] = Counter()
    outside = 0
    for photo, members in by_photo.items():
        try:
            image = load_image(samples[members[0]].image)
        except SourceError as exc:
            log.warning("skipping %s", exc)
            continue
        faces = detector.detect(image, thorough=True)
        found_any = False
        for i in members:
            if _outside(samples[i], image):
                outside += 1
                continue
            for box, marks, how in _faces_of(samples[i], image, faces, use_detector):
                framing[how] += 1
                crop, crop_marks, was_aligned = frame_face(
                    image, box, marks, size, margin, align=align
                )
                if align:
                    framing["aligned by landmarks" if was_aligned else "square: no landmarks"] += 1
                crops.append(crop)
                x1, y1, x2, y2 = (round(float(v)) for v in box)
                kept.append(replace(samples[i], box=(x1, y1, x2, y2)))
                photo_of.append(len(photos))
                landmarks.append(crop_marks)
                photo_landmarks.append(np.asarray(marks, np.float32))
                aligned.append(was_aligned)
                sizes.append(float(min(box[2] - box[0], box[3] - box[1])))
                found_any = True
        if not found_any:
            framing["photos without a usable face"] += 1
        photos.append(photo)
        direct, flipped = photo_hashes(image)
        hashes.append(direct)
        mirrored.append(flipped)
    if outside:
        log.warning("skipped %d annotated boxes entirely outside their photo", outside)
    return FramedSet(
        crops=np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        samples=kept,
        photo_of=np.asarray(photo_of, np.int64),
        landmarks=np.asarray(landmarks, np.float32).reshape(-1, 5, 2),
        face_sizes=np.asarray(sizes, np.float32),
        photo_landmarks=np.asarray(photo_landmarks, np.float32).reshape(-1, 5, 2),
        aligned=np.asarray(aligned, bool),
        align=align,
        photos=photos,
        hashes=np.asarray(hashes, np.uint64).reshape(-1, 2),
        mirrored=np.asarray(mirrored, np.uint64).reshape(-1, 2),
        framing=framing,
    )


def reframe(
    framed: FramedSet, margins: np.ndarray, offsets: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The faces of `framed` cropped again from their photos with another margin per face
    (0 = the face box alone), the window's centre moved by `offsets` (N, 2) times the box side,
    aligned by their landmarks where `framed` was; and their landmarks in the new crops' pixels.
    Each photo is read once."""
    n, size = len(framed.samples), framed.crops.shape[1] if len(framed.crops) else 0
    crops = np.zeros((n, size, size, 3), np.uint8)
    landmarks = np.full((n, 5, 2), np.nan, np.float32)
    shift = np.zeros((n, 2), np.float32) if offsets is None else offsets
    by_photo: dict[str, list[int]] = {}
    for i, s in enumerate(framed.samples):
        by_photo.setdefault(str(s.image), []).append(i)
    for photo, members in by_photo.items():
        try:
            image = load_image(Path(photo))
        except SourceError as exc:
            log.warning("skipping %s", exc)
            continue
        for i in members:
            crops[i], landmarks[i], _ = frame_face(
                image,
                np.asarray(framed.samples[i].box, np.float32),
                framed.photo_landmarks[i],
                size,
                float(margins[i]),
                (float(shift[i, 0]), float(shift[i, 1])),
                align=bool(framed.aligned[i]),
            )
    return crops, landmarks


def jittered_framing(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random margins from tight to loose and random off-centre shifts, one per face."""
    margins = rng.uniform(TIGHT_MARGIN, LOOSE_MARGIN, size=n)
    offsets = rng.uniform(-FRAMING_OFFSET, FRAMING_OFFSET, size=(n, 2))
    return margins, offsets
