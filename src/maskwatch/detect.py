"""The detect loop: frames from a source through the pipeline into the chosen sinks."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from maskwatch.alerts import AlertDispatcher
from maskwatch.atomic import file_identity, writes_in_place
from maskwatch.draw import draw_faces, draw_fps
from maskwatch.errors import OutputError, SourceError
from maskwatch.events import Event, EventLog, EventStream
from maskwatch.mqtt import MqttPublisher
from maskwatch.pipeline import Pipeline
from maskwatch.sinks import FpsMeter, ImageSink, JsonLinesSink, VideoSink, WindowSink
from maskwatch.sources import VIDEO_SUFFIXES, FileSource, Source
from maskwatch.types import FrameResult

log = logging.getLogger("maskwatch")
STDOUT = Path("/dev/stdout")
Inputs = dict[tuple[int, int], Path]  # input files by (device, inode)


@dataclass
class DetectSummary:
    """What one run saw: frames processed, faces per label, files written."""

    frames: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    written: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        faces = sum(self.labels.values())
        parts = ", ".join(f"{label} {n}" for label, n in sorted(self.labels.items()))
        text = f"{self.frames} frames, {faces} faces" + (f" ({parts})" if parts else "")
        if self.events:
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.events.items()))
            text += f"; events: {kinds}"
        return text


@dataclass
class EventOutputs:
    """Where events go: an SQLite log (with face snapshots in a folder if asked), alerts, an
    MQTT broker, and a Python callback."""

    log: Path | None = None
    snapshots: Path | None = None
    alerts: AlertDispatcher | None = None
    mqtt: MqttPublisher | None = None
    on_event: Callable[[Event], None] | None = None


def _save_sink(save: Path, source: Source, inputs: Inputs) -> ImageSink | VideoSink:
    if str(save) == "-":
        save = STDOUT
    video_source = source.live or source.fps > 0
    if save.suffix.lower() in VIDEO_SUFFIXES or (video_source and writes_in_place(save)):
        return VideoSink(save, source.fps)
    if video_source:
        raise OutputError(f"--save {save}: a video source needs a .mp4 or .avi output name")
    return ImageSink(save, inputs)


def _inputs(source: Source, outputs: dict[str, Path | str | None]) -> Inputs:
    """The input files of `source` by identity, once each `outputs` (option: path) has been
    checked not to be one of them: results written over the photo or video being read would
    destroy it. Empty (nothing to check) when there is no output file or no input file."""
    named = {
        option: Path(out) for option, out in outputs.items() if out is not None and str(out) != "-"
    }
    if not named or not isinstance(source, FileSource):
        return {}
    inputs = {ident: path for path in source.paths if (ident := file_identity(path)) is not None}
    for option, out in named.items():
        ident = None if writes_in_place(out) else file_identity(out)
        clash = inputs.get(ident) if ident is not None else None
        if clash is not None:
            raise OutputError(
                f"{option} {out} is the input {clash}: writing there would destroy it; "
                "choose another name"
            )
    return inputs


def _closing(stack: ExitStack, close: Callable[[bool], None]) -> None:
    """Have `stack` call `close(ok)`, ok being whether the block ended without an error."""

    def exit_(exc_type: type[BaseException] | None, *_: object) -> bool:
        close(exc_type is None)
        return False

    stack.push(exit_)


def run_detect(
    source: Source,
    pipeline: Pipeline,
    show: bool = True,
    save: Path | None = None,
    json_target: str | None = None,
    blur: str = "none",
    events: EventOutputs | None = None,
) -> DetectSummary:
    """Process every frame of `source`; stop at its end, on q/Esc in the window, or on Ctrl-C.

    Outputs are completed on a normal end or Ctrl-C and discarded on an error; the event log
    keeps every event written before an error. Every output is closed whatever happens to the
    others, and the first error is the one raised. Events that could not reach the MQTT broker
    are an error raised after every output is complete (they are still in the event log).
    """
    if json_target == "-" and save is not None and str(save) in ("-", str(STDOUT)):
        raise OutputError("--save and --json cannot both write to stdout")
    events = events or EventOutputs()
    inputs = _inputs(source, {"--save": save, "--json": json_target, "--events": events.log})
    summary = DetectSummary()
    meter = FpsMeter()
    stream = EventStream()
    with ExitStack() as stack:
        stack.callback(source.close)
        if events.mqtt is not None:
            stack.callback(events.mqtt.close)
        if events.alerts is not None:
            stack.callback(events.alerts.close)
        window = WindowSink() if show else None
        if window is not None:
            stack.callback(window.close)
        # Opened before the file sinks, whose temporary files a refused log would leave behind.
        event_log = EventLog(events.log, source.name, events.snapshots) if events.log else None
        if event_log is not None:
            stack.callback(event_log.close)
        json_sink = JsonLinesSink(json_target) if json_target else None
        if json_sink is not None:
            _closing(stack, json_sink.close)
        saver: ImageSink | VideoSink | None = None

        def emit(result: FrameResult) -> None:
            if not result.changes:
                return
            happened = stream.events(result)
            summary.events.update(e.kind for e in happened)
            if event_log is not None:
                event_log.write(happened, result.frame.image)
            for event in happened:
                if events.alerts is not None:
                    events.alerts.offer(event)
                if events.mqtt is not None:
                    events.mqtt.publish(event)
                if events.on_event is not None:
                    events.on_event(event)

        try:
            for frame in source.frames():
                result = pipeline.process(frame)
                summary.frames += 1
                summary.labels.update(result.faces.labels)
                emit(result)
                if json_sink:
                    json_sink.write(result)
                if window is None and save is None:
                    continue
                annotated = draw_faces(frame.image, result.faces, blur)
                if save is not None:
                    if saver is None:  # made at the first frame, when the source knows its fps
                        saver = _save_sink(save, source, inputs)
                        _closing(stack, saver.close)
                    saver.write(result, annotated)
                if window is not None:
                    draw_fps(annotated, meter.tick())
                    if not window.show(annotated):
                        break
        except KeyboardInterrupt:
            log.warning("interrupted; finishing outputs")
        ending = pipeline.finish()
        if ending is not None:
            emit(ending)
        if source.read == 0:
            raise SourceError(f"{source.name}: nothing could be read")
    if saver is not None:
        summary.written = saver.written
    if events.mqtt is not None and events.mqtt.unsent:
        log.info("%s", summary.describe())
        where = f"; they are in {events.log}" if events.log else ""
        raise OutputError(events.mqtt.unsent_message() + where)
    return summary
