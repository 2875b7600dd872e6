"""Near-duplicate photos: a difference hash robust to re-encoding, resizing and mirroring.

Used to merge groups (so a photo and its near-copy land on the same side of a split) and to
warn when a split would put near-copies on both sides anyway.
"""

from __future__ import annotations

import cv2
import numpy as np

HASH_DISTANCE = 6  # of 64 bits; re-encoded or resized copies typically differ by 0-3


def dhash(image: np.ndarray) -> np.uint64:
    """64-bit difference hash of a BGR image: signs of horizontal gradients on a 9x8 thumbnail."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return np.uint64(int("".join("1" if b else "0" for b in bits), 2))


def photo_hashes(image: np.ndarray) -> tuple[np.uint64, np.uint64]:
    """Hashes of the photo and of its mirror image."""
    return dhash(image), dhash(image[:, ::-1])


def near_duplicate_pairs(
    hashes: np.ndarray, mirrored: np.ndarray, max_distance: int = HASH_DISTANCE
) -> list[tuple[int, int]]:
    """Index pairs (i < j) of photos within `max_distance` bits, directly or mirrored."""
    pairs: list[tuple[int, int]] = []
    h = hashes.astype(np.uint64)
    m = mirrored.astype(np.uint64)
    for i in range(len(h) - 1):
        rest = h[i + 1 :]
        direct = np.bitwise_count(rest ^ h[i])
        flipped = np.bitwise_count(rest ^ m[i])
        close = np.nonzero(np.minimum(direct, flipped) <= max_distance)[0]
        pairs.extend((i, i + 1 + int(j)) for j in close)
    return pairs


def merge_groups(groups: list[str], pairs: list[tuple[int, int]]) -> list[str]:
    """Groups joined wherever a pair links them (union-find); returns a group key per item."""
    parent: dict[str, str] = {g: g for g in groups}

    def root(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for i, j in pairs:
        a, b = root(groups[i]), root(groups[j])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(g) for g in groups]


def crossing_pairs(pairs: list[tuple[int, int]], test: np.ndarray) -> list[tuple[int, int]]:
    """Pairs with one photo in training and the other in test."""
    return [(i, j) for i, j in pairs if test[i] != test[j]]
