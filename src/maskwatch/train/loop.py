"""Feature caching and head training.

The backbone is frozen (and its batch-norm layers are in eval mode), so its output for a given
augmented crop never changes during training. We therefore run it once per augmented *view*
(with ONNX Runtime, several times faster than eager PyTorch on a CPU) and train only the small
head for every epoch on cached features, drawing one of the views per crop per epoch.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maskwatch.classifier import ModelMetadata, to_input_tensor
from maskwatch.train.model import FEATURE_DIM, PooledFeatures, build_head, export_onnx

log = logging.getLogger("maskwatch")

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class FeatureExtractor:
    """Pooled MobileNetV2 features of crops, computed by ONNX Runtime from the torch backbone."""

    def __init__(self, backbone: nn.Module, meta: ModelMetadata, batch_size: int = 64) -> None:
        import onnxruntime as ort

        self.meta = meta
        self.batch_size = batch_size
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "backbone.onnx"
            export_onnx(PooledFeatures(backbone), path, meta.input_size, "features")
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = np.zeros((len(crops), FEATURE_DIM), np.float32)
        for start in range(0, len(crops), self.batch_size):
            batch = to_input_tensor(crops[start : start + self.batch_size], self.meta)
            out[start : start + len(batch)] = self._session.run(None, {"input": batch})[0]
        return out

    def views(
        self, crops: np.ndarray, augment: Augment, views: int, rng: np.random.Generator
    ) -> np.ndarray:
        """(views, N, 1280) features of `views` independently augmented copies of each crop."""
        out = np.zeros((views, len(crops), FEATURE_DIM), np.float32)
        for v in range(views):
            started = time.perf_counter()
            augmented = np.stack([augment(c, rng) for c in crops])
            out[v] = self(augmented)
            log.info(
                "features: view %d/%d, %d crops, %.1f s",
                v + 1,
                views,
                len(crops),
                time.perf_counter() - started,
            )
        return out


@dataclass(frozen=True)
class HeadTraining:
    epochs: int
    batch_size: int
    learning_rate: float
    class_weights: np.ndarray | None = None


def train_head(
    train_views: np.ndarray,
    y_train: np.ndarray,
    test_features: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    settings: HeadTraining,
    rng: np.random.Generator,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Fit the head with Adam; returns it (in eval mode) and a per-epoch history.

    The held-out columns of the history are for the curves only: nothing is selected on them.
    """
    head = build_head(num_classes)
    optimiser = torch.optim.Adam(head.parameters(), lr=settings.learning_rate)
    weights = (
        None
        if settings.class_weights is None
        else torch.tensor(settings.class_weights, dtype=torch.float32)
    )
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    eval_loss = nn.CrossEntropyLoss()
    x_test, t_test = torch.from_numpy(test_features), torch.from_numpy(y_test)
    n = len(y_train)
    history: list[dict[str, float]] = []
    for epoch in range(1, settings.epochs + 1):
        head.train()
        view_of = rng.integers(len(train_views), size=n)
        order = rng.permutation(n)
        total_loss, correct = 0.0, 0
        for start in range(0, n, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            x = torch.from_numpy(train_views[view_of[idx], idx])
            t = torch.from_numpy(y_train[idx])
            logits = head(x)
            loss = loss_fn(logits, t)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == t).sum())
        head.eval()
        with torch.no_grad():
            test_logits = head(x_test)
            test_loss = float(eval_loss(test_logits, t_test))
            test_acc = float((test_logits.argmax(1) == t_test).float().mean())
        history.append(
            {
                "epoch": epoch,
                "train_loss": total_loss / n,
                "train_acc": correct / n,
                "test_loss": test_loss,
                "test_acc": test_acc,
            }
        )
        log.info(
            "epoch %d/%d  loss %.4f  acc %.3f  held-out loss %.4f  acc %.3f",
            epoch,
            settings.epochs,
            total_loss / n,
            correct / n,
            test_loss,
            test_acc,
        )
    head.eval()
    return head, history
