"""Export the trained classifier to ONNX, check the graph, and compare ONNX Runtime to PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from maskwatch.atomic import atomic_path, write_text
from maskwatch.classifier import ModelMetadata, metadata_path, to_input_tensor
from maskwatch.errors import ModelError
from maskwatch.hub import sha256_of
from maskwatch.train.model import MaskNet, onnx_bytes

MAX_EXPORT_DIFF = 1e-4


def export_classifier(
    backbone: nn.Module, head: nn.Module, meta: ModelMetadata, path: Path, check_crops: np.ndarray
) -> float:
    """Write `path` (ONNX) and its metadata JSON; returns the largest probability difference
    between PyTorch and ONNX Runtime on `check_crops`."""
    import onnx
    import onnxruntime as ort

    net = MaskNet(backbone, head).eval()
    with atomic_path(path) as tmp:
        tmp.write_bytes(onnx_bytes(net, meta.input_size, "probs"))
        onnx.checker.check_model(str(tmp))
        x = to_input_tensor(check_crops, meta)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x})[0]
        diff = float(np.abs(expected - got).max()) if len(x) else 0.0
        if diff > MAX_EXPORT_DIFF:
            raise ModelError(f"ONNX export differs from PyTorch by {diff:.2e}; not saving it")
        meta.sha256 = sha256_of(tmp)
    write_metadata(path, meta)
    return diff


def write_metadata(model_path: Path, meta: ModelMetadata) -> None:
    write_text(metadata_path(model_path), meta.to_json())
