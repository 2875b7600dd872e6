"""`maskwatch detect`: a source's frames through one `Watch` into the outputs the options ask
for (window, annotated images or video, JSON lines; event log, alerts, MQTT, a callback)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maskwatch.alerts import AlertDispatcher
from maskwatch.atomic import STDOUT, output_paths, refuse_inputs
from maskwatch.defaults import READ_AHEAD, Blur
from maskwatch.draw import Annotator
from maskwatch.errors import OutputError, SourceError
from maskwatch.events import Event, EventLog, companion_files
from maskwatch.mqtt import MqttOutput, MqttPublisher
from maskwatch.pipeline import Pipeline
from maskwatch.postgres import DatabaseUrl, EventTarget, PostgresLog, as_event_target
from maskwatch.redact import redact
from maskwatch.sinks import Inputs, JsonLinesSink, SaveOutput, WindowOutput
from maskwatch.sources import FileSource, Source
from maskwatch.watch import Callback, Summary, Watch

if TYPE_CHECKING:
    from maskwatch.metrics import Metrics

log = logging.getLogger("maskwatch")


@dataclass
class EventOutputs:
    """Where events go: an SQLite log or a PostgreSQL database (with face snapshots in a folder
    if asked), alerts, an MQTT broker, and a Python callback."""

    log: EventTarget | None = None  # a path or a postgresql:// URL as text will do too
    snapshots: Path | None = None
    alerts: AlertDispatcher | None = None
    mqtt: MqttPublisher | None = None
    on_event: Callable[[Event], None] | None = None

    def __post_init__(self) -> None:
        if self.log is not None:
            self.log = as_event_target(self.log)

    def open(self, watch: Watch, source: str) -> None:
        """Add each to `watch`, to be closed with it. Called before the file outputs are made,
        so that a log that is refused leaves no temporary file behind. The log's run is named
        after `source` without any URL's password."""
        source = redact(source)
        if self.mqtt is not None:
            watch.add_events(MqttOutput(self.mqtt, self.log))
        if self.alerts is not None:
            watch.add_events(self.alerts)
        if isinstance(self.log, DatabaseUrl):
            watch.add_events(PostgresLog(self.log, source, self.snapshots))
        elif self.log is not None:
            watch.add_events(EventLog(self.log, source, self.snapshots))
        if self.on_event is not None:
            watch.add_events(Callback(self.on_event))


def _inputs(source: Source, outputs: dict[str, Path | str | None]) -> Inputs:
    """The input files of `source` by identity, once each of `outputs` has been checked not to
    be one of them (see atomic.refuse_inputs)."""
    return refuse_inputs(source.paths if isinstance(source, FileSource) else [], outputs)


def run_detect(
    source: Source,
    pipeline: Pipeline,
    show: bool = True,
    save: Path | None = None,
    json_target: str | None = None,
    blur: Blur = Blur.NONE,
    events: EventOutputs | None = None,
    camera: str | None = None,
    metrics: Metrics | None = None,
) -> Summary:
    """Process every frame of `source`; stop at its end, on q/Esc in the window, or on Ctrl-C.

    Outputs are completed on a normal end or Ctrl-C and discarded on an error; the event log
    keeps every event written before an error. Every output is closed whatever happens to the
    others, and the first error is the one raised. Events that could not reach the MQTT broker
    are an error raised after every output is complete (they are still in the event log).
    `camera` names the events (by default the MQTT topic, if any), and `metrics` counts
    them, the frames and the source's drops under that name (else the source's).
    """
    if json_target == "-" and save is not None and str(save) in ("-", str(STDOUT)):
        raise OutputError("--save and --json cannot both write to stdout")
    events = events or EventOutputs()
    if camera is None and events.mqtt is not None:
        camera = events.mqtt.target.topic
    log_file = None if isinstance(events.log, DatabaseUrl) else events.log
    others: dict[str, Path | str | None] = {"--json": json_target, "--events": log_file}
    if log_file is not None:  # SQLite's own files beside the log are not to be written either
        others |= {f"--events' {s} file": p for s, p in companion_files(log_file).items()}
    inputs = _inputs(source, {"--save": save, **others})
    annotator = Annotator(blur)
    saver = None
    if save is not None:
        saver = SaveOutput(save, source, annotator, inputs, output_paths(others))
    watch = Watch(pipeline, camera)
    try:
        with watch:
            watch.on_close(source.close)
            if show:  # before the log, which a window that cannot open must not touch
                watch.add(WindowOutput(annotator))
            events.open(watch, source.name)
            if json_target:
                watch.add(JsonLinesSink(json_target))
            if saver is not None:
                watch.add(saver)
            if metrics is not None:
                counted = metrics.camera(camera or redact(source.name))
                counted.watch(watch, events.alerts, events.mqtt)
                counted.follow(lambda: source)
            ahead = READ_AHEAD if isinstance(source, FileSource) and not source.realtime else 1
            watch.run(source.frames(), depth=ahead)
            if source.read == 0:
                raise SourceError(f"{source.name}: nothing could be read")
    except OutputError:
        if events.mqtt is not None and events.mqtt.unsent:  # the run itself was complete
            log.info("%s", watch.summary.describe())
        raise
    if saver is not None:
        watch.summary.written = saver.written
        watch.summary.codec = saver.codec
    return watch.summary
