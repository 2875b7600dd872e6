"""The report folder: report.md, metrics.json, classification_report.txt, PNG plots, the
gallery of worst mistakes, and the training history (CSV and curves). The figures themselves
come from metrics.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.atomic import atomic_path, write_bytes, write_text
from maskwatch.train.metrics import Metrics, Predictions, precision_recall_curve, summarise


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


HISTORY_CSV, HISTORY_PLOT = HISTORY_FILES = ("history.csv", "training_curves.png")


def write_history(history: list[dict[str, Any]], out: Path, monitor_name: str) -> None:
    """history.csv (one row per epoch of every stage) and its plot, training_curves.png."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(out / HISTORY_CSV, buffer.getvalue())
    plot_history(history, out / HISTORY_PLOT, monitor_name)


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


def headline_table(payload: dict[str, Any]) -> list[str]:
    """The headline figures as a Markdown table, one column per face set."""
    heads = payload["headline"]
    if not heads:
        return []
    keys = list(next(iter(heads.values())))
    lines = ["| figure | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(heads)]
    lines += [f"| {k} | " + " | ".join(_fmt(h[k]) for h in heads.values()) + " |" for k in keys]
    return lines


# What write_report writes (the test that trains checks the list against the folder).
REPORT_MD = "report.md"
REPORT_FILES = (
    REPORT_MD,
    "classification_report.txt",
    "metrics.json",
    "confusion_matrix.png",
    "curves.png",
    "calibration.png",
    "mistakes.jpg",
)


def write_report(
    out: Path,
    title: str,
    p: Predictions,
    notes: list[str],
    threshold: float,
    sets: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Everything about one evaluation in `out`: report.md, metrics.json,
    classification_report.txt and PNGs (confusion matrix, ROC/PR, calibration, worst mistakes).
    Returns what metrics.json holds."""
    payload = summarise(p, threshold, sets)
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
    write_text(out / REPORT_MD, "\n".join(text))
    write_text(out / "classification_report.txt", classification_report(overall) + "\n")
    write_text(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
    plot_confusion(overall, out / "confusion_matrix.png", title)
    plot_curves(p, out / "curves.png")
    plot_calibration(p, out / "calibration.png")
    mistakes_gallery(p, out / "mistakes.jpg")
    return payload
