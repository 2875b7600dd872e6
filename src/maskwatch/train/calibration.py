"""Confidence that means something: temperature scaling fitted on validation, and the expected
calibration error (ECE) that says how far a model's confidence is from its accuracy."""

from __future__ import annotations

import numpy as np

from maskwatch.classifier import with_temperature

# log-spaced temperatures searched (0.2 .. 5): a grid is exact enough for one parameter and
# cannot diverge the way a gradient fit on a few hundred faces can.
_TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(5.0), 161))


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12)).mean())


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `y` under `probs`
    (softmax outputs); 1.0 when there is nothing to fit on."""
    if len(y) == 0:
        return 1.0
    losses = [nll(with_temperature(probs, float(t)), y) for t in _TEMPERATURES]
    return round(float(_TEMPERATURES[int(np.argmin(losses))]), 4)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-class ECE: the face-weighted mean gap between confidence and accuracy over
    equal-width confidence bins."""
    if len(y) == 0:
        return float("nan")
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == y
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.sum() * abs(
                float(right[inside].mean()) - float(confidence[inside].mean())
            )
    return gap / len(y)
