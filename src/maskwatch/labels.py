"""Class names: canonical labels, their display text, and the dataset names mapped onto them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # light enough for the parser: NumPy only for the annotations
    import numpy as np

MASK = "mask"
NO_MASK = "no_mask"
INCORRECT = "incorrect"
UNCERTAIN = "uncertain"

CANONICAL: tuple[str, ...] = (MASK, NO_MASK, INCORRECT)

DISPLAY: dict[str, str] = {
    MASK: "Mask",
    NO_MASK: "No mask",
    INCORRECT: "Mask worn incorrectly",
    UNCERTAIN: "Uncertain",
}

# BGR colours used by every overlay.
COLOURS: dict[str, tuple[int, int, int]] = {
    MASK: (60, 180, 60),
    NO_MASK: (40, 40, 220),
    INCORRECT: (0, 165, 255),
    UNCERTAIN: (160, 160, 160),
}

_ALIASES: dict[str, str] = {
    "mask": MASK,
    "with_mask": MASK,
    "no_mask": NO_MASK,
    "without_mask": NO_MASK,
    "incorrect": INCORRECT,
    "mask_weared_incorrect": INCORRECT,
    "with_incorrect_mask": INCORRECT,
}


def canonical_label(name: str) -> str | None:
    """A dataset's class name (folder or VOC `name`) as a canonical label; None if unknown."""
    return _ALIASES.get(name.strip().lower())


def sort_labels(labels: set[str] | list[str]) -> list[str]:
    """Canonical order (mask, no_mask, incorrect), so class indices are stable across runs."""
    return [c for c in CANONICAL if c in set(labels)]


def labels_for(
    probs: np.ndarray, classes: Sequence[str], uncertain_below: float
) -> tuple[str, ...]:
    """Top class per row, or `uncertain` where the top probability is below the threshold: the
    one label rule, for a face's own probabilities and for a track's smoothed ones."""
    if len(probs) == 0:
        return ()
    top = probs.argmax(axis=1)
    return tuple(
        UNCERTAIN if probs[i, k] < uncertain_below else classes[k] for i, k in enumerate(top)
    )
