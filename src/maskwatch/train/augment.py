"""Data augmentation on face crops (uint8 BGR, square).

`seed_augment` is the seed project's recipe (Keras ImageDataGenerator): rotation +-20 degrees,
width and height shift 0.2, zoom 0.15, horizontal flip, edges filled with the nearest pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class GeometryAugment:
    """Random affine jitter of a crop; ranges as in Keras' ImageDataGenerator."""

    rotation_deg: float = 20.0
    shift: float = 0.2
    zoom: float = 0.15
    flip: bool = True

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = crop.shape[0]
        angle = rng.uniform(-self.rotation_deg, self.rotation_deg)
        # Keras zooms by 1/z for z in [1 - zoom, 1 + zoom], separately per axis.
        zx, zy = 1.0 / rng.uniform(1 - self.zoom, 1 + self.zoom, size=2)
        tx, ty = rng.uniform(-self.shift, self.shift, size=2) * size
        centre = size / 2.0
        rot = cv2.getRotationMatrix2D((centre, centre), angle, 1.0)
        scale = np.array([[zx, 0, centre * (1 - zx)], [0, zy, centre * (1 - zy)], [0, 0, 1]])
        matrix = (np.vstack([rot, [0, 0, 1]]) @ scale)[:2]
        matrix[:, 2] += (tx, ty)
        out = cv2.warpAffine(
            crop, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        if self.flip and rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


seed_augment = GeometryAugment()
