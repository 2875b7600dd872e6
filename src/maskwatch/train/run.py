"""`maskwatch train` and `maskwatch evaluate`, top to bottom.

train: read datasets -> frame faces like detect -> group and de-duplicate -> split by group
(train / validation / test) -> cache frozen-block features per augmented view -> train the head
-> fine-tune the top blocks (kept only if validation improves) -> choose the uncertainty
threshold on validation -> export ONNX -> evaluate the exported model on the held-out faces ->
write the report folder.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
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
from maskwatch.defaults import CROP_MARGIN
from maskwatch.errors import DatasetError
from maskwatch.faces import YuNetDetector
from maskwatch.train.choices import AUGMENTS, FRAMINGS, RECIPES, SPLITS
from maskwatch.train.data import (
    ANNOTATED,
    Sample,
    check_classes,
    load_datasets,
    split_groups,
    split_random,
)
from maskwatch.train.dedup import merge_groups, near_duplicate_pairs
from maskwatch.train.framing import FramedSet, frame_samples
from maskwatch.train.report import (
    Predictions,
    choose_threshold,
    plot_history,
    summarise,
    write_report,
)

log = logging.getLogger("maskwatch")

HEADLINE_MIN_FACE = 24
# Sources whose masks are pasted on (see the datasets' README): not "real" in headline figures.
SYNTHETIC_SOURCES = ("observations",)


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved, resolved, as config.json."""

    data: list[str]
    out: str = "runs/train"
    recipe: str = "seed"
    epochs: int | None = None
    batch_size: int = 32
    learning_rate: float | None = None
    views: int | None = None
    augment: str | None = None
    finetune_epochs: int | None = None
    finetune_learning_rate: float | None = None
    patience: int | None = None
    test_fraction: float = 0.3
    val_fraction: float | None = None
    split: str = "group"
    framing: str = "detector"
    seed: int = 0
    input_size: int = DEFAULT_INPUT_SIZE
    limit_per_class: int | None = None
    balance_classes: bool | None = None
    synthetic_sources: list[str] = field(default_factory=lambda: list(SYNTHETIC_SOURCES))
    command: list[str] = field(default_factory=list)

    def resolved(self) -> TrainConfig:
        """Recipe defaults filled in wherever no value was given; checks the choices."""
        if self.recipe not in RECIPES:
            raise DatasetError(f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}")
        for name, value, choices in (
            ("split", self.split, SPLITS),
            ("framing", self.framing, FRAMINGS),
        ):
            if value not in choices:
                raise DatasetError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")
        defaults = {k: v for k, v in RECIPES[self.recipe].items() if getattr(self, k) is None}
        config = replace(self, **defaults)
        if config.augment not in AUGMENTS:
            raise DatasetError(
                f"unknown augment {config.augment!r}; choose from {', '.join(AUGMENTS)}"
            )
        if (
            not 0 < config.test_fraction < 1
            or not 0 <= (config.val_fraction or 0) < 1 - config.test_fraction
        ):
            raise DatasetError(
                "test and validation fractions must lie between 0 and 1 and leave data to train on"
            )
        return config

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise DatasetError(f"cannot read training configuration {path}: {exc}") from exc


@dataclass(frozen=True)
class TrainResult:
    model: Path
    report: dict[str, Any]
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


def grouped(framed: FramedSet) -> tuple[list[str], list[tuple[int, int]]]:
    """Face groups merged wherever two photos are near-duplicates; and those photo pairs."""
    groups = [s.group for s in framed.samples]
    first_face: dict[int, int] = {}
    for i, p in enumerate(framed.photo_of):
        first_face.setdefault(int(p), i)
    pairs = [
        (a, b)
        for a, b in near_duplicate_pairs(framed.hashes, framed.mirrored)
        if a in first_face and b in first_face
    ]
    return merge_groups(groups, [(first_face[a], first_face[b]) for a, b in pairs]), pairs


def leakage(
    framed: FramedSet, groups: list[str], test: np.ndarray, pairs: list[tuple[int, int]]
) -> tuple[int, int]:
    """(held-out faces with a group-mate, the same photo or a near-copy photo in training,
    near-copy photo pairs crossing the split)."""
    train_groups = {g for g, t in zip(groups, test, strict=True) if not t}
    leaked = np.array([t and g in train_groups for g, t in zip(groups, test, strict=True)])
    photo_test = np.zeros(len(framed.photos), bool)
    photo_train = np.zeros(len(framed.photos), bool)
    np.logical_or.at(photo_test, framed.photo_of, test)
    np.logical_or.at(photo_train, framed.photo_of, ~test)
    crossing = [
        (i, j)
        for i, j in pairs
        if (photo_test[i] and photo_train[j]) or (photo_train[i] and photo_test[j])
    ]
    near_copy_photos = [i for p in crossing for i in p]
    leaked |= test & photo_train[framed.photo_of]
    leaked |= test & np.isin(framed.photo_of, near_copy_photos)
    return int(leaked.sum()), len(crossing)


def predict_crops(classifier: MaskClassifier, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    if len(crops) == 0:
        return np.zeros((0, len(classifier.classes)), np.float32)
    return np.concatenate(
        [classifier.predict(crops[i : i + batch]) for i in range(0, len(crops), batch)]
    )


def predictions(classifier: MaskClassifier, framed: FramedSet) -> Predictions:
    classes = classifier.classes
    return Predictions(
        classes,
        np.array([classes.index(s.label) for s in framed.samples], np.int64),
        predict_crops(classifier, framed.crops),
        [s.source for s in framed.samples],
        framed.face_sizes,
        framed.crops,
    )


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


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def faces_csv(framed: FramedSet) -> str:
    """The faces as framed (photo, box, label, source, group): `evaluate --faces` reads it back."""
    return _csv(
        [
            {
                "photo": s.image,
                "x1": s.box[0],
                "y1": s.box[1],
                "x2": s.box[2],
                "y2": s.box[3],
                "label": s.label,
                "source": s.source,
                "group": s.group,
            }
            for s in framed.samples
            if s.box is not None
        ]
    )


def read_faces_csv(path: Path) -> list[Sample]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [
                Sample(
                    Path(r["photo"]),
                    (int(r["x1"]), int(r["y1"]), int(r["x2"]), int(r["y2"])),
                    r["label"],
                    r["source"],
                    r["group"],
                    ANNOTATED,
                )
                for r in csv.DictReader(f)
            ]
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"cannot read the face list {path}: {exc}") from exc


def _split(
    config: TrainConfig, groups: list[str], labels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(test mask, validation mask); validation is carved out of what is not test, by group."""
    n = len(labels)
    if config.split == "group":
        test = split_groups(groups, labels, config.test_fraction, config.seed)
    else:
        test = split_random(n, labels, config.test_fraction, config.seed)
    val = np.zeros(n, bool)
    if config.val_fraction:
        rest = np.flatnonzero(~test)
        share = config.val_fraction / (1 - config.test_fraction)
        chosen = split_groups(
            [groups[i] for i in rest], [labels[i] for i in rest], share, config.seed + 1
        )
        val[rest[chosen]] = True
    return test, val


def _balance(y: np.ndarray, classes: list[str]) -> np.ndarray:
    counts = np.bincount(y.ravel(), minlength=len(classes)).astype(np.float64)
    return counts.sum() / (len(classes) * np.maximum(counts, 1))


def _softmax_probs(model: Any, maps: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = torch.from_numpy(maps.astype(np.float32))
        return torch.cat(
            [torch.softmax(model(x[i : i + 256]), 1) for i in range(0, len(x), 256)]
        ).numpy()


@dataclass
class SplitPlan:
    """Which faces train, validate and test, and how much the test side leaks."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    leaked: int
    crossing: int

    def faces(self, framed: FramedSet) -> dict[str, dict[str, int]]:
        return {
            side: dict(
                Counter(
                    f"{s.source}/{s.label}" for s, m in zip(framed.samples, mask, strict=True) if m
                )
            )
            for side, mask in (("train", self.train), ("validation", self.val), ("test", self.test))
        }


def plan_split(config: TrainConfig, framed: FramedSet, classes: list[str]) -> SplitPlan:
    """Split by group, warn about leakage, and refuse a split that lacks a class on a side."""
    labels = [s.label for s in framed.samples]
    groups, pairs = grouped(framed)
    test, val = _split(config, groups, labels)
    leaked, crossing = leakage(framed, groups, test, pairs)
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
    plan = SplitPlan(~test & ~val, val, test, leaked, crossing)
    sides = [("training", plan.train), ("held-out", test)] + (
        [("validation", val)] if val.any() else []
    )
    for side, mask in sides:
        missing = set(classes) - {labels[i] for i in np.flatnonzero(mask)}
        if missing:
            raise DatasetError(
                f"the {side} split has no {', '.join(sorted(missing))} faces; "
                "add data or change the split fractions"
            )
    return plan


@dataclass
class Fitted:
    """A trained network and what happened on the way."""

    backbone: Any
    head: Any
    uncertain_below: float
    history: list[dict[str, Any]]
    finetuning: str
    monitor_name: str


def fit(
    config: TrainConfig,
    framed: FramedSet,
    plan: SplitPlan,
    meta: ModelMetadata,
    rng: np.random.Generator,
) -> Fitted:
    """Cache features per augmented view, train the head, fine-tune the top blocks (kept only
    if validation improves) and choose the uncertainty threshold on validation."""
    from maskwatch.train.augment import augmenter
    from maskwatch.train.loop import (
        CUT,
        Classifier,
        MapExtractor,
        Stage,
        finetune,
        pool_maps,
        train_head,
    )
    from maskwatch.train.model import load_backbone

    assert config.epochs is not None and config.views is not None
    classes = meta.classes
    y = np.array([classes.index(s.label) for s in framed.samples], np.int64)
    backbone = load_backbone()
    lower, top = backbone[:CUT], backbone[CUT:]  # type: ignore[index]
    extractor = MapExtractor(lower, meta)
    train_set = framed.subset(plan.train)
    maps, y_views = extractor.views(
        train_set.crops,
        [s.label for s in train_set.samples],
        train_set.landmarks,
        classes,
        augmenter(str(config.augment)),
        config.views,
        rng,
    )
    has_val = bool(plan.val.any())
    monitor = plan.val if has_val else plan.test
    monitor_maps, y_monitor = extractor(framed.crops[monitor]), y[monitor]
    weights = _balance(y_views, classes) if config.balance_classes else None
    patience = (config.patience or None) if has_val else None

    def val_predictions() -> Predictions:
        probs = _softmax_probs(Classifier(top, head), monitor_maps)
        return Predictions(classes, y_monitor, probs, [], np.zeros(0))

    head, history = train_head(
        pool_maps(top, maps),
        y_views,
        (pool_maps(top, monitor_maps), y_monitor),
        len(classes),
        Stage(config.epochs, config.batch_size, config.learning_rate or 1e-4, weights, patience),
        rng,
    )
    decision = "not run"
    if config.finetune_epochs and has_val:
        before = val_predictions().metrics().balanced_accuracy
        saved = copy.deepcopy((top.state_dict(), head.state_dict()))
        history += finetune(
            top,
            head,
            maps,
            y_views,
            (monitor_maps, y_monitor),
            Stage(
                config.finetune_epochs,
                config.batch_size,
                config.finetune_learning_rate or 1e-4,
                weights,
                patience,
            ),
            rng,
        )
        after = val_predictions().metrics().balanced_accuracy
        verdict = "kept" if after > before else "discarded"
        if verdict == "discarded":
            top.load_state_dict(saved[0])
            head.load_state_dict(saved[1])
        decision = (
            f"{verdict}: blocks {CUT}+ fine-tuned, validation balanced accuracy "
            f"{before:.3f} -> {after:.3f}"
        )
        log.info("fine-tuning %s", decision)
    threshold = choose_threshold(val_predictions()) if has_val else 0.0
    return Fitted(
        backbone, head, threshold, history, decision, "validation" if has_val else "held-out"
    )


def train(config: TrainConfig) -> TrainResult:
    """Run the whole training recipe and write every output into `config.out`."""
    import torch

    from maskwatch.train.export import export_classifier, write_metadata

    config = config.resolved()
    started = time.perf_counter()
    out = Path(config.out)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    samples = _limit(load_datasets(config.data), config.limit_per_class, config.seed)
    check_classes(samples)
    log.info("%d photos or boxes from %d dataset(s)", len(samples), len(config.data))
    framed = frame_samples(
        samples,
        YuNetDetector(),
        config.input_size,
        CROP_MARGIN,
        use_detector=config.framing == "detector",
    )
    log.info("framing: %s", dict(framed.framing))
    classes = check_classes(framed.samples)
    log.info("%d faces: %s", len(framed.samples), dict(Counter(s.label for s in framed.samples)))
    plan = plan_split(config, framed, classes)

    meta = ModelMetadata(classes=classes, input_size=config.input_size, crop_margin=CROP_MARGIN)
    fitted = fit(config, framed, plan, meta, rng)
    meta.uncertain_below = fitted.uncertain_below
    model_path = out / DEFAULT_MODEL_NAME
    test_set = framed.subset(plan.test)
    export_diff = export_classifier(
        fitted.backbone, fitted.head, meta, model_path, test_set.crops[:16]
    )
    held_out = predictions(MaskClassifier(model_path), test_set)
    seconds = time.perf_counter() - started
    leaked_fraction = plan.leaked / max(1, int(plan.test.sum()))
    notes = [
        f"Model `{model_path.name}`, recipe `{config.recipe}`, {config.split} split: "
        f"{int(plan.train.sum())} training, {int(plan.val.sum())} validation and "
        f"{int(plan.test.sum())} held-out faces; {seconds:.0f} s.",
        f"Held-out faces with a near-copy or group-mate in training: {plan.leaked} "
        f"({100 * leaked_fraction:.1f}%). Fine-tuning: {fitted.finetuning}. "
        f"Uncertain below {meta.uncertain_below:.2f} (chosen on validation).",
        f"`real` excludes the synthetic sources ({', '.join(config.synthetic_sources)}).",
    ]
    report = write_report(
        out,
        "maskwatch training report",
        held_out,
        notes,
        meta.uncertain_below,
        headline_sets(held_out, config.synthetic_sources),
    )
    meta.training = {
        "recipe": config.recipe,
        "data": config.data,
        "split": config.split,
        "framing": config.framing,
        "augment": config.augment,
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
        "leaked_test_fraction": round(leaked_fraction, 4),
        "onnx_vs_torch_max_diff": export_diff,
    }
    write_metadata(model_path, meta)
    write_text(out / "config.json", json.dumps(asdict(config), indent=2) + "\n")
    write_text(out / "history.csv", _csv(fitted.history))
    write_text(out / "test_faces.csv", faces_csv(test_set))
    plot_history(fitted.history, out / "training_curves.png", fitted.monitor_name)
    return TrainResult(model_path, report, seconds)


def evaluate(
    model: Path,
    data: list[str],
    out: Path | None = None,
    faces: Path | None = None,
    synthetic: list[str] | None = None,
) -> dict[str, Any]:
    """The training report's figures for any model on labelled data, or on exactly the faces of
    a `test_faces.csv` written by training (to compare models on the same held-out faces)."""
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
    return ["maskwatch", *sys.argv[1:]]
