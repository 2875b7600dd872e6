"""The watch loop every front end runs (`detect`, `demo`, server cameras, browser sessions):
frame -> `Pipeline.process` -> the tracker's changes as events -> outputs -> close.

`run` overlaps stages: a reader thread reads the next frames and worker threads detect them while
this thread classifies, tracks and writes the current one (ahead.py); results, events and outputs
come in frame order and are the same as one frame at a time.

Two kinds of output, and a front end only chooses which:
- frame outputs, `write(result)` and `close(ok)`: JSON lines, annotated images or video, the
  window, a server camera's MJPEG buffer (sinks.py, web/cameras.py);
- event outputs, `write(events, image)` with one frame's events and `close()`: the SQLite log,
  alerts, MQTT, the dashboard, a Python callback.
Closing closes every output whatever the others do; frame outputs are completed after a normal
end (or Ctrl-C, or SIGTERM from the command line) and discarded after an error, and the first
error is the one raised.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import numpy as np

from maskwatch.ahead import ahead
from maskwatch.atomic import interrupts_held
from maskwatch.defaults import (
    CLASSIFY_EVERY,
    DETECT_MIN_SIDE,
    DETECT_SCORE_THRESHOLD,
    DETECT_VIDEO_SIDE,
    SETTLE_FRAMES,
    Blur,
)
from maskwatch.errors import Terminated
from maskwatch.events import Event, EventStream
from maskwatch.types import Faces, Frame, FrameResult

if TYPE_CHECKING:
    from maskwatch.alerts import AlertSettings
    from maskwatch.classifier import MaskClassifier
    from maskwatch.faces import FaceDetector, YuNetDetector
    from maskwatch.pipeline import Pipeline

log = logging.getLogger("maskwatch")


class FrameOutput(Protocol):
    def write(self, result: FrameResult) -> None: ...

    def close(self, ok: bool = True) -> None: ...


class EventOutput(Protocol):
    def write(self, events: Sequence[Event], image: np.ndarray | None = None) -> None: ...

    def close(self) -> None: ...


class Stop(Exception):
    """Raised by a frame output to end the watch normally (the user quit the window): not an
    error."""


class Callback:
    """A Python function called with each event, as an event output."""

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self.on_event = on_event

    def write(self, events: Sequence[Event], image: np.ndarray | None = None) -> None:
        for event in events:
            self.on_event(event)

    def close(self) -> None:
        pass


def _count(n: int, noun: str) -> str:
    """'1 frame', '3 frames'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass
class Summary:
    """What one watch saw: frames processed, faces per label, events per kind, files written."""

    frames: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    written: list[Path] = field(default_factory=list)
    codec: str | None = None  # of the video written, if one was

    def describe(self) -> str:
        faces = sum(self.labels.values())
        parts = ", ".join(f"{label} {n}" for label, n in sorted(self.labels.items()))
        text = f"{_count(self.frames, 'frame')}, {_count(faces, 'face')}"
        if parts:
            text += f" ({parts})"
        if self.events:
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.events.items()))
            text += f"; events: {kinds}"
        return text


@dataclass(frozen=True)
class WatchSettings:
    """How a watch sees, shared by `detect` and `serve --source`: the detector's settings, the
    tracker's settle frames and how often it has a settled person classified, the blur of
    annotated output, alerts, MQTT publishing and Home Assistant discovery."""

    score_threshold: float = DETECT_SCORE_THRESHOLD
    detect_min_side: int = DETECT_MIN_SIDE
    detect_video_side: int = DETECT_VIDEO_SIDE
    settle_frames: int = SETTLE_FRAMES
    classify_every: int = CLASSIFY_EVERY
    blur: Blur = Blur.NONE
    alerts: AlertSettings | None = None
    mqtt: str | None = None  # publish events to mqtt://host[:port]/topic
    mqtt_discovery: str | None = None  # Home Assistant discovery prefix, with mqtt

    def __post_init__(self) -> None:
        object.__setattr__(self, "blur", Blur(self.blur))  # the command line gives a string

    def detector(self, threads: int = 0) -> YuNetDetector:
        """One detector as these settings say, with `threads` ONNX Runtime threads (0: all)."""
        from maskwatch.faces import YuNetDetector

        return YuNetDetector(
            score_threshold=self.score_threshold,
            min_side=self.detect_min_side,
            video_side=self.detect_video_side,
            threads=threads,
        )

    def pipeline(
        self, classifier: MaskClassifier, tracked: bool = True, detector: FaceDetector | None = None
    ) -> Pipeline:
        """A pipeline of its own (its tracker holds per-stream state), with detectors of its
        own for successive frames (faces.stream_detector) unless given one (the server's pool)."""
        from maskwatch.faces import stream_detector
        from maskwatch.pipeline import Pipeline
        from maskwatch.tracking import IoUTracker

        tracker = (
            IoUTracker(settle_frames=self.settle_frames, classify_every=self.classify_every)
            if tracked
            else None
        )
        return Pipeline(detector or stream_detector(self.detector), classifier, tracker)


class Watch:
    """Runs frames through a pipeline into outputs. Use it as a context manager: outputs added
    inside the block are closed when it ends, completed unless it ended with an error."""

    def __init__(
        self, pipeline: Pipeline, camera: str | None = None, started: float | None = None
    ) -> None:
        self.pipeline = pipeline
        self.stream = EventStream(started, camera)
        self.summary = Summary()
        self.frame_outputs: list[FrameOutput] = []
        self.event_outputs: list[EventOutput] = []
        self._on_close: list[Callable[[], None]] = []
        self._finished = False

    def add(self, output: FrameOutput) -> None:
        self.frame_outputs.append(output)

    def add_events(self, output: EventOutput) -> None:
        self.event_outputs.append(output)

    def on_close(self, close: Callable[[], None]) -> None:
        """Also call `close` (e.g. the source's) when the watch closes, after the outputs."""
        self._on_close.append(close)

    def process(self, frame: Frame, faces: Faces | None = None) -> FrameResult:
        """One frame through the pipeline (from classification on when its `faces` were
        detected already), its events to the event outputs, its result to the frame outputs
        (a window may raise Stop)."""
        if faces is None:
            result = self.pipeline.process(frame)
        else:
            result = self.pipeline.classify(frame, faces)
        with interrupts_held():  # Ctrl-C lands between frames, never inside an output's write
            self.summary.frames += 1
            self.summary.labels.update(result.faces.labels)
            self._emit(result)
            for output in self.frame_outputs:
                output.write(result)
        return result

    def run(
        self,
        frames: Iterable[Frame],
        overlap: bool = True,
        workers: int | None = None,
        depth: int = 1,
    ) -> None:
        """Every frame until the end, Stop or Ctrl-C; then the open tracks leave. With
        `overlap`, the next frames are read and detected meanwhile, `workers` at once (at most,
        and by default, as many as the pipeline's detector can take: faces.parallel_frames), up
        to `depth` of them finished and waiting (ahead.py)."""
        try:
            if not overlap:
                for frame in frames:
                    self.process(frame)
            else:
                from maskwatch.faces import parallel_frames

                most = parallel_frames(self.pipeline.detector)
                workers = most if workers is None else min(workers, most)
                detecting = ahead(frames, self.pipeline.detect, depth, workers)
                with closing(detecting) as detected:
                    for frame, faces in detected:
                        self.process(frame, faces)
        except Stop:
            pass
        except KeyboardInterrupt as stop:
            log.warning(
                "%s; finishing outputs",
                "terminated" if isinstance(stop, Terminated) else "interrupted",
            )
        self.finish()

    def finish(self) -> None:
        """The tracks still open leave (once): the source has ended."""
        if self._finished:
            return
        self._finished = True
        ending = self.pipeline.finish()
        if ending is not None:
            self._emit(ending)

    def _emit(self, result: FrameResult) -> None:
        events = self.stream.events(result)
        if not events:
            return
        self.summary.events.update(e.kind for e in events)
        for output in self.event_outputs:
            output.write(events, result.frame.image)

    def close(self, ok: bool = True) -> None:
        """Close every output (frame outputs completed when `ok` and nothing failed before
        them), then the `on_close` callbacks; raise the first error. A stop signal while one
        closes (a write into a pipe nobody drains) is raised once the rest are closed, the
        frame outputs after it discarded."""
        first: BaseException | None = None
        frame_outputs, self.frame_outputs = self.frame_outputs, []
        for output in reversed(frame_outputs):
            try:
                output.close(ok and first is None)
            except BaseException as exc:  # every output is closed, whatever the others do
                first = first or exc
        closers = [o.close for o in reversed(self.event_outputs)] + self._on_close[::-1]
        self.event_outputs, self._on_close = [], []
        for close in closers:
            try:
                close()
            except BaseException as exc:
                first = first or exc
        if first is not None:
            raise first

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close(ok=True)
            return
        try:
            self.close(ok=False)
        except Exception as late:  # the error that ended the watch is the one raised
            log.debug("closing after an error: %s", late)
