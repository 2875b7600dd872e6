"""Near-duplicate photos: difference hashes robust to re-encoding, resizing, mirroring and
moderate central crops.

Each photo gets two 64-bit hashes, of the whole picture and of its central 80%, plus the same
two of its mirror image. Two photos are near-duplicates when any whole/centre pairing, direct or
mirrored, is within `HASH_DISTANCE` bits; a photo cropped to its centre matches the original's
centre hash. split.py merges their groups (so a photo and its near-copy land on the same side
of a split) and warns when a split puts near-copies on both sides anyway.
"""

from __future__ import annotations

import cv2
import numpy as np

HASH_DISTANCE = 6  # of 64 bits; re-encoded or resized copies typically differ by 0-3
CENTRE = 0.8


def dhash(image: np.ndarray) -> np.uint64:
    """64-bit difference hash of a BGR image: signs of horizontal gradients on a 9x8 thumbnail."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return np.uint64(int("".join("1" if b else "0" for b in bits), 2))


def _centre(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    dy, dx = round(h * (1 - CENTRE) / 2), round(w * (1 - CENTRE) / 2)
    return image[dy : h - dy, dx : w - dx]


def photo_hashes(
    image: np.ndarray,
) -> tuple[tuple[np.uint64, np.uint64], tuple[np.uint64, np.uint64]]:
    """((whole, centre), (whole, centre) of the mirror image)."""
    flipped = image[:, ::-1]
    return (dhash(image), dhash(_centre(image))), (dhash(flipped), dhash(_centre(flipped)))


def near_duplicate_pairs(
    hashes: np.ndarray, mirrored: np.ndarray, max_distance: int = HASH_DISTANCE
) -> list[tuple[int, int]]:
    """Index pairs (i < j) of photos within `max_distance` bits in any pairing.

    `hashes` and `mirrored` are (N, 2) arrays of (whole, centre) hashes.
    """
    h = np.asarray(hashes, np.uint64).reshape(len(hashes), -1)
    m = np.asarray(mirrored, np.uint64).reshape(len(mirrored), -1)
    pairs: list[tuple[int, int]] = []
    for i in range(len(h) - 1):
        rest = h[i + 1 :]
        best = np.full(len(rest), 64, np.int64)
        for mine in (*h[i], *m[i]):
            best = np.minimum(best, np.bitwise_count(rest ^ mine).min(axis=1))
        close = np.flatnonzero(best <= max_distance)
        pairs.extend((i, i + 1 + int(j)) for j in close)
    return pairs
