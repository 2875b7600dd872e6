"""Tracks across video frames: stable ids for people, smoothed probabilities, settled labels.

Each frame's faces are matched to the tracks in two rounds. First by overlap: the box a track
is expected at (its last box moved on by its recent velocity) against each face, greedily,
IoU >= `min_iou`. Then the faces and tracks left over by distance: a face whose centre lies
within about one face size of where a track was last seen, or is expected now (a reach that
grows while the track is unseen, up to `reach` sizes), and of a similar size, continues that
track. So a person hidden for a moment, or who steps out of view and comes back, keeps their id
while their track is remembered (`max_missed` frames or `memory_s` seconds of frame time unseen,
whichever is longer, so 2 s on a 30 fps webcam too; then it ends with a LEAVE).

A new face starts a *tentative* track; it becomes a person (gets the next id, an APPEAR) once
seen in `confirm_frames` frames in a row, and is dropped unannounced if missed before that, so
a one-frame false detection is never counted. Faces of tentative tracks have no track id
(NO_TRACK: `"track": null` in JSON) and their own smoothed label, never settled.

A track's probabilities are an exponential moving average of its faces', so one odd frame does
not flip its label. A label *settles* once that average has named the same (certain) label for
`settle_frames` frames in a row; appearing, settling, a settled label changing and leaving are
reported as `TrackChange`s, from which events.py makes the event stream. A face is marked
settled while its label is its track's settled label.

People are classified, not frames: `plan` says which faces of a frame the classifier must see,
namely new faces, people whose label has not settled (or whose smoothed label left the settled
one), people seen again after being missed, people whose box moved or changed size notably since
their last classification, and otherwise each person every `classify_every` frames of theirs.
The faces in between carry their track's probabilities and label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from maskwatch.defaults import (
    CLASSIFY_EVERY,
    CLASSIFY_EVERY_RANGE,
    RECLASSIFY_IOU,
    RECLASSIFY_SIZE,
    SETTLE_FRAMES,
    SETTLE_FRAMES_RANGE,
    Range,
)
from maskwatch.labels import UNCERTAIN, labels_for
from maskwatch.types import APPEAR, CHANGE, LEAVE, NO_TRACK, SETTLE, Faces, Kind, TrackChange

VELOCITY_FRAMES = 5  # a track unseen for longer is expected where it was last seen, not beyond


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


@dataclass(eq=False)
class Track:
    id: int  # NO_TRACK while tentative
    box: np.ndarray
    probs: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    missed: int = 0  # frames since last seen
    last_seen: float | None = None  # the frame time it was last seen at, when frames have times
    hits: int = 0  # frames seen
    settled: str | None = None  # the label that has held for settle_frames frames
    candidate: str | None = None  # the current smoothed label, and for how many frames
    streak: int = 0
    classified_box: np.ndarray | None = None  # the box at its last classification
    since_classified: int = 0  # frames seen since then

    @property
    def confirmed(self) -> bool:
        return self.id != NO_TRACK

    def expected(self) -> np.ndarray:
        """Where the track should be now: its last box moved on by its velocity."""
        return self.box + self.velocity * min(self.missed + 1, VELOCITY_FRAMES)

    def confidence(self, classes: tuple[str, ...], label: str | None) -> float:
        """Smoothed probability of `label` (the top probability when there is no such class)."""
        if label in classes:
            return float(self.probs[classes.index(label)])
        return float(self.probs.max()) if self.probs.size else 0.0


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _sizes(boxes: np.ndarray) -> np.ndarray:
    """The longer side of each box: a face cut by the frame's edge or an occluder keeps it."""
    return np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 1.0)


def _greedy(cost: np.ndarray, limit: float) -> list[tuple[int, int]]:
    """(row, column) pairs, cheapest first, each row and column once, cost <= limit."""
    pairs: list[tuple[int, int]] = []
    rows: set[int] = set()
    cols: set[int] = set()
    for flat in np.argsort(cost, axis=None, kind="stable"):
        r, c = (int(i) for i in np.unravel_index(flat, cost.shape))
        if cost[r, c] > limit:
            break
        if r not in rows and c not in cols:
            pairs.append((r, c))
            rows.add(r)
            cols.add(c)
    return pairs


@dataclass(frozen=True)
class Plan:
    """For each face of a frame, the track it continues (an index into the tracker's tracks,
    None: a new face), and whether the classifier must see it (`classify`, (N,) bool). Valid
    for the tracker's next `update` only."""

    tracks: tuple[int | None, ...]
    classify: np.ndarray


@dataclass
class IoUTracker:
    """Gives faces track ids and smoothed probabilities, frame after frame."""

    min_iou: float = 0.3
    max_missed: int = 30  # frames a person may be unseen and keep their id: 2 s at 15 fps
    memory_s: float = 2.0  # ... or seconds, when frames have times: whichever is longer
    smoothing: float = 0.6  # weight of the past in the moving average
    settle_frames: int = SETTLE_FRAMES
    confirm_frames: int = 3  # frames in a row a new face must be seen to count as a person
    reach: float = 2.5  # face sizes (longer box side) a lost track may be found from where it was
    uncertain_below: float = 0.0  # the classifier's threshold (the pipeline sets it)
    classify_every: int = CLASSIFY_EVERY  # frames between classifications of a settled person
    reclassify_iou: float = RECLASSIFY_IOU
    reclassify_size: float = RECLASSIFY_SIZE
    tracks: list[Track] = field(default_factory=list)
    classes: tuple[str, ...] = ()
    _next_id: int = 1

    def __post_init__(self) -> None:
        SETTLE_FRAMES_RANGE.check("settle_frames", self.settle_frames)
        SETTLE_FRAMES_RANGE.check("confirm_frames", self.confirm_frames)
        Range(0, 1).check("min_iou", self.min_iou)
        Range(0, 100_000).check("max_missed", self.max_missed)
        Range(0, 3600).check("memory_s", self.memory_s)
        Range(0, 100).check("reach", self.reach)
        Range(0, 1).check("uncertain_below", self.uncertain_below)
        CLASSIFY_EVERY_RANGE.check("classify_every", self.classify_every)
        Range(0, 1).check("reclassify_iou", self.reclassify_iou)
        Range(1, 100).check("reclassify_size", self.reclassify_size)

    def plan(self, boxes: np.ndarray) -> Plan:
        """Which track each of this frame's face boxes continues, and which faces to classify
        (see the module's docstring); pass it to `update` with the faces."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        found = self._match(boxes)
        due = [t is None or self._due(self.tracks[t], boxes[f]) for f, t in enumerate(found)]
        return Plan(tuple(found), np.array(due, np.bool_))

    def _due(self, track: Track, box: np.ndarray) -> bool:
        """Whether a known face must be classified again in this frame."""
        if track.classified_box is None or track.missed > 0:
            return True
        if track.settled is None or track.candidate != track.settled:
            return True
        if track.since_classified + 1 >= self.classify_every:
            return True
        last = track.classified_box
        if iou_matrix(last[None], box[None])[0, 0] < self.reclassify_iou:
            return True
        grown = float(_sizes(box[None])[0] / max(float(_sizes(last[None])[0]), 1e-6))
        return not 1 / self.reclassify_size <= grown <= self.reclassify_size

    def update(
        self, faces: Faces, time: float | None = None, plan: Plan | None = None
    ) -> tuple[Faces, list[TrackChange]]:
        """`faces` with track ids and, when they have probabilities, the smoothed probabilities of
        their tracks and the labels of those (the only labels these faces get); and what changed:
        tracks that appeared, settled, changed label or left in this frame. `time` (seconds, the
        frame's) lets a person unseen for `memory_s` keep their id however fast frames come.
        With this frame's `plan`, faces not marked `classified` carry their track's
        probabilities (their own rows are ignored); without one every face is matched here."""
        changes: list[TrackChange] = []
        if faces.predicted:
            self.classes = faces.classes
        boxes = np.asarray(faces.boxes, np.float32)
        fresh = faces.classified if faces.predicted else np.ones(len(faces), np.bool_)
        found = self._match(boxes) if plan is None else plan.tracks
        matched: list[Track] = []  # the track of each face
        for f, t in enumerate(found):
            if t is None:
                track = Track(NO_TRACK, boxes[f], faces.probs[f].copy())
                self.tracks.append(track)
            else:
                track = self.tracks[t]
                if fresh[f]:
                    track.probs = (
                        self.smoothing * track.probs + (1 - self.smoothing) * faces.probs[f]
                    )
            if fresh[f]:
                track.classified_box, track.since_classified = boxes[f], 0
            else:
                track.since_classified += 1
            self._see(track, boxes[f], time)
            if not track.confirmed and track.hits >= self.confirm_frames:
                track.id = self._next_id
                self._next_id += 1
                changes.append(self._change(APPEAR, track))
            matched.append(track)
        smoothed = np.array(faces.probs, np.float32, copy=True)
        for f, track in enumerate(matched):
            smoothed[f] = track.probs
        out = faces.with_tracks(np.array([t.id for t in matched], np.int64))
        if faces.predicted:
            labels = labels_for(smoothed, faces.classes, self.uncertain_below)
            for track, label in zip(matched, labels, strict=True):
                changes.extend(self._settle(track, label))
            settled = tuple(t.settled == label for t, label in zip(matched, labels, strict=True))
            out = out.with_predictions(smoothed, faces.classes, labels, settled)
        seen = {id(t) for t in matched}
        kept: list[Track] = []
        for track in self.tracks:
            if id(track) not in seen:
                track.missed += 1
            if self._remembered(track, time):
                kept.append(track)
            elif track.confirmed:
                changes.append(self._change(LEAVE, track))
        self.tracks = kept
        return out, changes

    def _remembered(self, track: Track, time: float | None) -> bool:
        """Whether an unseen track is kept: a tentative one only while seen, a person for
        `max_missed` frames or `memory_s` seconds of frame time, whichever is longer."""
        if not track.confirmed:
            return track.missed == 0
        if track.missed <= self.max_missed:
            return True
        return (
            time is not None
            and track.last_seen is not None
            and (time - track.last_seen <= self.memory_s)
        )

    def finish(self) -> list[TrackChange]:
        """End every track (the source has ended): one LEAVE for each person."""
        changes = [self._change(LEAVE, t) for t in self.tracks if t.confirmed]
        self.tracks = []
        return changes

    def _match(self, boxes: np.ndarray) -> list[int | None]:
        """The index of each face's track (None: a new face)."""
        found: list[int | None] = [None] * len(boxes)
        if not self.tracks or not len(boxes):
            return found
        expected = np.array([t.expected() for t in self.tracks], np.float32)
        last = np.array([t.box for t in self.tracks], np.float32)
        for t, f in _greedy(1 - iou_matrix(expected, boxes), 1 - self.min_iou):
            found[f] = t
        tracks = [t for t in range(len(self.tracks)) if t not in found]
        faces = [f for f in range(len(boxes)) if found[f] is None]
        if not tracks or not faces:
            return found
        track_size, face_size = _sizes(last[tracks])[:, None], _sizes(boxes[faces])[None, :]
        distance = np.minimum(
            *(
                np.linalg.norm(_centres(b[tracks])[:, None] - _centres(boxes[faces])[None], axis=2)
                for b in (expected, last)
            )
        ) / np.maximum(track_size, face_size)
        missed = np.array([self.tracks[t].missed for t in tracks], np.float32)[:, None]
        allowed = np.minimum(1.0 + 0.1 * missed, self.reach)
        ratio = track_size / face_size
        cost = np.where((ratio > 0.5) & (ratio < 2) & (distance <= allowed), distance, np.inf)
        for r, c in _greedy(cost, float(self.reach)):
            found[faces[c]] = tracks[r]
        return found

    def _see(self, track: Track, box: np.ndarray, time: float | None) -> None:
        if track.hits and track.missed < VELOCITY_FRAMES:
            step = (box - track.box) / (track.missed + 1)
            track.velocity = 0.5 * track.velocity + 0.5 * step
        else:
            track.velocity = np.zeros(4, np.float32)
        track.box = box
        track.missed = 0
        track.hits += 1
        track.last_seen = time

    def _change(self, kind: Kind, track: Track, previous: str | None = None) -> TrackChange:
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
        if (
            not track.confirmed
            or track.streak < self.settle_frames
            or label in (UNCERTAIN, track.settled)
        ):
            return []
        previous, track.settled = track.settled, label
        return [self._change(SETTLE if previous is None else CHANGE, track, previous)]
