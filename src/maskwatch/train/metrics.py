"""Held-out figures from a model's probabilities on labelled faces: pure functions of NumPy
arrays (confusion, accuracy, balanced accuracy, per-class precision / recall / F1, figures by
source and by face set, the uncertainty threshold). report.py renders them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

HEADLINE_MIN_FACE = 24  # px, shorter side: smaller faces are left out of the `real` headline


@dataclass(frozen=True)
class Metrics:
    """Confusion matrix (rows: true class, columns: predicted) and the figures derived from it."""

    classes: list[str]
    confusion: np.ndarray

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.n, 1))

    def recall(self) -> np.ndarray:
        return np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=1), 1)

    def precision(self) -> np.ndarray:
        return np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=0), 1)

    def f1(self) -> np.ndarray:
        p, r = self.precision(), self.recall()
        return np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)

    def support(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    @property
    def balanced_accuracy(self) -> float:
        present = self.support() > 0
        return float(self.recall()[present].mean()) if present.any() else 0.0

    def to_dict(self) -> dict[str, Any]:
        p, r, f = self.precision(), self.recall(), self.f1()
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "per_class": {
                c: {
                    "precision": round(float(p[i]), 4),
                    "recall": round(float(r[i]), 4),
                    "f1": round(float(f[i]), 4),
                    "support": int(self.support()[i]),
                }
                for i, c in enumerate(self.classes)
            },
            "confusion": self.confusion.tolist(),
        }


def finite_rounded(value: float) -> float | None:
    """`value` to 4 decimals for a report or JSON, None where it is not a number (JSON has no
    NaN)."""
    return None if not np.isfinite(value) else round(float(value), 4)


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> Metrics:
    k = len(classes)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return Metrics(classes, confusion)


@dataclass(frozen=True)
class Predictions:
    """A model's probabilities on labelled faces, with where each face came from."""

    classes: list[str]
    y: np.ndarray
    probs: np.ndarray
    sources: list[str]
    face_sizes: np.ndarray
    crops: np.ndarray | None = None

    def subset(self, mask: np.ndarray) -> Predictions:
        idx = np.flatnonzero(mask)
        return Predictions(
            self.classes,
            self.y[idx],
            self.probs[idx],
            [self.sources[i] for i in idx],
            self.face_sizes[idx],
            None if self.crops is None else self.crops[idx],
        )

    def metrics(self) -> Metrics:
        return compute_metrics(self.y, self.probs.argmax(axis=1), self.classes)


def mask_vs_no_mask(p: Predictions) -> tuple[float, int]:
    """Balanced accuracy between `mask` and `no_mask` on faces that are one of the two, the model's
    choice restricted to those two classes; and how many faces that is."""
    if not {"mask", "no_mask"} <= set(p.classes):
        return float("nan"), 0
    m, n = p.classes.index("mask"), p.classes.index("no_mask")
    keep = np.isin(p.y, [m, n])
    if not keep.any():
        return float("nan"), 0
    chosen = np.where(p.probs[keep, m] >= p.probs[keep, n], m, n)
    truth = p.y[keep]
    recalls = [float((chosen[truth == k] == k).mean()) for k in (m, n) if (truth == k).any()]
    return float(np.mean(recalls)), int(keep.sum())


def precision_recall_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall and the threshold at each distinct score, highest first."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    tp = np.cumsum(hits)
    fp = np.cumsum(1 - hits)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(hits.sum(), 1)
    return precision, recall, scores[order], fp / max((1 - hits).sum(), 1)


def recall_at_precision(p: Predictions, label: str, min_precision: float) -> tuple[float, float]:
    """Best recall of `label` (one-vs-rest on its probability) at precision >= min_precision,
    and the probability threshold that gives it."""
    if label not in p.classes or len(p.y) == 0:
        return float("nan"), float("nan")
    k = p.classes.index(label)
    precision, recall, thresholds, _ = precision_recall_curve(p.probs[:, k], p.y == k)
    ok = precision >= min_precision
    if not ok.any():
        return 0.0, 1.0
    best = int(np.argmax(np.where(ok, recall, -1)))
    return float(recall[best]), float(thresholds[best])


def selective(p: Predictions, threshold: float) -> tuple[float, float]:
    """(share of faces labelled, accuracy on them) when faces under `threshold` are `uncertain`."""
    if len(p.y) == 0:
        return float("nan"), float("nan")
    top = p.probs.max(axis=1)
    covered = top >= threshold
    if not covered.any():
        return 0.0, float("nan")
    return float(covered.mean()), float((p.probs[covered].argmax(1) == p.y[covered]).mean())


def choose_threshold(
    p: Predictions, target_accuracy: float = 0.97, max_uncertain: float = 0.10
) -> float:
    """Lowest top-probability threshold at which the labelled faces reach `target_accuracy`,
    never calling more than `max_uncertain` of the faces uncertain. Chosen on validation data.

    0.97 rather than 0.95: a model that is 95% right on validation without any threshold would
    otherwise never say `uncertain`, and label a masked profile "No mask 59%"."""
    top = np.sort(p.probs.max(axis=1))
    if len(top) == 0:
        return 0.0
    cap = float(top[min(len(top) - 1, int(max_uncertain * len(top)))])
    for threshold in np.arange(0.34, cap + 1e-9, 0.01):
        coverage, accuracy = selective(p, float(threshold))
        if coverage > 0 and accuracy >= target_accuracy:
            return round(float(threshold), 2)
    return round(cap, 2)


def headline(p: Predictions, threshold: float) -> dict[str, Any]:
    """The figures the README and the closing note quote, for one set of faces."""
    balanced, n_binary = mask_vs_no_mask(p)
    m = p.metrics()
    out: dict[str, Any] = {
        "n": m.n,
        "accuracy": round(m.accuracy, 4),
        "balanced_accuracy": round(m.balanced_accuracy, 4),
        "mask_vs_no_mask_balanced_accuracy": round(balanced, 4),
        "mask_vs_no_mask_n": n_binary,
    }
    if "incorrect" in p.classes:
        k = p.classes.index("incorrect")
        recall, at = recall_at_precision(p, "incorrect", 0.6)
        out.update(
            {
                "incorrect_n": int((p.y == k).sum()),
                "incorrect_precision": round(float(m.precision()[k]), 4),
                "incorrect_recall": round(float(m.recall()[k]), 4),
                "incorrect_recall_at_precision_0.6": round(recall, 4),
                "incorrect_threshold_for_that": round(at, 4),
            }
        )
    coverage, accuracy = selective(p, threshold)
    out.update(
        {
            "uncertain_below": threshold,
            "labelled_share": round(coverage, 4),
            "accuracy_when_labelled": round(accuracy, 4),
        }
    )
    return out


def headline_sets(p: Predictions, synthetic: list[str]) -> dict[str, np.ndarray]:
    """The face sets whose figures head the report: all of them, and real faces of at least
    HEADLINE_MIN_FACE px (overall and per real source)."""
    big = p.face_sizes >= HEADLINE_MIN_FACE
    real = np.array([s not in synthetic for s in p.sources])
    sets = {"all": np.ones(len(p.y), bool)}
    if (real & big).any():
        sets[f"real, >= {HEADLINE_MIN_FACE} px"] = real & big
        for source in sorted({s for s, r in zip(p.sources, real, strict=True) if r}):
            sets[f"{source}, >= {HEADLINE_MIN_FACE} px"] = big & np.array(
                [s == source for s in p.sources]
            )
    return sets


def summarise(p: Predictions, threshold: float, sets: dict[str, np.ndarray]) -> dict[str, Any]:
    """What metrics.json holds: overall and per-source metrics, and headline figures per set."""
    sources = sorted(set(p.sources))
    return {
        "overall": p.metrics().to_dict(),
        "by_source": {
            s: p.subset(np.array([x == s for x in p.sources])).metrics().to_dict() for s in sources
        },
        "headline": {name: headline(p.subset(mask), threshold) for name, mask in sets.items()},
    }
