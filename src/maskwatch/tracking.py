"""Tracks across video frames: IoU matching, per-track probability smoothing, settled labels.

Each face is matched to the track whose last box overlaps it most (greedy, IoU >= `min_iou`);
unmatched faces start new tracks, and tracks unseen for `max_missed` frames end. A track's
probabilities are an exponential moving average of its faces', so one odd frame does not flip
its label; the label a face is shown with comes from its track's average. A track's label
*settles* once that average has named the same (certain) label for `settle_frames` frames in a
row; settling, a settled label changing, a track appearing and a track leaving are reported as
`TrackChange`s, from which events.py makes the event stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from maskwatch.defaults import SETTLE_FRAMES, SETTLE_FRAMES_RANGE
from maskwatch.labels import UNCERTAIN
from maskwatch.types import APPEAR, CHANGE, LEAVE, SETTLE, Faces, TrackChange


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
    missed: int = 0
    settled: str | None = None  # the label that has held for settle_frames frames
    candidate: str | None = None  # the current smoothed label, and for how many frames
    streak: int = 0

    def confidence(self, classes: tuple[str, ...], label: str | None) -> float:
        """Smoothed probability of `label` (the top probability when there is no such class)."""
        if label in classes:
            return float(self.probs[classes.index(label)])
        return float(self.probs.max()) if self.probs.size else 0.0


@dataclass
class IoUTracker:
    """Gives faces track ids and smoothed probabilities, frame after frame."""

    min_iou: float = 0.3
    max_missed: int = 15
    smoothing: float = 0.6  # weight of the past in the moving average
    settle_frames: int = SETTLE_FRAMES
    tracks: list[Track] = field(default_factory=list)
    classes: tuple[str, ...] = ()
    _next_id: int = 1

    def __post_init__(self) -> None:
        SETTLE_FRAMES_RANGE.check("settle_frames", self.settle_frames)

    def update(
        self, faces: Faces, labels_for: Callable[[np.ndarray], tuple[str, ...]]
    ) -> tuple[Faces, list[TrackChange]]:
        """`faces` (classified) with track ids, smoothed probabilities and labels from them, and
        what changed: tracks that appeared, settled, changed label or left in this frame."""
        changes: list[TrackChange] = []
        if faces.classified:
            self.classes = faces.classes
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
        matched: list[Track] = []  # the track of each face
        smoothed = np.array(faces.probs, np.float32, copy=True)
        for f in range(len(faces)):
            if f in assigned:
                track = self.tracks[assigned[f]]
                track.probs = self.smoothing * track.probs + (1 - self.smoothing) * faces.probs[f]
                track.box = boxes[f]
                track.missed = 0
            else:
                track = Track(self._next_id, boxes[f], faces.probs[f].copy())
                self._next_id += 1
                self.tracks.append(track)
                used_tracks.add(len(self.tracks) - 1)
                changes.append(self._change(APPEAR, track))
            matched.append(track)
            smoothed[f] = track.probs
        out = faces.with_tracks(np.array([t.id for t in matched], np.int64))
        if faces.classified:
            labels = labels_for(smoothed)
            out = out.with_predictions(smoothed, faces.classes, labels)
            for track, label in zip(matched, labels, strict=True):
                changes.extend(self._settle(track, label))
        for i, track in enumerate(self.tracks):
            if i not in used_tracks:
                track.missed += 1
        changes.extend(self._change(LEAVE, t) for t in self.tracks if t.missed > self.max_missed)
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return out, changes

    def finish(self) -> list[TrackChange]:
        """End every track (the source has ended): one LEAVE each."""
        changes = [self._change(LEAVE, t) for t in self.tracks]
        self.tracks = []
        return changes

    def _change(self, kind: str, track: Track, previous: str | None = None) -> TrackChange:
        return TrackChange(
            kind,
            track.id,
            track.settled,
            track.confidence(self.classes, track.settled),
            track.box.copy(),
            previous,
        )

    def _settle(self, track: Track, label: str) -> list[TrackChange]:
        if label == track.candidate:
            track.streak += 1
        else:
            track.candidate, track.streak = label, 1
        if track.streak < self.settle_frames or label in (UNCERTAIN, track.settled):
            return []
        previous, track.settled = track.settled, label
        return [self._change(SETTLE if previous is None else CHANGE, track, previous)]
