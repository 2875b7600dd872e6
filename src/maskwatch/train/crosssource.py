"""Cross-source accuracy, the figure that drives the model: for each real source, train without
it (synthetic sources always stay in training) and test on all of its faces.

One run frames every face once and extracts the frozen backbone's maps once (each augmented
view of every face, and every face at the three judged framings), through the feature cache;
each left-out source then only trains the head and top blocks on its rows. Faces of other
sources that share a group or a near-copy photo with the left-out source are kept out of that
run's training (counted as cross-source duplicates).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.atomic import PendingFiles
from maskwatch.classifier import ModelMetadata, with_temperature
from maskwatch.defaults import CROP_MARGIN, LOOSE_MARGIN, TIGHT_MARGIN, TRUSTED_FACE_SIDE
from maskwatch.errors import DatasetError, MissingExtraError
from maskwatch.labels import INCORRECT
from maskwatch.train.calibration import expected_calibration_error
from maskwatch.train.config import TrainConfig
from maskwatch.train.data import Sample, check_classes, faces_csv
from maskwatch.train.loop import (
    CUT,
    MapExtractor,
    Monitor,
    fit_maps,
    framing_maps,
    maps_probs,
    training_views,
)
from maskwatch.train.metrics import (
    HEADLINE_MIN_FACE,
    Predictions,
    finite_rounded,
    mask_vs_no_mask,
    precision_recall_curve,
    recall_at_precision,
    selective,
)
from maskwatch.train.model import load_backbone
from maskwatch.train.run import feature_cache, read_and_frame
from maskwatch.train.split import grouped, split_groups

log = logging.getLogger("maskwatch")

FRAMINGS = {"tight": TIGHT_MARGIN, "detector": CROP_MARGIN, "loose": LOOSE_MARGIN}
FACE_SIZE_BINS = (HEADLINE_MIN_FACE, TRUSTED_FACE_SIDE, 2 * TRUSTED_FACE_SIDE)  # px, lower ends
FACES_CSV = "cross_source_faces.csv"
INCORRECT_MIN_PRECISION = 0.70
CURVE_POINTS = 101
PR_IMAGE = "cross_source_incorrect_pr.png"
OUTPUTS = ("cross_source.json", "cross_source.md", PR_IMAGE, FACES_CSV)
# The plot's place in the figure (left, bottom, width, height as fractions) and its size, fixed
# so that a point of the curve has a known pixel: recall 0..1 across, precision 0..1 up.
PR_AXES = (0.12, 0.27, 0.82, 0.63)
PR_LIMITS = (-0.02, 1.02)  # both axes, so that no point lies on the frame
PR_FIGURE_INCHES = (6.0, 5.0)
PR_DPI = 100
PR_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass(frozen=True)
class Fold:
    """Which faces train, validate and are tested when one source is left out."""

    left_out: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    duplicates: int  # faces of other sources kept out: same group or near-copy photo


def plan_folds(
    sources: list[str], groups: list[str], labels: list[str], config: TrainConfig
) -> list[Fold]:
    """One fold per real source; validation carved out of the rest by group."""
    assert config.val_fraction is not None
    real = sorted({s for s in sources if s not in config.synthetic_sources})
    if len(real) < 2:
        raise DatasetError(
            "cross-source evaluation needs at least two real (not synthetic) sources; "
            f"got {', '.join(real) or 'none'}"
        )
    source_of = np.array(sources)
    folds = []
    for left_out in real:
        test = source_of == left_out
        touching = {g for g, t in zip(groups, test, strict=True) if t}
        shared = ~test & np.array([g in touching for g in groups])
        pool = np.flatnonzero(~test & ~shared)
        val = np.zeros(len(sources), bool)
        if config.val_fraction:
            chosen = split_groups(
                [groups[i] for i in pool],
                [labels[i] for i in pool],
                config.val_fraction,
                config.seed + 1,
            )
            val[pool[chosen]] = True
        train = ~test & ~shared & ~val
        for side, mask in (("training", train), ("validation", val)):
            if config.val_fraction or side == "training":
                missing = set(labels) - {labels[i] for i in np.flatnonzero(mask)}
                if missing:
                    raise DatasetError(
                        f"leaving {left_out} out, the {side} faces lack "
                        f"{', '.join(sorted(missing))}; add data"
                    )
        folds.append(Fold(left_out, train, val, test, int(shared.sum())))
    return folds


def incorrect_curve(p: Predictions) -> dict[str, Any]:
    """`incorrect` one-vs-rest: precision-recall points, the area under them (average
    precision), recall at precision >= 0.70, and precision / recall at the top class."""
    k = p.classes.index(INCORRECT)
    positive = p.y == k
    precision, recall, thresholds, _ = precision_recall_curve(p.probs[:, k], positive)
    steps = np.diff(np.concatenate([[0.0], recall]))
    at_precision, threshold = recall_at_precision(p, INCORRECT, INCORRECT_MIN_PRECISION)
    m = p.metrics()
    keep = np.unique(np.linspace(0, len(recall) - 1, CURVE_POINTS).round().astype(int))
    return {
        "n": int(positive.sum()),
        "precision": finite_rounded(m.precision()[k]),
        "recall": finite_rounded(m.recall()[k]),
        "average_precision": finite_rounded(float((steps * precision).sum())),
        f"recall_at_precision_{INCORRECT_MIN_PRECISION}": finite_rounded(at_precision),
        "threshold_for_that": finite_rounded(threshold),
        "curve": {
            "precision": [round(float(v), 4) for v in precision[keep]],
            "recall": [round(float(v), 4) for v in recall[keep]],
            "threshold": [round(float(v), 4) for v in thresholds[keep]],
        },
    }


def fold_figures(
    by_framing: dict[str, Predictions], raw: Predictions, threshold: float
) -> dict[str, Any]:
    """The table's figures for one left-out source (faces of at least 24 px)."""
    p = by_framing["detector"]
    balanced, n_binary = mask_vs_no_mask(p)
    big = p.subset(p.face_sizes >= TRUSTED_FACE_SIDE)
    labelled, right = selective(big, threshold)
    out: dict[str, Any] = {
        "n": len(p.y),
        "n_by_class": {c: int((p.y == k).sum()) for k, c in enumerate(p.classes)},
        "mask_vs_no_mask_balanced_accuracy": finite_rounded(balanced),
        "mask_vs_no_mask_n": n_binary,
        "accuracy_by_framing": {
            name: finite_rounded(q.metrics().accuracy) for name, q in by_framing.items()
        },
        "mask_vs_no_mask_by_framing": {
            name: finite_rounded(mask_vs_no_mask(q)[0]) for name, q in by_framing.items()
        },
        "ece_before_calibration": finite_rounded(expected_calibration_error(raw.probs, raw.y)),
        "ece": finite_rounded(expected_calibration_error(p.probs, p.y)),
        f"n_at_least_{TRUSTED_FACE_SIDE}px": len(big.y),
        f"uncertain_share_at_least_{TRUSTED_FACE_SIDE}px": finite_rounded(1 - labelled)
        if len(big.y)
        else None,
        f"labelled_accuracy_at_least_{TRUSTED_FACE_SIDE}px": finite_rounded(right),
    }
    if INCORRECT in p.classes and (p.y == p.classes.index(INCORRECT)).any():
        out["incorrect"] = incorrect_curve(p)
    out["by_face_size"] = by_face_size(p, threshold)
    return out


def by_face_size(p: Predictions, threshold: float) -> dict[str, dict[str, Any]]:
    """The detector framing's figures per band of face size (shorter side, px): from what size
    on labels can be trusted on a source the model never saw."""
    bands: dict[str, dict[str, Any]] = {}
    for low, high in zip(FACE_SIZE_BINS, (*FACE_SIZE_BINS[1:], None), strict=True):
        inside = (p.face_sizes >= low) & (True if high is None else p.face_sizes < high)
        q = p.subset(inside)
        labelled, right = selective(q, threshold)
        bands[f"{low}-{high}" if high else f"{low}+"] = {
            "n": len(q.y),
            "mask_vs_no_mask_balanced_accuracy": finite_rounded(mask_vs_no_mask(q)[0]),
            "accuracy": finite_rounded(q.metrics().accuracy) if len(q.y) else None,
            "uncertain_share": finite_rounded(1 - labelled) if len(q.y) else None,
            "labelled_accuracy": finite_rounded(right),
        }
    return bands


def tested_faces_csv(
    samples: list[Sample], sizes: np.ndarray, probs: dict[str, np.ndarray], classes: list[str]
) -> str:
    """Every tested face (as test_faces.csv lists faces) with its size and its calibrated
    probabilities at each framing (FRAMING:CLASS columns), for analyses after the run."""
    extra = {"face_size": [f"{v:.1f}" for v in sizes]}
    for name, p in probs.items():
        for k, c in enumerate(classes):
            extra[f"{name}:{c}"] = [f"{v:.5f}" for v in p[:, k]]
    return faces_csv(samples, extra)


def cross_source(config: TrainConfig) -> dict[str, Any]:
    """Run the whole protocol and write OUTPUTS into `config.out`, all of them or none; each is
    checked before the long run. Returns what the JSON holds."""
    config = config.resolved()
    _require_matplotlib()  # before the long run, not after it
    with PendingFiles([Path(config.out) / name for name in OUTPUTS]) as pending:
        payload, faces = evaluate_folds(config)
        contents = outputs(payload, faces)
        pending.commit([contents[name] for name in OUTPUTS])
    return payload


def outputs(payload: dict[str, Any], faces_table: str) -> dict[str, bytes]:
    """The contents of OUTPUTS, by name."""
    return {
        "cross_source.json": (json.dumps(payload, indent=2) + "\n").encode(),
        "cross_source.md": ("\n".join(markdown_table(payload)) + "\n").encode(),
        PR_IMAGE: incorrect_pr_png(payload),
        FACES_CSV: faces_table.encode(),
    }


def evaluate_folds(config: TrainConfig) -> tuple[dict[str, Any], str]:
    """The protocol's figures (what cross_source.json holds) and its table of tested faces
    (FACES_CSV), for a resolved `config`."""
    started = time.perf_counter()
    framed = read_and_frame(config)
    classes = check_classes(framed.samples)
    sources = [s.source for s in framed.samples]
    labels = [s.label for s in framed.samples]
    groups, _ = grouped(framed)
    folds = plan_folds(sources, groups, labels, config)

    cache = feature_cache(config)
    meta = ModelMetadata(classes=classes, input_size=config.input_size, crop_margin=CROP_MARGIN)
    initial = load_backbone()
    extractor = MapExtractor(initial[:CUT], meta)  # type: ignore[index]
    views, y_views = training_views(extractor, framed, classes, config, cache)
    tested = np.logical_or.reduce([f.test for f in folds])
    judged = framed.subset(tested)
    every_face = framing_maps(extractor, framed, CROP_MARGIN, cache)
    judged_maps = {
        name: every_face[tested]
        if margin == CROP_MARGIN
        else framing_maps(extractor, judged, margin, cache)
        for name, margin in FRAMINGS.items()
    }
    rows_of = np.cumsum(tested) - 1  # a tested face's row in the judged maps
    y = np.array([classes.index(s) for s in labels], np.int64)
    results: dict[str, Any] = {}
    tested_samples: list[Sample] = []
    tested_sizes: list[np.ndarray] = []
    tested_probs: dict[str, list[np.ndarray]] = {name: [] for name in FRAMINGS}
    for fold in folds:
        log.info(
            "leaving %s out: %d faces, %d of them of at least %d px to test",
            fold.left_out,
            int(fold.test.sum()),
            int((framed.face_sizes[fold.test] >= HEADLINE_MIN_FACE).sum()),
            HEADLINE_MIN_FACE,
        )
        backbone = copy.deepcopy(initial)
        watched = fold.val if fold.val.any() else fold.test  # as `fit` watches, see Monitor
        monitor = Monitor(
            np.asarray(every_face[watched]),
            y[watched],
            framed.face_sizes[watched],
            is_validation=bool(fold.val.any()),
        )
        fitted = fit_maps(
            config, backbone, views[:, fold.train], y_views[:, fold.train], monitor, classes
        )
        test_idx = np.flatnonzero(fold.test)
        usable = framed.face_sizes[test_idx] >= HEADLINE_MIN_FACE
        if not usable.any():
            raise DatasetError(f"{fold.left_out} has no face of at least {HEADLINE_MIN_FACE} px")
        faces = Predictions(
            classes,
            y[test_idx],
            np.zeros((len(test_idx), len(classes)), np.float32),
            [fold.left_out] * len(test_idx),
            framed.face_sizes[test_idx],
        ).subset(usable)
        rows = rows_of[test_idx[usable]]
        top = backbone[CUT:]  # type: ignore[index]
        raw = {
            name: maps_probs(top, fitted.head, np.asarray(maps[rows]))
            for name, maps in judged_maps.items()
        }
        by_framing = {
            name: replace(faces, probs=with_temperature(probs, fitted.temperature))
            for name, probs in raw.items()
        }
        figures = fold_figures(
            by_framing, replace(faces, probs=raw["detector"]), fitted.uncertain_below
        )
        figures.update(
            {
                "trained_on_faces": int(fold.train.sum()),
                "validation_faces": int(fold.val.sum()),
                "cross_source_duplicates_left_out": fold.duplicates,
                "temperature": fitted.temperature,
                "uncertain_below": fitted.uncertain_below,
                "finetuning": fitted.finetuning,
            }
        )
        results[fold.left_out] = figures
        tested_samples += [framed.samples[i] for i in test_idx[usable]]
        tested_sizes.append(faces.face_sizes)
        for name, q in by_framing.items():
            tested_probs[name].append(q.probs)
    payload = {
        "protocol": (
            "leave one real source out: train on the others (synthetic sources always in), "
            f"test on every face of it of at least {HEADLINE_MIN_FACE} px; "
            + (
                "temperature and uncertain threshold chosen on validation faces of the "
                "training sources"
                if config.val_fraction
                else "no validation faces (val_fraction 0): no temperature (1), no uncertain "
                "threshold (0) and no fine-tuning, as a plain run of this recipe"
            )
        ),
        "command": config.command,
        "config": json.loads(config.to_json()),
        "framings": FRAMINGS,
        "sources": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    faces_table = tested_faces_csv(
        tested_samples,
        np.concatenate(tested_sizes),
        {name: np.concatenate(p) for name, p in tested_probs.items()},
        classes,
    )
    return payload, faces_table


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("maskwatch train --cross-source", "train") from exc


def incorrect_pr_png(payload: dict[str, Any]) -> bytes:
    """The `incorrect` precision-recall curve of each left-out source, drawn from the points in
    the payload (cross_source.json), as PNG bytes."""
    _require_matplotlib()
    from matplotlib.figure import Figure  # drawn without pyplot: no global state

    fig = Figure(figsize=PR_FIGURE_INCHES, dpi=PR_DPI)
    ax = fig.add_axes(PR_AXES)
    key = f"recall_at_precision_{INCORRECT_MIN_PRECISION}"
    curves = [(s, f["incorrect"]) for s, f in payload["sources"].items() if "incorrect" in f]
    for (source, inc), colour in zip(curves, PR_COLOURS, strict=False):
        ax.plot(
            inc["curve"]["recall"],
            inc["curve"]["precision"],
            color=colour,
            lw=1.5,
            label=f"{source} (n = {inc['n']}): AP {_fmt(inc['average_precision'])}, "
            f"recall {_fmt(inc[key])} at P >= {INCORRECT_MIN_PRECISION}",
        )
    ax.axhline(INCORRECT_MIN_PRECISION, color="grey", ls="--", lw=0.8)
    ax.set(xlim=PR_LIMITS, ylim=PR_LIMITS, xlabel="recall", ylabel="precision")
    ax.set_title("incorrect: precision-recall on each source left out of training", fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        fig.legend(loc="lower center", fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no left-out source has incorrect faces", ha="center", va="center")
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return png.getvalue()


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown_table(payload: dict[str, Any]) -> list[str]:
    """The protocol's figures as Markdown: one row per left-out source."""
    big = TRUSTED_FACE_SIDE
    lines = [
        "# Cross-source accuracy (leave one source out)",
        "",
        payload["protocol"] + ".",
        "",
        "| left out | n | mask vs no mask (n) | accuracy tight / detector / loose | "
        f"incorrect P / R (n) | incorrect AP | R at P >= {INCORRECT_MIN_PRECISION} | "
        f"ECE raw -> calibrated | uncertain >= {big} px (n) | labelled right >= {big} px |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for source, f in payload["sources"].items():
        framing = " / ".join(_fmt(f["accuracy_by_framing"][k]) for k in FRAMINGS)
        inc = f.get("incorrect")
        lines.append(
            f"| {source} | {f['n']} | {_fmt(f['mask_vs_no_mask_balanced_accuracy'])} "
            f"({f['mask_vs_no_mask_n']}) | {framing} | "
            + (
                f"{_fmt(inc['precision'])} / {_fmt(inc['recall'])} ({inc['n']}) | "
                f"{_fmt(inc['average_precision'])} | "
                f"{_fmt(inc[f'recall_at_precision_{INCORRECT_MIN_PRECISION}'])} | "
                if inc
                else "- | - | - | "
            )
            + f"{_fmt(f['ece_before_calibration'])} -> {_fmt(f['ece'])} | "
            f"{_fmt(f[f'uncertain_share_at_least_{big}px'])} ({f[f'n_at_least_{big}px']}) | "
            f"{_fmt(f[f'labelled_accuracy_at_least_{big}px'])} |"
        )
    lines += [
        "",
        "Mask vs no mask: balanced accuracy between the two classes, the model choosing between "
        "them; a source with one of them only (rmfd: masks) gives that class's recall. "
        "Framings: tight = the face box alone, detector = as `detect` frames it, loose = that "
        "window 40% larger. Faces of other sources sharing a photo group or a near-copy with "
        "the left-out source were kept out of its training run: "
        + ", ".join(
            f"{s} {f['cross_source_duplicates_left_out']}" for s, f in payload["sources"].items()
        )
        + ".",
        "",
        "By face size (shorter side, detector framing): from what size on labels can be trusted.",
        "",
        "| left out | face size px | n | mask vs no mask | three-class | uncertain | "
        "labelled right |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for source, f in payload["sources"].items():
        for band, b in f.get("by_face_size", {}).items():
            lines.append(
                f"| {source} | {band} | {b['n']} | "
                f"{_fmt(b['mask_vs_no_mask_balanced_accuracy'])} | {_fmt(b['accuracy'])} | "
                f"{_fmt(b['uncertain_share'])} | {_fmt(b['labelled_accuracy'])} |"
            )
    return lines
