"""Training choices and recipe defaults, in a module light enough for the command-line parser
to import (no NumPy, no torch), so `--help` states them from here."""

from __future__ import annotations

from typing import Any

SPLITS = ("group", "random")
FRAMINGS = ("detector", "annotation")
AUGMENTS = ("seed", "real", "none")
# Defaults that differ by recipe. seed: the original project's (frozen backbone, head only);
# real: for real photos (richer augmentation, balanced classes, fine-tuning, validation).
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {
        "epochs": 40,
        "learning_rate": 1e-4,
        "views": 8,
        "augment": "seed",
        "finetune_epochs": 0,
        "finetune_learning_rate": 1e-4,
        "val_fraction": 0.0,
        "balance_classes": False,
        "patience": 0,
    },
    "real": {
        "epochs": 30,
        "learning_rate": 1e-3,
        "views": 8,
        "augment": "real",
        "finetune_epochs": 15,
        "finetune_learning_rate": 1e-4,
        "val_fraction": 0.15,
        "balance_classes": True,
        "patience": 4,
    },
}
