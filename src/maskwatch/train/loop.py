"""Fitting the network: feature caching, head training, fine-tuning, the uncertainty threshold.

MobileNetV2's blocks below `CUT` stay frozen (batch-norm in eval mode), so their output for a
given augmented crop never changes during training. They run once per augmented *view* (with
ONNX Runtime, several times faster than eager PyTorch on a CPU) and their 7x7 feature maps are
cached. Stage 1 trains the head on pooled features of the cached maps; stage 2 (fine-tuning)
trains the top blocks and the head together on the same cache, and is kept only if validation
improves. Each epoch draws one view per crop. `fit` runs the whole of it for a training run.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from maskwatch.classifier import ModelMetadata, to_input_tensor, with_temperature
from maskwatch.defaults import CROP_MARGIN, TRUSTED_FACE_SIDE
from maskwatch.train.augment import augmenter
from maskwatch.train.calibration import expected_calibration_error, fit_temperature
from maskwatch.train.config import FOCAL_GAMMA, OHEM_KEPT, HardMining, TrainConfig
from maskwatch.train.featurecache import FeatureCache, faces_key
from maskwatch.train.framing import FramedSet, jittered_framing, reframe
from maskwatch.train.metrics import Predictions, choose_threshold
from maskwatch.train.model import build_head, load_backbone, onnx_bytes
from maskwatch.train.split import SplitPlan

log = logging.getLogger("maskwatch")

CUT = 14  # blocks [0, CUT) are frozen and cached; [CUT, end) can be fine-tuned
MAX_UNCERTAIN_TRUSTED = 0.05  # share of validation faces >= TRUSTED_FACE_SIDE left uncertain


class MapExtractor:
    """Frozen lower blocks' feature maps of crops, by ONNX Runtime, stored as float16."""

    def __init__(self, lower: nn.Module, meta: ModelMetadata, batch_size: int = 64) -> None:
        import onnxruntime as ort

        self.meta = meta
        self.batch_size = batch_size
        self._session = ort.InferenceSession(
            onnx_bytes(lower, meta.input_size, "maps"), providers=["CPUExecutionProvider"]
        )
        probe = np.zeros((1, meta.input_size, meta.input_size, 3), np.uint8)
        self.shape = self._run(probe).shape[1:]

    def _run(self, crops: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"input": to_input_tensor(crops, self.meta)})[0]

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = np.zeros((len(crops), *self.shape), np.float16)
        for start in range(0, len(crops), self.batch_size):
            out[start : start + self.batch_size] = self._run(crops[start : start + self.batch_size])
        return out


class Classifier(nn.Module):
    """Top blocks + global average pool + head: what is trained on cached maps."""

    def __init__(self, top: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.top = top
        self.head = head

    def pooled(self, maps: torch.Tensor) -> torch.Tensor:
        return self.top(maps).mean(dim=(2, 3))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(maps))


def pool_maps(top: nn.Module, maps: np.ndarray, batch: int = 256) -> np.ndarray:
    """(..., C, H, W) cached maps -> (..., 1280) pooled features through the frozen top."""
    flat = maps.reshape(-1, *maps.shape[-3:])
    out = []
    top.eval()
    with torch.no_grad():
        for start in range(0, len(flat), batch):
            x = torch.from_numpy(flat[start : start + batch].astype(np.float32))
            out.append(top(x).mean(dim=(2, 3)).numpy())
    return np.concatenate(out).reshape(*maps.shape[:-3], -1)


@dataclass(frozen=True)
class Stage:
    """One training stage: how long, how fast, and when to stop."""

    epochs: int
    batch_size: int
    learning_rate: float
    class_weights: np.ndarray | None = None
    patience: int | None = None  # stop after this many epochs without a better monitor loss
    hard_mining: HardMining = HardMining.NONE


def training_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weights: torch.Tensor | None,
    hard_mining: HardMining,
) -> torch.Tensor:
    """Cross-entropy weighted by class, averaged over the batch by those weights (as
    `nn.CrossEntropyLoss(weight=...)` does). OHEM averages only the `OHEM_KEPT` share of views
    with the highest weighted loss; focal scales each view's loss by (1 - p)^FOCAL_GAMMA, p
    the probability it gives the right class."""
    per_view = functional.cross_entropy(logits, targets, weight=class_weights, reduction="none")
    weights = torch.ones_like(per_view) if class_weights is None else class_weights[targets]
    if hard_mining is HardMining.FOCAL:
        right = torch.softmax(logits, 1).gather(1, targets[:, None])[:, 0]
        per_view = per_view * (1 - right).pow(FOCAL_GAMMA)
    elif hard_mining is HardMining.OHEM:
        hardest = per_view.topk(max(1, round(len(per_view) * OHEM_KEPT))).indices
        per_view, weights = per_view[hardest], weights[hardest]
    return per_view.sum() / weights.sum()


def _fit(
    model: nn.Module,
    params: list[nn.Parameter],
    train_x: np.ndarray,
    y_train: np.ndarray,
    monitor: tuple[np.ndarray, np.ndarray],
    stage: Stage,
    rng: np.random.Generator,
    name: str,
    keep_eval: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Adam with a cosine learning-rate decay on `params` over views of `train_x` (views, N, ...);
    per-epoch history on `monitor`.

    With `stage.patience`, training stops when the monitor loss stops improving and the best
    weights are restored. `keep_eval` stays in eval mode (frozen batch-norm statistics).
    """
    optimiser = torch.optim.Adam(params, lr=stage.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, stage.epochs))
    weights = (
        None
        if stage.class_weights is None
        else torch.tensor(stage.class_weights, dtype=torch.float32)
    )
    eval_loss = nn.CrossEntropyLoss()
    x_mon = torch.from_numpy(monitor[0].astype(np.float32))
    t_mon = torch.from_numpy(monitor[1])
    views, n = y_train.shape
    if stage.hard_mining is not HardMining.NONE:
        log.info("%s: hard mining by %s", name, stage.hard_mining)
    history: list[dict[str, Any]] = []
    best_loss, best_state, since_best = float("inf"), None, 0
    for epoch in range(1, stage.epochs + 1):
        model.train()
        if keep_eval is not None:
            keep_eval.eval()
        view_of = np.asarray(rng.integers(views, size=n))
        order = rng.permutation(n)
        total_loss, correct = 0.0, 0
        for start in range(0, n, stage.batch_size):
            idx = order[start : start + stage.batch_size]
            x = torch.from_numpy(train_x[view_of[idx], idx].astype(np.float32))
            t = torch.from_numpy(y_train[view_of[idx], idx])
            logits = model(x)
            loss = training_loss(logits, t, weights, stage.hard_mining)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == t).sum())
        schedule.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x_mon[i : i + 256]) for i in range(0, len(x_mon), 256)])
            mon_loss = float(eval_loss(logits, t_mon))
            mon_acc = float((logits.argmax(1) == t_mon).float().mean())
        history.append(
            {
                "stage": name,
                "epoch": epoch,
                "train_loss": total_loss / n,
                "train_acc": correct / n,
                "monitor_loss": mon_loss,
                "monitor_acc": mon_acc,
            }
        )
        log.info(
            "%s epoch %d/%d  loss %.4f  acc %.3f  monitor loss %.4f  acc %.3f",
            name,
            epoch,
            stage.epochs,
            total_loss / n,
            correct / n,
            mon_loss,
            mon_acc,
        )
        if stage.patience is not None:
            if mon_loss < best_loss - 1e-4:
                best_loss, best_state, since_best = mon_loss, copy.deepcopy(model.state_dict()), 0
            else:
                since_best += 1
                if since_best >= stage.patience:
                    log.info("%s: no improvement for %d epochs; stopping", name, stage.patience)
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def train_head(
    pooled_views: np.ndarray,
    y_views: np.ndarray,
    monitor: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    stage: Stage,
    rng: np.random.Generator,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Stage 1: the head alone, on pooled features (views, N, 1280)."""
    head = build_head(num_classes)
    history = _fit(
        head, list(head.parameters()), pooled_views, y_views, monitor, stage, rng, "head"
    )
    return head, history


def finetune(
    top: nn.Module,
    head: nn.Module,
    maps_views: np.ndarray,
    y_views: np.ndarray,
    monitor: tuple[np.ndarray, np.ndarray],
    stage: Stage,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Stage 2: the top blocks and the head together, on cached maps; updates both in place."""
    model = Classifier(top, head)
    for p in top.parameters():
        p.requires_grad_(True)
    try:
        return _fit(
            model,
            list(model.parameters()),
            maps_views,
            y_views,
            monitor,
            stage,
            rng,
            "fine-tune",
            keep_eval=top,
        )
    finally:
        for p in top.parameters():
            p.requires_grad_(False)


def training_views(
    extractor: MapExtractor,
    framed: FramedSet,
    classes: list[str],
    config: TrainConfig,
    cache: FeatureCache,
) -> tuple[np.ndarray, np.ndarray]:
    """(views, N, C, H, W) maps of independently augmented copies of each face, and the
    (views, N) class index of each copy (augmentation may change it: a synthetic mask).

    Each view has its own random stream (seed, view), so a view found in `cache` is the view
    that would have been computed. With framing jitter every copy is cropped again from its
    photo, from tight to loose and off-centre (framing.jittered_framing)."""
    assert config.views is not None and config.augment is not None
    augment = augmenter(config.augment)
    maps = np.zeros((config.views, len(framed.samples), *extractor.shape), np.float16)
    y = np.zeros((config.views, len(framed.samples)), np.int64)
    faces = faces_key(framed)
    for v in range(config.views):
        key = {
            "faces": faces,
            "view": v,
            "seed": config.seed,
            "augment": str(config.augment),
            "framing_jitter": bool(config.framing_jitter),
            "input_size": extractor.meta.input_size,
            "cut": CUT,
        }
        made: dict[str, np.ndarray] = {}

        def compute(v: int = v, made: dict[str, np.ndarray] = made) -> None:
            started = time.perf_counter()
            rng = np.random.default_rng([config.seed, v])
            crops, landmarks = framed.crops, framed.landmarks
            if config.framing_jitter:
                crops, landmarks = reframe(framed, *jittered_framing(len(crops), rng))
            pairs = [
                augment(c, s.label, lm, classes, rng)
                for c, s, lm in zip(crops, framed.samples, landmarks, strict=True)
            ]
            made["maps"] = extractor(np.stack([p[0] for p in pairs]))
            made["labels"] = np.array([classes.index(p[1]) for p in pairs], np.int64)
            log.info(
                "features: view %d/%d, %d crops, %.1f s",
                v + 1,
                config.views,
                len(crops),
                time.perf_counter() - started,
            )

        def part(name: str, made: dict[str, np.ndarray] = made) -> np.ndarray:
            if name not in made:
                compute()
            return made.pop(name)

        y[v] = cache.get({**key, "part": "labels"}, lambda: part("labels"))
        maps[v] = cache.get({**key, "part": "maps"}, lambda: part("maps"))
    return maps, y


def framing_maps(
    extractor: MapExtractor, framed: FramedSet, margin: float, cache: FeatureCache
) -> np.ndarray:
    """Maps of the faces cropped with `margin` (no augmentation): what a model is judged on."""

    def compute() -> np.ndarray:
        if margin == CROP_MARGIN:
            return extractor(framed.crops)
        return extractor(reframe(framed, np.full(len(framed.samples), margin))[0])

    key = {
        "faces": faces_key(framed),
        "margin": margin,
        "input_size": extractor.meta.input_size,
        "cut": CUT,
    }
    return cache.get(key, compute)


@dataclass
class Fitted:
    """A trained network and what happened on the way."""

    backbone: nn.Module
    head: nn.Module
    uncertain_below: float
    temperature: float
    validation_ece: tuple[float, float]  # before and after temperature scaling
    history: list[dict[str, Any]]
    finetuning: str
    monitor_name: str


def fit(
    config: TrainConfig,
    framed: FramedSet,
    plan: SplitPlan,
    meta: ModelMetadata,
    cache: FeatureCache | None = None,
) -> Fitted:
    """Cache features per augmented view, then `fit_maps`."""
    cache = cache or FeatureCache(None)
    classes = meta.classes
    backbone = load_backbone()
    extractor = MapExtractor(backbone[:CUT], meta)  # type: ignore[index]
    train_set = framed.subset(plan.train)
    maps, y_views = training_views(extractor, train_set, classes, config, cache)
    has_val = bool(plan.val.any())
    watched = framed.subset(plan.val if has_val else plan.test)
    monitor = Monitor(
        framing_maps(extractor, watched, CROP_MARGIN, cache),
        np.array([classes.index(s.label) for s in watched.samples], np.int64),
        watched.face_sizes,
        is_validation=has_val,
    )
    return fit_maps(config, backbone, maps, y_views, monitor, classes)


@dataclass(frozen=True)
class Monitor:
    """The faces watched during training: validation (or, without it, held-out faces that are
    only watched, never used to stop early, keep fine-tuning, calibrate or choose the
    threshold)."""

    maps: np.ndarray
    y: np.ndarray
    face_sizes: np.ndarray
    is_validation: bool


def fit_maps(
    config: TrainConfig,
    backbone: nn.Module,
    maps: np.ndarray,
    y_views: np.ndarray,
    monitor: Monitor,
    classes: list[str],
) -> Fitted:
    """Train the head on cached maps, fine-tune the top blocks (kept only if validation
    improves), fit the temperature and choose the uncertainty threshold on validation.
    `backbone`'s top blocks are trained in place."""
    assert config.epochs is not None and config.learning_rate is not None
    assert config.finetune_learning_rate is not None and config.hard_mining is not None
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    top = backbone[CUT:]  # type: ignore[index]
    watched = (monitor.maps, monitor.y)
    weights = _balanced_weights(y_views, len(classes)) if config.balance_classes else None
    patience = (config.patience or None) if monitor.is_validation else None
    head, history = train_head(
        pool_maps(top, maps),
        y_views,
        (pool_maps(top, monitor.maps), monitor.y),
        len(classes),
        Stage(
            config.epochs,
            config.batch_size,
            config.learning_rate,
            weights,
            patience,
            config.hard_mining.in_stage(fine_tuning=False),
        ),
        rng,
    )
    decision = "not run"
    if config.finetune_epochs and monitor.is_validation:
        stage = Stage(
            config.finetune_epochs,
            config.batch_size,
            config.finetune_learning_rate,
            weights,
            patience,
            config.hard_mining.in_stage(fine_tuning=True),
        )
        decision, more = _finetune_if_better(top, head, maps, y_views, watched, stage, rng, classes)
        history += more
    threshold, temperature, ece = 0.0, 1.0, (float("nan"), float("nan"))
    if monitor.is_validation:
        raw = _predict(top, head, watched, classes)
        temperature = fit_temperature(raw.probs, raw.y)
        calibrated = with_temperature(raw.probs, temperature)
        ece = (
            expected_calibration_error(raw.probs, raw.y),
            expected_calibration_error(calibrated, raw.y),
        )
        threshold = _uncertain_threshold(
            Predictions(classes, raw.y, calibrated, [""] * len(raw.y), monitor.face_sizes)
        )
        log.info(
            "temperature %.3f: validation ECE %.4f -> %.4f; uncertain below %.2f",
            temperature,
            *ece,
            threshold,
        )
    return Fitted(
        backbone,
        head,
        threshold,
        temperature,
        ece,
        history,
        decision,
        "validation" if monitor.is_validation else "held-out",
    )


def _uncertain_threshold(p: Predictions) -> float:
    """The threshold chosen on validation faces of a size whose labels can be trusted (all
    faces when fewer than 20 are that large): few of them may be left `uncertain`."""
    big = p.face_sizes >= TRUSTED_FACE_SIDE
    chosen = p.subset(big) if big.sum() >= 20 else p
    return choose_threshold(chosen, max_uncertain=MAX_UNCERTAIN_TRUSTED)


def _finetune_if_better(
    top: nn.Module,
    head: nn.Module,
    maps: np.ndarray,
    y_views: np.ndarray,
    monitor: tuple[np.ndarray, np.ndarray],
    stage: Stage,
    rng: np.random.Generator,
    classes: list[str],
) -> tuple[str, list[dict[str, Any]]]:
    """Fine-tune, then keep the new weights only if validation balanced accuracy rose; returns
    the decision as the model's metadata records it, and the epochs' history."""
    before = _predict(top, head, monitor, classes).metrics().balanced_accuracy
    saved = copy.deepcopy((top.state_dict(), head.state_dict()))
    history = finetune(top, head, maps, y_views, monitor, stage, rng)
    after = _predict(top, head, monitor, classes).metrics().balanced_accuracy
    verdict = "kept" if after > before else "discarded"
    if verdict == "discarded":
        top.load_state_dict(saved[0])
        head.load_state_dict(saved[1])
    decision = (
        f"{verdict}: blocks {CUT}+ fine-tuned, validation balanced accuracy "
        f"{before:.3f} -> {after:.3f}"
    )
    log.info("fine-tuning %s", decision)
    return decision, history


def maps_probs(top: nn.Module, head: nn.Module, maps: np.ndarray) -> np.ndarray:
    """Softmax of the network on cached maps (no temperature); at least one map."""
    model = Classifier(top, head)
    model.eval()
    with torch.no_grad():
        return np.concatenate(
            [
                torch.softmax(
                    model(torch.from_numpy(np.asarray(maps[i : i + 256], np.float32))), 1
                ).numpy()
                for i in range(0, len(maps), 256)
            ]
        )


def _predict(
    top: nn.Module, head: nn.Module, monitor: tuple[np.ndarray, np.ndarray], classes: list[str]
) -> Predictions:
    """Softmax of the network on cached maps, as Predictions of the monitored faces."""
    return Predictions(classes, monitor[1], maps_probs(top, head, monitor[0]), [], np.zeros(0))


def _balanced_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Loss weights by inverse class frequency (over every view)."""
    counts = np.bincount(y.ravel(), minlength=num_classes).astype(np.float64)
    return counts.sum() / (num_classes * np.maximum(counts, 1))
