"""The network: ImageNet MobileNetV2 (frozen, or with its top blocks fine-tuned by the `real`
recipe) with the seed's head.

The backbone is torchvision's MobileNetV2 `features`, defined here layer for layer so that
torchvision's own ImageNet checkpoint loads into it unchanged: training then needs only torch,
whose CPU build is a tenth of the size of the CUDA build that torchvision's wheels pull in.
`tests/test_core.py` checks the features against values torchvision computed.

Head: global average pool, dense 128 ReLU, dropout 0.5, dense to the classes (softmax is added
for export; training uses logits with cross-entropy).
"""

from __future__ import annotations

import io

import torch
from torch import nn

from maskwatch import hub
from maskwatch.errors import ModelError

FEATURE_DIM = 1280
# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
INVERTED_RESIDUALS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def conv_bn_relu6(
    inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """torchvision's Conv2dNormActivation with ReLU6 (keys .0 conv, .1 batch norm)."""
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand 1x1, depthwise 3x3, project 1x1; a shortcut where shapes allow."""

    def __init__(self, inp: int, out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = inp * expansion
        expand = [conv_bn_relu6(inp, hidden, kernel=1)] if expansion != 1 else []
        self.conv = nn.Sequential(
            *expand,
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        )
        self.use_res_connect = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_res_connect else y


def mobilenet_v2_features() -> nn.Sequential:
    """MobileNetV2's convolutional part, width 1.0, untrained:
    (N, 3, S, S) -> (N, 1280, S/32, S/32)."""
    layers: list[nn.Module] = [conv_bn_relu6(3, 32, stride=2)]
    channels = 32
    for expansion, out, repeats, stride in INVERTED_RESIDUALS:
        for i in range(repeats):
            layers.append(InvertedResidual(channels, out, stride if i == 0 else 1, expansion))
            channels = out
    layers.append(conv_bn_relu6(channels, FEATURE_DIM, kernel=1))
    return nn.Sequential(*layers)


def load_backbone(pretrained: bool = True) -> nn.Module:
    """MobileNetV2's convolutional part with ImageNet weights, frozen and in eval mode.

    The weights are torchvision's checkpoint, fetched and verified like every model file.
    """
    features = mobilenet_v2_features()
    if pretrained:
        path = hub.fetch(hub.MOBILENET_V2.name)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            prefix = "features."
            own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            features.load_state_dict(own, strict=True)
        except Exception as exc:  # a damaged file surfaces as several torch error types
            raise ModelError(f"cannot load the MobileNetV2 weights {path}: {exc}") from exc
    features.eval()
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


def onnx_bytes(module: nn.Module, input_size: int, output_name: str) -> bytes:
    """The module as ONNX, with a dynamic batch axis (TorchScript-based exporter, opset 17), in
    memory: no temporary file to fail on a full or size-limited disk."""
    module.eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (dummy,),
        buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes any binary file
        input_names=["input"],
        output_names=[output_name],
        dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return buffer.getvalue()
