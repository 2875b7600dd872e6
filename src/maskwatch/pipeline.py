"""Frame -> faces -> crops -> classifier -> result: the one place the stages meet."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from maskwatch.classifier import MaskClassifier
from maskwatch.faces import FaceDetector, crop_face, crop_faces, find_subject
from maskwatch.labels import UNCERTAIN
from maskwatch.tracking import IoUTracker
from maskwatch.types import CropResult, Faces, Frame, FrameResult, Mode


@dataclass
class Pipeline:
    """Runs the detector and classifier on frames; the faces classified in a frame form one
    batch.

    With a tracker, video frames (not photos) get track ids, only the faces the tracker's plan
    names are classified (new, unsettled, moved, or due: tracking.py), the others carry their
    track's probabilities, and labels come from the probabilities smoothed per track; otherwise
    every face is classified and labelled from its own. Either way each face is labelled once,
    by the classifier's threshold (labels.labels_for). A certain label of a photo (or untracked
    frame) is settled at once; a tracked face's once its track settles. `process` is `detect`
    then `classify`: a watch may detect the next frame while it classifies this one.
    """

    detector: FaceDetector
    classifier: MaskClassifier
    tracker: IoUTracker | None = None
    _last: Frame | None = field(default=None, init=False, repr=False)  # newest tracked frame

    def __post_init__(self) -> None:
        if self.tracker is not None:
            self.tracker.uncertain_below = self.classifier.meta.uncertain_below

    def predict(self, image: np.ndarray, faces: Faces, which: np.ndarray | None = None) -> Faces:
        """`faces` with the classifier's probabilities, not yet labelled; with `which` ((N,)
        bool), only those faces are classified and the others' rows are zeros."""
        meta = self.classifier.meta
        chosen = np.ones(len(faces), np.bool_) if which is None else which
        crops = crop_faces(image, faces.boxes[chosen], meta.input_size, meta.crop_margin)
        probs = np.zeros((len(faces), len(meta.classes)), np.float32)
        probs[chosen] = self.classifier.predict(crops)
        return faces.with_probs(probs, tuple(meta.classes), chosen)

    def detect(self, frame: Frame) -> Faces:
        """The faces of a frame (a photo gets the detector's thorough search)."""
        return self.detector.detect(frame.image, thorough=frame.mode is Mode.PHOTO)

    def classify(self, frame: Frame, faces: Faces) -> FrameResult:
        """The result of a frame whose faces `detect` found: classified, tracked, labelled.
        Frames must come in order (the tracker's state moves on)."""
        if self.tracker is None or frame.mode is Mode.PHOTO:
            faces = self.predict(frame.image, faces)
            labels = self.classifier.labels(faces.probs)
            firm = tuple(label != UNCERTAIN for label in labels)
            return FrameResult(frame, faces.with_labels(labels, firm))
        plan = self.tracker.plan(faces.boxes)
        faces = self.predict(frame.image, faces, plan.classify)
        faces, changes = self.tracker.update(faces, frame.time, plan)
        self._last = frame
        return FrameResult(frame, faces, tuple(changes))

    def process(self, frame: Frame) -> FrameResult:
        return self.classify(frame, self.detect(frame))

    def finish(self) -> FrameResult | None:
        """The tracks still open when a source ends, as LEAVE changes of its last frame."""
        if self.tracker is None or self._last is None:
            return None
        changes = self.tracker.finish()
        last, self._last = self._last, None
        return FrameResult(last, Faces(), tuple(changes)) if changes else None


def classify_photo(
    classifier: MaskClassifier,
    image: np.ndarray,
    path: str = "",
    detector: FaceDetector | None = None,
) -> CropResult:
    """The one person of a photo or face crop, labelled (`maskwatch classify`).

    With a detector, the largest face it finds (faces.find_subject) is framed as `detect` frames
    every face; without one, or when no face is found, the whole image is classified as it is.
    """
    box = None if detector is None else find_subject(detector, image)
    if box is None:
        height, width = image.shape[:2]
        whole = np.array([0, 0, width, height], np.float32)
        crop = crop_face(image, whole, classifier.input_size, margin=0.0)
    else:
        crop = crop_face(image, box, classifier.input_size, classifier.meta.crop_margin)
    probs = classifier.predict(crop[None])
    return CropResult.of(path, classifier.labels(probs)[0], classifier.classes, probs[0], box)
