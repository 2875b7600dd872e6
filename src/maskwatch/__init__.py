"""maskwatch: real-time face-mask detection.

Faces are found by YuNet, each one is cropped and classified (mask, no mask, mask worn
incorrectly) by a transfer-learned MobileNetV2 run with ONNX Runtime.
"""

__version__ = "0.1.0"
