"""Held-out metrics and the report folder: Markdown summary, JSON, text report and PNG plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.atomic import atomic_path, write_bytes, write_text


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

    def to_json(self) -> dict[str, Any]:
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


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> Metrics:
    k = len(classes)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return Metrics(classes, confusion)


def classification_report(m: Metrics) -> str:
    lines = [f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    p, r, f, s = m.precision(), m.recall(), m.f1(), m.support()
    for i, c in enumerate(m.classes):
        lines.append(f"{c:<12}{p[i]:>10.3f}{r[i]:>10.3f}{f[i]:>10.3f}{s[i]:>10d}")
    lines.append(f"{'accuracy':<12}{'':>20}{m.accuracy:>10.3f}{m.n:>10d}")
    lines.append(f"{'balanced':<12}{'':>20}{m.balanced_accuracy:>10.3f}{m.n:>10d}")
    return "\n".join(lines)


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


def _save_figure(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(m: Metrics, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    rates = m.confusion / np.maximum(m.confusion.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(m.classes)), m.classes)
    ax.set_yticks(range(len(m.classes)), m.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(m.confusion):
        ax.text(
            j,
            i,
            f"{v}\n{rates[i, j]:.0%}",
            ha="center",
            va="center",
            color="white" if rates[i, j] > 0.5 else "black",
            fontsize=9,
        )
    ax.set_title(title, fontsize=10)
    _save_figure(fig, path)
    plt.close(fig)


def plot_curves(p: Predictions, path: Path) -> None:
    """ROC and precision-recall, one-vs-rest per class."""
    plt = _pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4))
    for k, c in enumerate(p.classes):
        positive = p.y == k
        if not positive.any() or positive.all():
            continue
        precision, recall, _, fpr = precision_recall_curve(p.probs[:, k], positive)
        roc.plot(np.r_[0, fpr], np.r_[0, recall], label=c)
        pr.plot(recall, precision, label=c)
    roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    for ax in (roc, pr):
        ax.legend()
        ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def plot_calibration(p: Predictions, path: Path, bins: int = 10) -> None:
    """Reliability of the top probability: how often the top class is right, per confidence bin."""
    plt = _pyplot()
    top = p.probs.max(axis=1)
    right = p.probs.argmax(axis=1) == p.y
    edges = np.linspace(1 / len(p.classes), 1, bins + 1)
    which = np.clip(np.digitize(top, edges) - 1, 0, bins - 1)
    centres, rates, counts = [], [], []
    for b in range(bins):
        sel = which == b
        if sel.any():
            centres.append(float(top[sel].mean()))
            rates.append(float(right[sel].mean()))
            counts.append(int(sel.sum()))
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot(centres, rates, "o-")
    for x, y, n in zip(centres, rates, counts, strict=True):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(0, 6), fontsize=7)
    ax.set(
        xlabel="top probability",
        ylabel="share correct",
        title="calibration",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
    )
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def mistakes_gallery(p: Predictions, path: Path, count: int = 24, tile: int = 112) -> None:
    """The most confident mistakes, each captioned true -> predicted (probability)."""
    import cv2

    from maskwatch.sinks import encode_image

    if p.crops is None:
        return
    predicted = p.probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != p.y)
    worst = wrong[np.argsort(-p.probs[wrong, predicted[wrong]])][:count]
    columns = 6
    rows = max(1, int(np.ceil(len(worst) / columns)))
    sheet = np.full((rows * (tile + 30), columns * tile, 3), 255, np.uint8)
    for n, i in enumerate(worst):
        r, c = divmod(n, columns)
        y0, x0 = r * (tile + 30), c * tile
        sheet[y0 : y0 + tile, x0 : x0 + tile] = cv2.resize(p.crops[i], (tile, tile))
        lines = (
            f"{p.classes[p.y[i]]}->{p.classes[predicted[i]]}",
            f"{p.probs[i, predicted[i]]:.2f} {p.sources[i][:10]}",
        )
        for k, text in enumerate(lines):
            cv2.putText(
                sheet,
                text,
                (x0 + 2, y0 + tile + 12 + 12 * k),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
    write_bytes(path, encode_image(path, sheet))


def plot_history(history: list[dict[str, Any]], path: Path, monitor_name: str) -> None:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    steps = range(1, len(history) + 1)
    left.plot(steps, [h["train_loss"] for h in history], label="train")
    left.plot(steps, [h["monitor_loss"] for h in history], label=monitor_name)
    right.plot(steps, [h["train_acc"] for h in history], label="train")
    right.plot(steps, [h["monitor_acc"] for h in history], label=monitor_name)
    stages = [h["stage"] for h in history]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            for ax in (left, right):
                ax.axvline(i + 0.5, color="grey", ls="--", lw=0.8)
    left.set_title("loss")
    right.set_title("accuracy")
    for ax in (left, right):
        ax.set_xlabel("epoch (all stages)")
        ax.legend()
        ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def summarise(
    p: Predictions, threshold: float, headline_sets: dict[str, np.ndarray]
) -> dict[str, Any]:
    """What metrics.json holds: overall and per-source metrics, and headline figures per set."""
    sources = sorted(set(p.sources))
    return {
        "overall": p.metrics().to_json(),
        "by_source": {
            s: p.subset(np.array([x == s for x in p.sources])).metrics().to_json() for s in sources
        },
        "headline": {
            name: headline(p.subset(mask), threshold) for name, mask in headline_sets.items()
        },
    }


def headline_table(payload: dict[str, Any]) -> list[str]:
    """The headline figures as a Markdown table, one column per face set."""
    heads = payload["headline"]
    if not heads:
        return []
    keys = list(next(iter(heads.values())))
    lines = ["| figure | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(heads)]
    lines += [f"| {k} | " + " | ".join(_fmt(h[k]) for h in heads.values()) + " |" for k in keys]
    return lines


def write_report(
    out: Path,
    title: str,
    p: Predictions,
    notes: list[str],
    threshold: float,
    headline_sets: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Everything about one evaluation in `out`: report.md, metrics.json,
    classification_report.txt and PNGs (confusion matrix, ROC/PR, calibration, worst mistakes).
    Returns what metrics.json holds."""
    payload = summarise(p, threshold, headline_sets)
    overall = p.metrics()
    text = [
        f"# {title}",
        "",
        *notes,
        "",
        "## Headline figures",
        "",
        *headline_table(payload),
        "",
        "## All evaluated faces",
        "",
        "```",
        classification_report(overall),
        "```",
        "",
    ]
    for source in payload["by_source"]:
        sub = p.subset(np.array([x == source for x in p.sources]))
        text += [f"## {source}", "", "```", classification_report(sub.metrics()), "```", ""]
    text += [
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![ROC and PR](curves.png)",
        "",
        "![calibration](calibration.png)",
        "",
        "Most confident mistakes:",
        "",
        "![worst mistakes](mistakes.jpg)",
        "",
    ]
    write_text(out / "report.md", "\n".join(text))
    write_text(out / "classification_report.txt", classification_report(overall) + "\n")
    write_text(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
    plot_confusion(overall, out / "confusion_matrix.png", title)
    plot_curves(p, out / "curves.png")
    plot_calibration(p, out / "calibration.png")
    mistakes_gallery(p, out / "mistakes.jpg")
    return payload
