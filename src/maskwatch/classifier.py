"""The ONNX mask classifier: metadata, preprocessing and batched inference with ONNX Runtime.

A model is an `.onnx` file plus a `.json` of the same stem that says its classes, input size,
crop margin, normalisation, uncertainty threshold, training data and measured metrics.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.defaults import (
    CROP_MARGIN,
    CROP_MARGIN_RANGE,
    DEFAULT_INPUT_SIZE,
    INPUT_SIZE_RANGE,
    MAX_SETTINGS_BYTES,
    MEAN_RANGE,
    STD_RANGE,
    TEMPERATURE_RANGE,
    UNCERTAIN_BELOW_RANGE,
)
from maskwatch.errors import ModelError, SettingError, SourceError
from maskwatch.jsontext import parse_json
from maskwatch.labels import CANONICAL, labels_for

METADATA_FORMAT = "maskwatch-classifier/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COLORS = ("RGB", "BGR")  # the channel order the network takes
DEFAULT_MODEL_NAME = "mask_classifier.onnx"  # what `train` writes: the float model
# Shipped in the package, default first: the int8 copy (`maskwatch export --int8`) classifies
# 1.5-2.2x faster than the float model and is as accurate on held-out faces (README).
BUNDLED_MODELS = ("mask_classifier_int8.onnx", DEFAULT_MODEL_NAME)


@dataclass
class ModelMetadata:
    """What a classifier needs besides its weights, stored as JSON beside the ONNX file."""

    classes: list[str]
    input_size: int = DEFAULT_INPUT_SIZE
    crop_margin: float = CROP_MARGIN
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    color: str = "RGB"
    uncertain_below: float = 0.0
    temperature: float = 1.0  # softmax temperature fitted on validation (calibration)
    sha256: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format: str = METADATA_FORMAT

    def __post_init__(self) -> None:
        """SettingError naming the first field of a wrong type or out of its range (metadata
        read from a file reaches here unchecked)."""
        classes = self.classes
        if (
            not isinstance(classes, list)
            or not 2 <= len(classes) <= len(CANONICAL)
            or any(c not in CANONICAL for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise SettingError(
                f"classes must list two or three of {', '.join(CANONICAL)}, not {classes!r}"
            )
        INPUT_SIZE_RANGE.check("input_size", self.input_size, whole=True)
        CROP_MARGIN_RANGE.check("crop_margin", self.crop_margin)
        for name, allowed in (("mean", MEAN_RANGE), ("std", STD_RANGE)):
            values = getattr(self, name)
            if not isinstance(values, list) or len(values) != 3:
                raise SettingError(f"{name} must list 3 numbers (R, G, B), not {values!r}")
            for value in values:
                allowed.check(f"each of {name}", value)
        if self.color not in COLORS:
            raise SettingError(f"color must be {' or '.join(COLORS)}, not {self.color!r}")
        UNCERTAIN_BELOW_RANGE.check("uncertain_below", self.uncertain_below)
        TEMPERATURE_RANGE.check("temperature", self.temperature)
        if not isinstance(self.sha256, str):
            raise SettingError(f"sha256 must be a string, not {self.sha256!r}")
        if self.format != METADATA_FORMAT:
            raise SettingError(f"format must be {METADATA_FORMAT}, not {self.format!r}")
        for name in ("training", "metrics"):
            if not isinstance(getattr(self, name), dict):
                raise SettingError(f"{name} must be a JSON object, not {getattr(self, name)!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> ModelMetadata:
        """Metadata from its JSON; every field checked: one ModelError naming `where` and the
        field."""
        try:
            data = parse_json(text)
        except ValueError as exc:
            raise ModelError(f"model metadata {where} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError(f"model metadata {where} must hold a JSON object")
        if "classes" not in data:
            raise ModelError(f"model metadata {where} has no classes")
        try:
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except SettingError as exc:
            raise ModelError(f"model metadata {where}: {exc}") from exc


def metadata_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def bundled_model_path(name: str) -> Path:
    return Path(str(resources.files("maskwatch") / "models" / name))


def default_model_path() -> Path:
    """The classifier `detect` uses unless told otherwise (shipped inside the package)."""
    return bundled_model_path(BUNDLED_MODELS[0])


def load_metadata(model_path: Path) -> ModelMetadata:
    meta_file = metadata_path(model_path)
    if not os.path.lexists(meta_file):
        raise ModelError(
            f"model metadata not found: {meta_file} (it must sit beside {model_path.name})"
        )
    from maskwatch.images import read_file

    try:
        text = read_file(meta_file, MAX_SETTINGS_BYTES, "model metadata").decode("utf-8")
    except SourceError as exc:
        raise ModelError(f"cannot read model metadata {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"cannot read model metadata {meta_file}: {exc}") from exc
    return ModelMetadata.from_json(text, str(meta_file))


def to_input_tensor(crops_bgr: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """(N, S, S, 3) uint8 BGR crops -> (N, 3, S, S) float32, RGB, normalised as in training.

    One OpenCV call (about 8x faster than the same arithmetic in NumPy, identical to 1e-6)."""
    params = cv2.dnn.Image2BlobParams()
    params.scalefactor = (*(1.0 / (255.0 * s) for s in meta.std), 0.0)
    params.mean = (*(255.0 * m for m in meta.mean), 0.0)
    params.swapRB = meta.color == "RGB"
    params.ddepth = cv2.CV_32F
    params.size = (meta.input_size, meta.input_size)
    return np.asarray(cv2.dnn.blobFromImagesWithParams(list(crops_bgr), params), np.float32)


def with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from softmax(logits): p ** (1 / T), renormalised (argmax unchanged)."""
    if temperature == 1.0 or len(probs) == 0:
        return probs
    logp = np.log(np.maximum(probs, 1e-12)) / temperature
    scaled = np.exp(logp - logp.max(axis=1, keepdims=True))
    return np.asarray(scaled / scaled.sum(axis=1, keepdims=True), np.float32)


class MaskClassifier:
    """Mask / no mask / incorrect probabilities for batches of face crops.

    ONNX Runtime's worker threads do not spin-wait between runs by default here: in the detect
    loop they would otherwise hold the cores the face detector needs next (measured in
    benchmarks/bench_detect.py).
    """

    def __init__(
        self, model_path: Path | None = None, threads: int = 0, spinning: bool = False
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        self.path = path
        self.meta = load_metadata(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise ModelError(
                f"cannot load model {path}: it is not a valid ONNX file ({exc})"
            ) from exc
        self._input = self._session.get_inputs()[0]
        self._check_shapes()

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    @property
    def input_size(self) -> int:
        return self.meta.input_size

    def _check_shapes(self) -> None:
        shape = self._input.shape
        size = self.meta.input_size
        if len(shape) != 4 or list(shape[1:]) != [3, size, size]:
            raise ModelError(
                f"model {self.path} takes input {shape}, but its metadata says 3x{size}x{size}"
            )
        out_shape = self._session.get_outputs()[0].shape
        if len(out_shape) != 2 or out_shape[1] != len(self.classes):
            raise ModelError(
                f"model {self.path} outputs {out_shape}, but its metadata lists "
                f"{len(self.classes)} classes"
            )

    def predict(self, crops_bgr: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 BGR crops -> (N, C) probabilities, in one batch."""
        if len(crops_bgr) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        tensor = to_input_tensor(crops_bgr, self.meta)
        (probs,) = self._session.run(None, {self._input.name: tensor})
        return with_temperature(np.asarray(probs, np.float32), self.meta.temperature)

    def labels(self, probs: np.ndarray) -> tuple[str, ...]:
        return labels_for(probs, self.classes, self.meta.uncertain_below)
