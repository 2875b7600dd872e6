"""The network: torchvision's ImageNet MobileNetV2 (frozen, or with its top blocks fine-tuned
by the `real` recipe) with the seed's head.

Head: global average pool, dense 128 ReLU, dropout 0.5, dense to the classes (softmax is added
for export; training uses logits with cross-entropy).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from maskwatch import hub
from maskwatch.errors import ModelError

FEATURE_DIM = 1280


def load_backbone(pretrained: bool = True) -> nn.Module:
    """MobileNetV2's convolutional part, ImageNet weights, frozen and in eval mode.

    Weights come through torchvision's own weights API (cached under $TORCH_HOME); with
    MASKWATCH_MIRROR set they are first placed there from the mirror.
    """
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    weights = None
    if pretrained:
        hub.prepare_backbone_weights()
        weights = MobileNet_V2_Weights.IMAGENET1K_V1
    try:
        net = mobilenet_v2(weights=weights)
    except Exception as exc:  # torchvision reports download and hash failures as several types
        raise ModelError(f"cannot load torchvision's MobileNetV2 weights: {exc}") from exc
    features = net.features.eval()
    for p in features.parameters():
        p.requires_grad_(False)
    return features


def build_head(num_classes: int, hidden: int = 128, dropout: float = 0.5) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(FEATURE_DIM, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class PooledFeatures(nn.Module):
    """Backbone followed by global average pooling: (N, 3, S, S) -> (N, 1280)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))


class MaskNet(nn.Module):
    """The whole classifier as exported: crops in, class probabilities out."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = PooledFeatures(backbone)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(x)), dim=1)


def export_onnx(module: nn.Module, path: Path, input_size: int, output_name: str) -> None:
    """Export with a dynamic batch axis (TorchScript-based exporter, opset 17)."""
    module.eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    torch.onnx.export(
        module,
        (dummy,),
        str(path),
        input_names=["input"],
        output_names=[output_name],
        dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
