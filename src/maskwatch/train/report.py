"""Held-out metrics and the report folder: Markdown summary, JSON, text report and PNG plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.atomic import atomic_path, write_text


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


def metrics_by_source(
    y_true: np.ndarray, y_pred: np.ndarray, sources: list[str], classes: list[str]
) -> dict[str, Metrics]:
    """One Metrics per data source, so a large easy set cannot hide failures on another."""
    src = np.asarray(sources)
    return {
        s: compute_metrics(y_true[src == s], y_pred[src == s], classes)
        for s in sorted(set(sources))
    }


def classification_report(m: Metrics) -> str:
    lines = [f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    p, r, f, s = m.precision(), m.recall(), m.f1(), m.support()
    for i, c in enumerate(m.classes):
        lines.append(f"{c:<12}{p[i]:>10.3f}{r[i]:>10.3f}{f[i]:>10.3f}{s[i]:>10d}")
    lines.append(f"{'accuracy':<12}{'':>20}{m.accuracy:>10.3f}{m.n:>10d}")
    lines.append(f"{'balanced':<12}{'':>20}{m.balanced_accuracy:>10.3f}{m.n:>10d}")
    return "\n".join(lines)


def _save_figure(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_confusion(m: Metrics, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    left.plot(epochs, [h["test_loss"] for h in history], label="held-out")
    left.set_title("loss")
    right.plot(epochs, [h["train_acc"] for h in history], label="train")
    right.plot(epochs, [h["test_acc"] for h in history], label="held-out")
    right.set_title("accuracy")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def write_report(
    out: Path, title: str, overall: Metrics, by_source: dict[str, Metrics], notes: list[str]
) -> None:
    """report.md, metrics.json, classification_report.txt and confusion_matrix.png in `out`."""
    text = [
        f"# {title}",
        "",
        *notes,
        "",
        "## All held-out faces",
        "",
        "```",
        classification_report(overall),
        "```",
        "",
    ]
    for source, m in by_source.items():
        text += [f"## {source}", "", "```", classification_report(m), "```", ""]
    text += ["![confusion matrix](confusion_matrix.png)", ""]
    write_text(out / "report.md", "\n".join(text))
    write_text(out / "classification_report.txt", classification_report(overall) + "\n")
    payload = {
        "overall": overall.to_json(),
        "by_source": {s: m.to_json() for s, m in by_source.items()},
    }
    write_text(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
    plot_confusion(overall, out / "confusion_matrix.png", title)
