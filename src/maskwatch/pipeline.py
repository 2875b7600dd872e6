"""Frame -> faces -> crops -> classifier -> result: the one place the stages meet."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from maskwatch.classifier import MaskClassifier
from maskwatch.faces import FaceDetector, crop_face, crop_faces
from maskwatch.labels import UNCERTAIN
from maskwatch.tracking import IoUTracker
from maskwatch.types import Faces, Frame, FrameResult, Mode


@dataclass
class Pipeline:
    """Runs the detector and classifier on frames; all faces of a frame form one batch.

    With a tracker, video frames (not photos) get track ids, and their labels come from
    the probabilities smoothed per track; otherwise from each face's own. Either way each face
    is labelled once, by the classifier's threshold (labels.labels_for). A certain label of a
    photo (or untracked frame) is settled at once; a tracked face's once its track settles.
    """

    detector: FaceDetector
    classifier: MaskClassifier
    tracker: IoUTracker | None = None
    _last: Frame | None = field(default=None, init=False, repr=False)  # newest tracked frame

    def __post_init__(self) -> None:
        if self.tracker is not None:
            self.tracker.uncertain_below = self.classifier.meta.uncertain_below

    def predict(self, image: np.ndarray, faces: Faces) -> Faces:
        """`faces` with the classifier's probabilities, not yet labelled."""
        meta = self.classifier.meta
        crops = crop_faces(image, faces.boxes, meta.input_size, meta.crop_margin)
        return faces.with_probs(self.classifier.predict(crops), tuple(meta.classes))

    def process(self, frame: Frame) -> FrameResult:
        photo = frame.mode is Mode.PHOTO
        faces = self.predict(frame.image, self.detector.detect(frame.image, thorough=photo))
        if self.tracker is None or photo:
            labels = self.classifier.labels(faces.probs)
            firm = tuple(label != UNCERTAIN for label in labels)
            return FrameResult(frame, faces.with_labels(labels, firm))
        faces, changes = self.tracker.update(faces, frame.time)
        self._last = frame
        return FrameResult(frame, faces, tuple(changes))

    def finish(self) -> FrameResult | None:
        """The tracks still open when a source ends, as LEAVE changes of its last frame."""
        if self.tracker is None or self._last is None:
            return None
        changes = self.tracker.finish()
        last, self._last = self._last, None
        return FrameResult(last, Faces(), tuple(changes)) if changes else None


def classify_crop(classifier: MaskClassifier, image: np.ndarray) -> tuple[str, np.ndarray]:
    """Label and probabilities for an image that is already a face crop (no detection)."""
    height, width = image.shape[:2]
    whole = np.array([0, 0, width, height], np.float32)
    crop = crop_face(image, whole, classifier.input_size, margin=0.0)
    probs = classifier.predict(crop[None])
    return classifier.labels(probs)[0], probs[0]
