"""The objects passed between the stages.

A source yields `Frame`s, each a photo or a video frame (`Mode`); the detector finds `Faces` in
each; the classifier adds probabilities; on video a tracker adds track ids, averages the
probabilities per track and labels them, and reports what happened to its tracks as
`TrackChange`s of a `Kind` (events.py turns them into events); photos are labelled from each
face's own probabilities. The pipeline hands all of it on as one
`FrameResult`, whose `to_dict` is the per-frame JSON of `detect --json` and of the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

NO_TRACK = -1


class Kind(StrEnum):
    """What happened to a track: the `kind` of an event, as JSON, the log and MQTT spell it."""

    APPEAR = "appear"  # seen for long enough to count as a person
    SETTLE = "settle"  # its label held for settle frames
    CHANGE = "change"  # its settled label changed
    LEAVE = "leave"  # unseen for too long, or the source ended


APPEAR, SETTLE, CHANGE, LEAVE = Kind.APPEAR, Kind.SETTLE, Kind.CHANGE, Kind.LEAVE


class Mode(StrEnum):
    """What a frame is, as its source says: a PHOTO stands alone (the detector's thorough
    search, no tracking), a VIDEO frame is one of a stream (the faster search, tracked)."""

    PHOTO = "photo"
    VIDEO = "video"


@dataclass(frozen=True)
class Frame:
    """One BGR image from a source, with where and when it came from, and whether it is a photo
    or a frame of a video (`mode`)."""

    image: np.ndarray
    index: int
    time: float
    source: str
    mode: Mode = Mode.VIDEO

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


def _empty(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass(frozen=True)
class Faces:
    """Faces of one frame as parallel arrays (N faces).

    boxes: (N, 4) x1, y1, x2, y2 in pixels of the original frame; scores: (N,) detector scores;
    landmarks: (N, 5, 2) eyes, nose tip, mouth corners; probs: (N, C) classifier probabilities
    over `classes` (C = 0 before classification); labels: N canonical labels or `uncertain`;
    tracks: (N,) track ids, NO_TRACK when untracked; settled: N flags, whether each label is
    firm (a photo's certain label; in video, the label its track has settled on: what events
    and the dashboard count), empty before labelling; classified: (N,) whether the classifier
    saw the face in this frame (False where a tracked person's probabilities were carried over).
    """

    boxes: np.ndarray = field(default_factory=lambda: _empty((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: _empty((0,), np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: _empty((0, 5, 2), np.float32))
    probs: np.ndarray = field(default_factory=lambda: _empty((0, 0), np.float32))
    classes: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    tracks: np.ndarray = field(default_factory=lambda: _empty((0,), np.int64))
    settled: tuple[bool, ...] = ()
    classified: np.ndarray = field(default_factory=lambda: _empty((0,), np.bool_))

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if n and self.classified.size == 0:  # not given: none classified yet
            object.__setattr__(self, "classified", np.zeros(n, np.bool_))
        checks = {
            "boxes": (self.boxes.shape, (n, 4)),
            "scores": (self.scores.shape, (n,)),
            "landmarks": (self.landmarks.shape, (n, 5, 2)),
            "tracks": (self.tracks.shape, (n,)),
            "classified": (self.classified.shape, (n,)),
        }
        for name, (got, want) in checks.items():
            if got != want:
                raise ValueError(f"Faces.{name} has shape {got}, expected {want}")
        if self.probs.shape not in {(n, 0), (n, len(self.classes))} and not (
            n == 0 and self.probs.size == 0
        ):
            raise ValueError(
                f"Faces.probs has shape {self.probs.shape}, expected ({n}, {len(self.classes)})"
            )
        if self.labels and len(self.labels) != n:
            raise ValueError(f"Faces.labels has {len(self.labels)} entries for {n} faces")
        if self.settled and len(self.settled) != len(self.labels):
            raise ValueError(f"Faces.settled has {len(self.settled)} entries for {n} labels")

    @classmethod
    def from_detections(cls, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> Faces:
        n = len(boxes)
        return cls(
            boxes=np.asarray(boxes, np.float32).reshape(n, 4),
            scores=np.asarray(scores, np.float32).reshape(n),
            landmarks=np.asarray(landmarks, np.float32).reshape(n, 5, 2),
            probs=_empty((n, 0), np.float32),
            tracks=np.full(n, NO_TRACK, np.int64),
        )

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def predicted(self) -> bool:
        """Whether the faces have classifier probabilities (labels may still be to come)."""
        return len(self.classes) > 0 and self.probs.shape == (len(self), len(self.classes))

    def with_predictions(
        self,
        probs: np.ndarray,
        classes: tuple[str, ...],
        labels: tuple[str, ...],
        settled: tuple[bool, ...] = (),
    ) -> Faces:
        probs = np.asarray(probs, np.float32)
        return replace(self, probs=probs, classes=classes, labels=labels, settled=settled)

    def with_probs(
        self, probs: np.ndarray, classes: tuple[str, ...], classified: np.ndarray | None = None
    ) -> Faces:
        """Probabilities without labels yet: the pipeline or the tracker labels them once.
        `classified` says which rows the classifier gave (default: all; the tracker replaces
        the others with their tracks')."""
        seen = np.ones(len(self), np.bool_) if classified is None else classified
        return replace(
            self,
            probs=np.asarray(probs, np.float32),
            classes=classes,
            labels=(),
            settled=(),
            classified=np.asarray(seen, np.bool_),
        )

    def with_labels(self, labels: tuple[str, ...], settled: tuple[bool, ...] = ()) -> Faces:
        return replace(self, labels=labels, settled=settled)

    def with_tracks(self, tracks: np.ndarray) -> Faces:
        return replace(self, tracks=np.asarray(tracks, np.int64))

    def confidences(self) -> np.ndarray:
        """Top probability per face (0 where unclassified)."""
        if self.probs.shape[1:] == (0,) or len(self) == 0:
            return np.zeros(len(self), np.float32)
        return self.probs.max(axis=1)

    def to_dict(self) -> list[dict[str, Any]]:
        confidences = self.confidences()
        out = []
        for i in range(len(self)):
            track = int(self.tracks[i])
            out.append(
                {
                    "box": [round(float(v), 1) for v in self.boxes[i]],
                    "score": round(float(self.scores[i]), 4),
                    "label": self.labels[i] if self.labels else None,
                    "confidence": round(float(confidences[i]), 4),
                    "probs": {
                        c: round(float(p), 4)
                        for c, p in zip(self.classes, self.probs[i], strict=True)
                    },
                    "track": None if track == NO_TRACK else track,
                    "settled": bool(self.settled[i]) if self.settled else False,
                    "classified": bool(self.classified[i]),
                }
            )
        return out


@dataclass(frozen=True)
class TrackChange:
    """Something that happened to a track (tracking.py) in one frame. `label` is its settled
    label after the change (None while unsettled), `previous` the one before a CHANGE."""

    kind: Kind
    track: int
    label: str | None
    confidence: float
    box: np.ndarray
    previous: str | None = None


@dataclass(frozen=True)
class FrameResult:
    """What the pipeline found in one frame; the one object every sink reads. `changes` are the
    tracker's (video frames only)."""

    frame: Frame
    faces: Faces
    changes: tuple[TrackChange, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The per-frame object of `detect --json` and of the API, ready for json.dumps."""
        return {
            "source": self.frame.source,
            "frame": self.frame.index,
            "time": round(self.frame.time, 3),
            "width": self.frame.width,
            "height": self.frame.height,
            "faces": self.faces.to_dict(),
        }


@dataclass(frozen=True)
class CropResult:
    """One person's photo or face crop labelled (`maskwatch classify`): where it came from, its
    label, the classifier's probability per class, and the face box it was framed on (pixels of
    the image, possibly reaching past it where the face is cut), None when the whole image was
    classified."""

    path: str
    label: str
    probs: dict[str, float]
    box: tuple[float, float, float, float] | None = None

    @classmethod
    def of(
        cls,
        path: object,
        label: str,
        classes: list[str],
        probs: np.ndarray,
        box: np.ndarray | None = None,
    ) -> CropResult:
        face = None if box is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        return cls(
            str(path), label, {c: float(p) for c, p in zip(classes, probs, strict=True)}, face
        )

    @property
    def framed(self) -> str:
        """'face' when a detected face was framed, 'image' when the whole image was used."""
        return "image" if self.box is None else "face"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "label": self.label,
            "confidence": round(max(self.probs.values()), 4),
            "probs": {c: round(p, 4) for c, p in self.probs.items()},
            "framed": self.framed,
        }
        if self.box is not None:
            out["box"] = [round(v, 1) for v in self.box]
        return out
