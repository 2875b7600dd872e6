"""Training: datasets and groups, augmentation, the MobileNetV2 model, the loop, reports, export.

Needs the `train` extra (torch, torchvision, onnx, matplotlib); nothing in the core imports it.
"""
