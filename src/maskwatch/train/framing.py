"""Training crops framed like `detect` frames them: the detector's box with the same margin.

Class-folder images get the largest face YuNet finds (the whole image when it finds none);
VOC boxes are replaced by the detector box that overlaps them best (IoU >= 0.4), so that the
classifier learns on the framing it will see at run time; unmatched boxes are kept as drawn.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from maskwatch.faces import FaceDetector, crop_face, largest_face
from maskwatch.sources import read_image
from maskwatch.train.data import Sample
from maskwatch.train.dedup import photo_hashes
from maskwatch.types import Faces

log = logging.getLogger("maskwatch")

MATCH_IOU = 0.4


@dataclass
class FramedSet:
    """Crops of the samples that could be read, and one entry per distinct photo."""

    crops: np.ndarray
    samples: list[Sample]
    photo_of: np.ndarray  # index into photos, per sample
    photos: list[str] = field(default_factory=list)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    mirrored: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    framing: Counter[str] = field(default_factory=Counter)
    face_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1y1x2y2 box with each row of `boxes`."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _frame_box(sample: Sample, image: np.ndarray, faces: Faces) -> tuple[np.ndarray, str]:
    found = faces.boxes
    if sample.box is None:
        largest = largest_face(faces)
        if largest is not None:
            return found[largest], "detected"
        h, w = image.shape[:2]
        return np.array([0, 0, w, h], np.float32), "whole image"
    box = np.asarray(sample.box, np.float32)
    if len(found):
        overlap = box_iou(box, found)
        best = int(np.argmax(overlap))
        if overlap[best] >= MATCH_IOU:
            return found[best], "matched detection"
    return box, "annotated box"


def frame_samples(
    samples: list[Sample], detector: FaceDetector, size: int, margin: float
) -> FramedSet:
    """Read every photo once, detect its faces, and crop each of its samples."""
    by_photo: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_photo.setdefault(str(s.image), []).append(i)
    crops: list[np.ndarray] = []
    kept: list[Sample] = []
    photo_of: list[int] = []
    photos: list[str] = []
    hashes: list[np.uint64] = []
    mirrored: list[np.uint64] = []
    sizes: list[float] = []
    framing: Counter[str] = Counter()
    for photo, members in by_photo.items():
        image = read_image(samples[members[0]].image)
        if image is None:
            log.warning("skipping %s: not a readable image", photo)
            continue
        faces = detector.detect(image, thorough=True)
        h, m = photo_hashes(image)
        for i in members:
            box, how = _frame_box(samples[i], image, faces)
            framing[how] += 1
            crops.append(crop_face(image, box, size, margin))
            kept.append(samples[i])
            photo_of.append(len(photos))
            sizes.append(float(min(box[2] - box[0], box[3] - box[1])))
        photos.append(photo)
        hashes.append(h)
        mirrored.append(m)
    return FramedSet(
        crops=np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        samples=kept,
        photo_of=np.asarray(photo_of, np.int64),
        photos=photos,
        hashes=np.asarray(hashes, np.uint64),
        mirrored=np.asarray(mirrored, np.uint64),
        framing=framing,
        face_sizes=np.asarray(sizes, np.float32),
    )
