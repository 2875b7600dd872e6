"""Tracks across video frames: IoU matching, per-track probability smoothing, stable labels.

Each face is matched to the track whose last box overlaps it most (greedy, IoU >= `min_iou`);
unmatched faces start new tracks, and tracks unseen for `max_missed` frames end. A track's
probabilities are an exponential moving average of its faces', so one odd frame does not flip
its label; the label a face is shown with comes from its track's average.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from maskwatch.types import Faces


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of x1y1x2y2 boxes: (len(a), len(b))."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Track:
    id: int
    box: np.ndarray
    probs: np.ndarray
    frames: int = 1
    missed: int = 0


@dataclass
class IoUTracker:
    """Gives faces track ids and smoothed probabilities, frame after frame."""

    min_iou: float = 0.3
    max_missed: int = 15
    smoothing: float = 0.6  # weight of the past in the moving average
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 1

    def update(self, faces: Faces, labels_for: Callable[[np.ndarray], tuple[str, ...]]) -> Faces:
        """`faces` (classified) with track ids, smoothed probabilities and labels from them."""
        boxes = faces.boxes
        overlap = iou_matrix(np.array([t.box for t in self.tracks]).reshape(-1, 4), boxes)
        assigned: dict[int, int] = {}
        used_tracks: set[int] = set()
        for flat in np.argsort(-overlap, axis=None):
            t, f = np.unravel_index(flat, overlap.shape)
            if overlap[t, f] < self.min_iou:
                break
            if t in used_tracks or f in assigned:
                continue
            assigned[int(f)] = int(t)
            used_tracks.add(int(t))
        ids = np.zeros(len(faces), np.int64)
        smoothed = np.array(faces.probs, np.float32, copy=True)
        for f in range(len(faces)):
            if f in assigned:
                track = self.tracks[assigned[f]]
                track.probs = self.smoothing * track.probs + (1 - self.smoothing) * faces.probs[f]
                track.box = boxes[f]
                track.frames += 1
                track.missed = 0
            else:
                track = Track(self._next_id, boxes[f], faces.probs[f].copy())
                self._next_id += 1
                self.tracks.append(track)
                used_tracks.add(len(self.tracks) - 1)
            ids[f] = track.id
            smoothed[f] = track.probs
        for i, track in enumerate(self.tracks):
            if i not in used_tracks:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        out = faces.with_tracks(ids)
        if faces.classified:
            out = out.with_predictions(smoothed, faces.classes, labels_for(smoothed))
        return out
