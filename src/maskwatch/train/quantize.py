"""`maskwatch export --int8`: static int8 quantisation (QDQ) of a classifier, calibrated on real
face crops framed exactly as `detect` frames them.

Static rather than dynamic: ONNX Runtime's dynamic quantisation leaves convolutions slow, while
QDQ with per-channel weights runs MobileNetV2's convolutions on int8 kernels (VNNI where the CPU
has it). Calibration faces come from the given data, leaving out every photo of a training run's
test faces so the quantised model can still be judged on held-out faces.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.atomic import atomic_path
from maskwatch.classifier import MaskClassifier, load_metadata, metadata_path, to_input_tensor
from maskwatch.errors import DatasetError, ModelError
from maskwatch.faces import YuNetDetector
from maskwatch.hub import sha256_of
from maskwatch.train.data import load_datasets, read_faces_csv
from maskwatch.train.export import write_metadata
from maskwatch.train.framing import frame_samples

log = logging.getLogger("maskwatch")

CALIBRATION_FACES = 300
CALIBRATION_BATCH = 20  # the percentile calibrator needs batches of one size
# The classifier head stays float: quantised, the softmax would give probabilities in steps of
# 1/255; the head is a tiny share of the time.
HEAD_OPS = ("Gemm", "MatMul", "Softmax")
CALIBRATION_PERCENTILE = 99.99  # kept accuracy on held-out faces where MinMax lost 0.4 point


def calibration_crops(
    data: list[str],
    input_size: int,
    margin: float,
    count: int = CALIBRATION_FACES,
    exclude: Path | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Up to `count` face crops from `data`, none from a photo listed in `exclude` (a
    test_faces.csv), chosen at random with `seed`, as uint8 BGR."""
    test = read_faces_csv(exclude) if exclude is not None else None  # a bad list fails first
    samples = load_datasets(data)
    if test is not None:
        photos = {s.image.resolve() for s in test}
        groups = {s.group for s in test}
        samples = [s for s in samples if s.image.resolve() not in photos and s.group not in groups]
    if not samples:
        raise DatasetError("no calibration faces left in " + ", ".join(data))
    random.Random(seed).shuffle(samples)
    framed = frame_samples(samples[: count * 2], YuNetDetector(), input_size, margin)
    return framed.crops[:count]


class _Reader:
    """Feeds calibration batches to ONNX Runtime's calibrator."""

    def __init__(self, batches: list[np.ndarray], input_name: str) -> None:
        self._batches = iter(batches)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}

    def rewind(self) -> None:  # the protocol asks for it; one pass is all we use
        pass


def quantize_int8(model: Path, out: Path, crops: np.ndarray) -> dict[str, Any]:
    """Write an int8 QDQ copy of `model` (and its JSON) to `out`, calibrated on `crops`.

    Returns how far it moved from the float model on the calibration crops."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = MaskClassifier(model)
    meta = source.meta
    x = to_input_tensor(crops, meta)
    usable = len(x) - len(x) % CALIBRATION_BATCH
    if usable == 0:
        raise DatasetError(f"int8 calibration needs at least {CALIBRATION_BATCH} faces")
    batches = [x[i : i + CALIBRATION_BATCH] for i in range(0, usable, CALIBRATION_BATCH)]
    with tempfile.TemporaryDirectory(prefix="maskwatch-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        head = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type in HEAD_OPS]
        with atomic_path(out) as tmp, contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared),
                str(tmp),
                _Reader(batches, "input"),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=head,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
            )
            meta.sha256 = sha256_of(tmp)
            tmp_meta = tmp.with_suffix(".json")
            try:
                shutil.copyfile(metadata_path(model), tmp_meta)
                float_probs = source.predict(crops)
                int8_probs = MaskClassifier(tmp).predict(crops)
            finally:
                tmp_meta.unlink(missing_ok=True)
    agreement = float((float_probs.argmax(1) == int8_probs.argmax(1)).mean())
    if agreement < 0.9:
        out.unlink(missing_ok=True)
        raise ModelError(f"int8 model agrees with the float model on only {agreement:.0%} of faces")
    meta.training = dict(
        meta.training,
        quantized={
            "from": model.name,
            "format": "int8 QDQ, per-channel weights, percentile calibration, float head",
            "calibration_faces": usable,
        },
    )
    write_metadata(out, meta)
    return {
        "calibration_faces": usable,
        "agreement": agreement,
        "max_prob_diff": float(np.abs(float_probs - int8_probs).max()),
    }


def record_held_out(model: Path, faces: Path) -> dict[str, Any]:
    """Evaluate `model` on exactly the faces of a test_faces.csv and keep the figures in its
    metadata, replacing those it inherited from the float model."""
    from maskwatch.train.run import evaluate

    report = evaluate(model, [], faces=faces)
    meta = load_metadata(model)
    meta.metrics = dict(
        meta.metrics,
        held_out=report["headline"],
        by_source=report["by_source"],
        held_out_faces=str(faces),
    )
    write_metadata(model, meta)
    return report
