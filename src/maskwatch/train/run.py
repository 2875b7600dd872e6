"""`maskwatch train` and `maskwatch evaluate`, top to bottom.

train: read the datasets -> frame faces like `detect` (framing.py) -> split by group without
leakage (split.py) -> fit the network (loop.py: cached features per augmented view, the head,
fine-tuning kept only if validation improves, the uncertainty threshold) -> export ONNX ->
evaluate the exported model on the held-out faces (metrics.py) -> write the report folder
(report.py) and the model's metadata.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maskwatch.atomic import staged_folder, write_text
from maskwatch.classifier import DEFAULT_MODEL_NAME, MaskClassifier, ModelMetadata, metadata_path
from maskwatch.defaults import CROP_MARGIN
from maskwatch.errors import DatasetError, SettingError
from maskwatch.faces import YuNetDetector
from maskwatch.train.config import SYNTHETIC_SOURCES, Framing, TrainConfig
from maskwatch.train.data import (
    check_classes,
    faces_csv,
    limit_per_class,
    load_datasets,
    read_faces_csv,
)
from maskwatch.train.featurecache import FeatureCache
from maskwatch.train.framing import FramedSet, frame_samples
from maskwatch.train.metrics import Predictions, finite_rounded, headline_sets, summarise
from maskwatch.train.report import HISTORY_FILES, REPORT_FILES, write_history, write_report
from maskwatch.train.split import SplitPlan, plan_split

if TYPE_CHECKING:
    from maskwatch.train.loop import Fitted

log = logging.getLogger("maskwatch")


@dataclass(frozen=True)
class TrainResult:
    model: Path
    report: dict[str, Any]
    seconds: float


CONFIG_FILE = "config.json"  # the run's settings: `train --config` repeats it
TEST_FACES_FILE = "test_faces.csv"  # its held-out faces: `evaluate --faces` compares models on them
# What `train` writes into its folder.
TRAIN_FILES = (
    DEFAULT_MODEL_NAME,
    metadata_path(Path(DEFAULT_MODEL_NAME)).name,
    CONFIG_FILE,
    TEST_FACES_FILE,
    *HISTORY_FILES,
    *REPORT_FILES,
)


def train(config: TrainConfig) -> TrainResult:
    """Run the whole training recipe and write every output into `config.out`."""
    import torch

    config = config.resolved()
    if config.align:
        raise SettingError(
            "--align is for --cross-source comparisons only: detect and classify frame faces "
            "square, so a model trained on aligned crops would not see its training framing"
        )
    started = time.perf_counter()
    out = Path(config.out)
    torch.manual_seed(config.seed)
    with staged_folder(out, TRAIN_FILES) as stage:
        result = _train_into(config, stage, started)
    return replace(result, model=out / result.model.name)


def _train_into(config: TrainConfig, out: Path, started: float) -> TrainResult:
    """Train and write every output into `out` (the stage of the output folder)."""
    from maskwatch.train.export import export_classifier, write_metadata
    from maskwatch.train.loop import fit

    framed = read_and_frame(config)
    classes = check_classes(framed.samples)
    plan = plan_split(config, framed, classes)

    meta = ModelMetadata(classes=classes, input_size=config.input_size, crop_margin=CROP_MARGIN)
    fitted = fit(config, framed, plan, meta, feature_cache(config))
    meta.uncertain_below = fitted.uncertain_below
    meta.temperature = fitted.temperature
    model_path = out / DEFAULT_MODEL_NAME
    test_set = framed.subset(plan.test)
    export_diff = export_classifier(
        fitted.backbone, fitted.head, meta, model_path, test_set.crops[:16]
    )

    held_out = predictions(MaskClassifier(model_path), test_set)
    seconds = time.perf_counter() - started
    report = write_report(
        out,
        "maskwatch training report",
        held_out,
        _notes(config, plan, model_path, fitted, seconds),
        meta.uncertain_below,
        headline_sets(held_out, config.synthetic_sources),
    )
    meta.training = {
        "recipe": config.recipe,
        "data": config.data,
        "split": config.split,
        "framing": config.framing,
        "augment": config.augment,
        "framing_jitter": config.framing_jitter,
        "hard_mining": config.hard_mining,
        "seed": config.seed,
        "faces": plan.faces(framed),
        "framing_counts": dict(framed.framing),
        "backbone": "torchvision MobileNet_V2 IMAGENET1K_V1",
        "finetuning": fitted.finetuning,
        "command": config.command,
        "seconds": round(seconds, 1),
    }
    meta.metrics = {
        "held_out": report["headline"],
        "by_source": report["by_source"],
        "leaked_test_fraction": round(plan.leaked_fraction, 4),
        "onnx_vs_torch_max_diff": export_diff,
        "validation_ece": {
            "before_calibration": finite_rounded(fitted.validation_ece[0]),
            "after_calibration": finite_rounded(fitted.validation_ece[1]),
        },
    }
    write_metadata(model_path, meta)
    write_text(out / CONFIG_FILE, config.to_json())
    write_text(out / TEST_FACES_FILE, faces_csv(test_set.samples))
    write_history(fitted.history, out, fitted.monitor_name)
    return TrainResult(model_path, report, seconds)


def feature_cache(config: TrainConfig) -> FeatureCache:
    return FeatureCache(Path(config.feature_cache) if config.feature_cache else None)


def read_and_frame(config: TrainConfig) -> FramedSet:
    """The datasets' faces, framed as `detect` frames them; at least two classes."""
    samples = limit_per_class(load_datasets(config.data), config.limit_per_class, config.seed)
    check_classes(samples)
    log.info("%d photos or boxes from %d dataset(s)", len(samples), len(config.data))
    framed = frame_samples(
        samples,
        YuNetDetector(),
        config.input_size,
        CROP_MARGIN,
        use_detector=config.framing == Framing.DETECTOR,
        align=config.align,
    )
    log.info("framing: %s", dict(framed.framing))
    log.info("%d faces: %s", len(framed.samples), dict(Counter(s.label for s in framed.samples)))
    return framed


def _notes(
    config: TrainConfig, plan: SplitPlan, model_path: Path, fitted: Fitted, seconds: float
) -> list[str]:
    """The lines that open the training report: what was trained on what, and how honest."""
    leaked = plan.leaked_fraction
    before, after = fitted.validation_ece
    calibration = (
        f"Temperature {fitted.temperature:.3f} (validation ECE {before:.4f} -> {after:.4f}); "
        f"uncertain below {fitted.uncertain_below:.2f} (both chosen on validation)."
        if np.isfinite(before)
        else "No validation faces: no temperature scaling and no `uncertain` threshold."
    )
    return [
        f"Model `{model_path.name}`, recipe `{config.recipe}`, {config.split} split: "
        f"{int(plan.train.sum())} training, {int(plan.val.sum())} validation and "
        f"{int(plan.test.sum())} held-out faces; {seconds:.0f} s.",
        f"Held-out faces with a near-copy or group-mate in training: {plan.leaked} "
        f"({100 * leaked:.1f}%). Fine-tuning: {fitted.finetuning}. " + calibration,
        f"`real` excludes the synthetic sources ({', '.join(config.synthetic_sources)}).",
    ]


def predictions(classifier: MaskClassifier, framed: FramedSet, batch: int = 64) -> Predictions:
    """The exported classifier's probabilities on framed faces, with their labels and sources."""
    classes = classifier.classes
    crops = framed.crops
    batches = [classifier.predict(crops[i : i + batch]) for i in range(0, len(crops), batch)]
    probs = np.concatenate(batches) if batches else np.zeros((0, len(classes)), np.float32)
    return Predictions(
        classes,
        np.array([classes.index(s.label) for s in framed.samples], np.int64),
        probs,
        [s.source for s in framed.samples],
        framed.face_sizes,
        framed.crops,
    )


def evaluate(
    model: Path,
    data: list[str],
    out: Path | None = None,
    faces: Path | None = None,
    synthetic: list[str] | None = None,
) -> dict[str, Any]:
    """The training report's figures for any model on labelled data, or on exactly the faces of
    a `test_faces.csv` written by training (to compare models on the same held-out faces); with
    `out`, the report files too, put there together once they are all written."""
    if out is None:
        return _evaluate_into(model, data, None, faces, synthetic)
    with staged_folder(out, REPORT_FILES) as stage:
        return _evaluate_into(model, data, stage, faces, synthetic)


def _evaluate_into(
    model: Path,
    data: list[str],
    out: Path | None,
    faces: Path | None,
    synthetic: list[str] | None,
) -> dict[str, Any]:
    classifier = MaskClassifier(model)
    samples = read_faces_csv(faces) if faces is not None else load_datasets(data)
    unknown = Counter(s.label for s in samples if s.label not in classifier.classes)
    for label, n in unknown.items():
        log.warning("the model has no %r class; leaving out %d such faces", label, n)
    samples = [s for s in samples if s.label in classifier.classes]
    if not samples:
        raise DatasetError("no face in the data has a class this model knows")
    meta = classifier.meta
    framed = frame_samples(
        samples, YuNetDetector(), meta.input_size, meta.crop_margin, use_detector=faces is None
    )
    p = predictions(classifier, framed)
    sets = headline_sets(p, synthetic if synthetic is not None else list(SYNTHETIC_SOURCES))
    if out is None:
        return summarise(p, meta.uncertain_below, sets)
    what = str(faces) if faces is not None else ", ".join(data)
    notes = [
        f"Model `{model}` on {what}: {len(p.y)} faces.",
        "Only faces whose photo was not in this model's training count as held-out.",
    ]
    return write_report(out, "maskwatch evaluation report", p, notes, meta.uncertain_below, sets)


def command_line() -> list[str]:
    """The command as typed, recorded in config.json and the model's metadata."""
    return ["maskwatch", *sys.argv[1:]]
