"""Cached frozen-backbone feature maps on disk, so repeated runs on the same faces (the
cross-source protocol's runs, a training run repeated with another head or threshold) extract
them once.

An entry is one block of maps (one augmented view, or one framing, of a list of faces), keyed by
what determines it: the faces (photo, box, label, alignment), the framing, the view and its
augmentation.
Entries are written whole under a temporary name and renamed (atomic.py), read memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.atomic import atomic_path
from maskwatch.train.framing import FramedSet

log = logging.getLogger("maskwatch")


def faces_key(framed: FramedSet) -> str:
    """A fingerprint of the faces, in order: photo, box and label of each, and whether they
    were aligned by their landmarks."""
    digest = hashlib.sha256()
    if framed.align:
        digest.update(b"aligned by landmarks\n")
    for s in framed.samples:
        digest.update(f"{s.image}|{s.box}|{s.label}\n".encode())
    return digest.hexdigest()


class FeatureCache:
    """Blocks of feature maps by key, in a folder (None: nothing is kept)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def get(self, key: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The block stored under `key`, computed (and stored) when absent."""
        if self.folder is None:
            return compute()
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        path = self.folder / f"{name}.npy"
        if path.is_file():
            try:
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                log.warning("feature cache entry %s unreadable (%s); computing again", path, exc)
        block = compute()
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, block)
        return block
