"""`maskwatch train` and `maskwatch evaluate`, top to bottom.

train: read datasets -> frame crops like detect -> group and de-duplicate -> split by group ->
cache backbone features per augmented view -> train the head -> export ONNX -> evaluate the
exported model on the held-out faces -> write the report folder.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.atomic import write_text
from maskwatch.classifier import (
    DEFAULT_INPUT_SIZE,
    DEFAULT_MODEL_NAME,
    MaskClassifier,
    ModelMetadata,
)
from maskwatch.errors import DatasetError
from maskwatch.faces import CROP_MARGIN, YuNetDetector
from maskwatch.train.augment import seed_augment
from maskwatch.train.data import Sample, check_classes, load_datasets, split_groups, split_random
from maskwatch.train.dedup import merge_groups, near_duplicate_pairs
from maskwatch.train.framing import FramedSet, frame_samples
from maskwatch.train.report import (
    Metrics,
    compute_metrics,
    metrics_by_source,
    plot_history,
    write_report,
)

log = logging.getLogger("maskwatch")

RECIPES = ("seed",)
SPLITS = ("group", "random")


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved as config.json beside the model."""

    data: list[str]
    out: str = "runs/train"
    recipe: str = "seed"
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-4
    views: int = 8
    test_fraction: float = 0.3
    split: str = "group"
    seed: int = 0
    input_size: int = DEFAULT_INPUT_SIZE
    limit_per_class: int | None = None
    balance_classes: bool = False
    command: list[str] = field(default_factory=list)

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise DatasetError(f"cannot read training configuration {path}: {exc}") from exc


@dataclass(frozen=True)
class TrainResult:
    model: Path
    overall: Metrics
    by_source: dict[str, Metrics]
    leaked_test_fraction: float
    seconds: float


def _limit(samples: list[Sample], per_class: int | None, seed: int) -> list[Sample]:
    """At most `per_class` samples of each (source, label), chosen at random with `seed`."""
    if not per_class:
        return samples
    rng = np.random.default_rng(seed)
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(samples):
        by_key.setdefault((s.source, s.label), []).append(i)
    keep = sorted(int(i) for idx in by_key.values() for i in rng.permutation(idx)[:per_class])
    return [samples[i] for i in keep]


def _leakage(framed: FramedSet, groups: list[str], test: np.ndarray) -> tuple[int, int]:
    """(test faces with a group-mate or near-copy photo in training, near-copy pairs crossing)."""
    train_groups = {g for g, t in zip(groups, test, strict=True) if not t}
    leaked = np.array([t and g in train_groups for g, t in zip(groups, test, strict=True)])
    photo_test = np.zeros(len(framed.photos), bool)
    photo_train = np.zeros(len(framed.photos), bool)
    np.logical_or.at(photo_test, framed.photo_of, test)
    np.logical_or.at(photo_train, framed.photo_of, ~test)
    pairs = near_duplicate_pairs(framed.hashes, framed.mirrored)
    crossing = [
        (i, j)
        for i, j in pairs
        if (photo_test[i] and photo_train[j]) or (photo_train[i] and photo_test[j])
    ]
    near_copy_photos = {i for p in crossing for i in p}
    leaked |= test & photo_train[framed.photo_of]  # the same photo on both sides
    leaked |= test & np.isin(framed.photo_of, list(near_copy_photos))
    return int(leaked.sum()), len(crossing)


def _grouped(framed: FramedSet) -> list[str]:
    """Sample groups, merged wherever two photos are near-duplicates."""
    groups = [s.group for s in framed.samples]
    first_sample: dict[int, int] = {}
    for i, p in enumerate(framed.photo_of):
        first_sample.setdefault(int(p), i)
    photo_pairs = near_duplicate_pairs(framed.hashes, framed.mirrored)
    return merge_groups(groups, [(first_sample[a], first_sample[b]) for a, b in photo_pairs])


def predict_crops(classifier: MaskClassifier, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate(
        [classifier.predict(crops[i : i + batch]) for i in range(0, len(crops), batch)]
        or [np.zeros((0, len(classifier.classes)), np.float32)]
    )


def _history_csv(history: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def _split_summary(framed: FramedSet, test: np.ndarray) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for side, mask in (("train", ~test), ("test", test)):
        counts[side] = dict(
            Counter(f"{s.source}/{s.label}" for s, m in zip(framed.samples, mask, strict=True) if m)
        )
    return counts


def train(config: TrainConfig) -> TrainResult:
    """Run the whole training recipe and write every output into `config.out`."""
    import torch

    from maskwatch.train.export import export_classifier, write_metadata
    from maskwatch.train.loop import FeatureExtractor, HeadTraining, train_head
    from maskwatch.train.model import load_backbone

    if config.recipe not in RECIPES:
        raise DatasetError(f"unknown recipe {config.recipe!r}; choose from {', '.join(RECIPES)}")
    started = time.perf_counter()
    out = Path(config.out)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    samples = _limit(
        load_datasets([Path(d) for d in config.data]), config.limit_per_class, config.seed
    )
    classes = check_classes(samples)
    log.info(
        "%d faces from %d dataset(s): %s",
        len(samples),
        len(config.data),
        dict(Counter(s.label for s in samples)),
    )
    framed = frame_samples(samples, YuNetDetector(), config.input_size, CROP_MARGIN)
    log.info("framing: %s", dict(framed.framing))
    labels = [s.label for s in framed.samples]
    check_classes(framed.samples)

    groups = _grouped(framed)
    if config.split == "group":
        test = split_groups(groups, labels, config.test_fraction, config.seed)
    else:
        test = split_random(len(labels), labels, config.test_fraction, config.seed)
    leaked, crossing = _leakage(framed, groups, test)
    if leaked:
        log.warning(
            "%d of %d held-out faces (%.0f%%) have a near-copy, the same photo or a "
            "group-mate in training (%d near-copy pairs cross the split); accuracy "
            "measured on them is inflated",
            leaked,
            int(test.sum()),
            100 * leaked / max(1, int(test.sum())),
            crossing,
        )
    for side, mask in (("training", ~test), ("held-out", test)):
        missing = set(classes) - {labels[i] for i in np.flatnonzero(mask)}
        if missing:
            raise DatasetError(
                f"the {side} split has no {', '.join(sorted(missing))} faces; "
                "add data or change --test-fraction"
            )

    y = np.array([classes.index(lbl) for lbl in labels], np.int64)
    meta = ModelMetadata(classes=classes, input_size=config.input_size, crop_margin=CROP_MARGIN)
    backbone = load_backbone()
    extractor = FeatureExtractor(backbone, meta)
    train_views = extractor.views(framed.crops[~test], seed_augment, config.views, rng)
    test_features = extractor(framed.crops[test])

    weights = None
    if config.balance_classes:
        counts = np.bincount(y[~test], minlength=len(classes)).astype(np.float64)
        weights = counts.sum() / (len(classes) * np.maximum(counts, 1))
    settings = HeadTraining(config.epochs, config.batch_size, config.learning_rate, weights)
    head, history = train_head(
        train_views, y[~test], test_features, y[test], len(classes), settings, rng
    )

    model_path = out / DEFAULT_MODEL_NAME
    export_diff = export_classifier(backbone, head, meta, model_path, framed.crops[test][:16])
    probs = predict_crops(MaskClassifier(model_path), framed.crops[test])
    predicted = probs.argmax(axis=1)
    overall = compute_metrics(y[test], predicted, classes)
    sources = [s.source for s, t in zip(framed.samples, test, strict=True) if t]
    by_source = metrics_by_source(y[test], predicted, sources, classes)
    seconds = time.perf_counter() - started

    leaked_fraction = leaked / max(1, int(test.sum()))
    meta.training = {
        "recipe": config.recipe,
        "data": config.data,
        "split": config.split,
        "test_fraction": config.test_fraction,
        "seed": config.seed,
        "epochs": config.epochs,
        "views": config.views,
        "faces": _split_summary(framed, test),
        "framing": dict(framed.framing),
        "backbone": "torchvision MobileNet_V2 IMAGENET1K_V1 (frozen)",
        "command": config.command,
        "seconds": round(seconds, 1),
    }
    meta.metrics = {
        "held_out": overall.to_json(),
        "by_source": {s: m.to_json() for s, m in by_source.items()},
        "leaked_test_fraction": round(leaked_fraction, 4),
        "onnx_vs_torch_max_diff": export_diff,
    }
    write_metadata(model_path, meta)
    write_text(out / "config.json", json.dumps(asdict(config), indent=2) + "\n")
    write_text(out / "history.csv", _history_csv(history))
    plot_history(history, out / "training_curves.png")
    notes = [
        f"Model `{model_path.name}`, recipe `{config.recipe}`, {config.split} split, "
        f"{int((~test).sum())} training faces, {int(test.sum())} held-out faces, "
        f"{config.epochs} epochs, {seconds:.0f} s.",
        f"Held-out faces with a near-copy or group-mate in training: {leaked} "
        f"({100 * leaked_fraction:.1f}%).",
    ]
    write_report(out, "maskwatch training report", overall, by_source, notes)
    return TrainResult(model_path, overall, by_source, leaked_fraction, seconds)


def evaluate(
    model: Path, data: list[Path], out: Path | None = None
) -> tuple[Metrics, dict[str, Metrics]]:
    """The training report's metrics for any model on any labelled data."""
    classifier = MaskClassifier(model)
    samples = load_datasets(data)
    unknown = Counter(s.label for s in samples if s.label not in classifier.classes)
    for label, n in unknown.items():
        log.warning("the model has no %r class; leaving out %d such faces", label, n)
    samples = [s for s in samples if s.label in classifier.classes]
    if not samples:
        raise DatasetError("no face in the data has a class this model knows")
    meta = classifier.meta
    framed = frame_samples(samples, YuNetDetector(), meta.input_size, meta.crop_margin)
    classes = classifier.classes
    y = np.array([classes.index(s.label) for s in framed.samples], np.int64)
    predicted = predict_crops(classifier, framed.crops).argmax(axis=1)
    overall = compute_metrics(y, predicted, classes)
    by_source = metrics_by_source(y, predicted, [s.source for s in framed.samples], classes)
    if out is not None:
        notes = [
            f"Model `{model}` on {', '.join(str(d) for d in data)}: {len(y)} faces.",
            "Only faces whose photo was not in this model's training count as held-out.",
        ]
        write_report(out, "maskwatch evaluation report", overall, by_source, notes)
    return overall, by_source


def command_line() -> list[str]:
    return ["maskwatch", *sys.argv[1:]]
