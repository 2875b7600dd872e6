"""What `maskwatch serve` runs behind its routes: its settings, the shared inference, the
server cameras and browser sessions (each a `Watch` into the board), the MQTT subscriber, and
the bounds on uploads. The routes live in app.py."""

from __future__ import annotations

import itertools
import logging
import re
import threading
import unicodedata
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException

from maskwatch.atomic import refuse_inputs, write_problem
from maskwatch.defaults import (
    MAX_IMAGE_PIXELS,
    SERVE_DETECTORS,
    SERVE_MAX_CAMERAS,
    SERVE_MAX_SESSIONS,
    SERVE_MAX_UPLOAD_MB,
    SERVE_MAX_UPLOADS,
    SERVE_REQUEST_TIMEOUT,
    SERVE_SESSION_IDLE_TIMEOUT,
)
from maskwatch.errors import SettingError
from maskwatch.faces import shared_detectors
from maskwatch.images import decode_image, image_header
from maskwatch.metrics import Metrics
from maskwatch.pipeline import Pipeline
from maskwatch.postgres import EventTarget
from maskwatch.types import Frame, Mode
from maskwatch.watch import Watch, WatchSettings
from maskwatch.web.board import REMOTE, Board
from maskwatch.web.cameras import BoardEvents, Camera
from maskwatch.web.inference import BatchingClassifier
from maskwatch.web.remote import remote_event

log = logging.getLogger("maskwatch")

MAX_FRAME_SIDE = 1920  # a frame from the page larger than this is refused
MULTIPART_OVERHEAD = 64 * 1024  # bytes of framing allowed around an upload's image
BROWSER_METRICS = "browser"  # every browser session is counted under this one camera name
OWN_NAME = re.compile(r"(camera|browser) ?\d+")  # camera_name's and session_name's


@dataclass
class ServeSettings:
    model: Path | None = None
    sources: list[str] = field(default_factory=list)
    watch: WatchSettings = field(default_factory=WatchSettings)  # server cameras, as detect's
    events: EventTarget | None = None
    save: Path | None = None  # a folder: server camera N recorded as camera-N.mp4
    mqtt: str | None = None
    token: str | None = None
    max_upload_mb: float = SERVE_MAX_UPLOAD_MB
    max_pixels: int = MAX_IMAGE_PIXELS
    request_timeout: float = SERVE_REQUEST_TIMEOUT
    max_uploads: int = SERVE_MAX_UPLOADS
    detectors: int = SERVE_DETECTORS
    max_sessions: int = SERVE_MAX_SESSIONS
    session_idle_timeout: float = SERVE_SESSION_IDLE_TIMEOUT
    max_cameras: int = SERVE_MAX_CAMERAS
    allowed_hosts: list[str] = field(default_factory=list)  # --allow-host: a proxy's names

    @property
    def max_body(self) -> int:
        return int(self.max_upload_mb * 2**20) + MULTIPART_OVERHEAD

    @property
    def too_large(self) -> str:
        return f"the upload is larger than {self.max_upload_mb:g} MB (--max-upload-mb)"


class Uploads:
    """At most `limit` uploads in the server at once; any beyond are refused at once with 503
    and Retry-After instead of queueing. Used from the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self.taken >= self.limit:
            raise HTTPException(
                503, "the server is busy with other uploads; try again", {"Retry-After": "1"}
            )
        self.taken += 1
        try:
            yield
        finally:
            self.taken -= 1


class PixelBudget:
    """Decoded pixels in flight at most `limit` (the largest picture allowed, so one of the
    largest at a time, or many small ones): a picture waits, in arrival order, until its pixels
    fit. Its size comes from its header, before it is decoded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._waiting: deque[object] = deque()
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            self._cond.wait_for(
                lambda: (
                    self._waiting[0] is ticket
                    and (self._used == 0 or self._used + pixels <= self.limit)
                )
            )
            self._waiting.popleft()
            self._used += pixels
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._used -= pixels
                self._cond.notify_all()


def decode_frame(data: bytes, max_pixels: int) -> np.ndarray:
    """A frame from the page, refused (SourceError) before decoding when larger than
    MAX_FRAME_SIDE a side or than the pixel budget."""
    return decode_image(data, "frame", max_pixels, max_side=MAX_FRAME_SIDE)


def camera_name(index: int) -> str:
    """The name of the server camera given by the `index`th --source (from 1)."""
    return f"camera {index}"


def session_name(index: int) -> str:
    """The name of the `index`th webcam session (from 1)."""
    return f"browser {index}"


def is_own_name(name: str) -> bool:
    """Whether `name` reads as one this server gives its own cameras and webcam sessions, in
    any case or spacing (`Camera  1`, with a zero-width space...), as a dashboard shows it."""
    visible = "".join(
        c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf"
    )
    return OWN_NAME.fullmatch(" ".join(visible.split()).casefold()) is not None


def recording(folder: Path, index: int) -> Path:
    """Where `serve --save FOLDER` records the `index`th camera: FOLDER/camera-N.mp4."""
    return folder / f"{camera_name(index).replace(' ', '-')}.mp4"


def check_recordings(save: Path, sources: list[str]) -> None:
    """`serve --save FOLDER`: refused without cameras, over a file, in a folder that cannot
    be written (read-only, full, no permission), or where a recording would be written over
    one of the sources."""
    if not sources:
        raise SettingError("--save records the server cameras: give them with --source")
    if save.exists() and not save.is_dir():
        raise SettingError(f"--save {save}: not a folder (camera N goes to camera-N.mp4)")
    problem = write_problem(save) if save.is_dir() else None
    if problem is not None:
        raise SettingError(f"--save {save}: cannot write there: {problem.strerror or problem}")
    inputs = [Path(spec) for spec in sources]
    for i in range(1, len(inputs) + 1):
        refuse_inputs(inputs, {"--save": recording(save, i)})


class Service:
    """The models and cameras behind the app. Every stream (camera, browser session) runs its
    own `Watch` (its own tracker), and uploads one untracked pipeline, over the shared
    inference: a pool of detectors taken in turn (faces.DetectorPool) and one batching
    classifier (inference.py). Server cameras also feed alerts and
    MQTT, as detect's."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.classifier = BatchingClassifier(settings.model)
        self.detectors = shared_detectors(settings.watch.detector, settings.detectors)
        self.board = Board(settings.events, settings.max_cameras)
        self.metrics = Metrics()
        self.cameras: dict[str, Camera] = {}
        self.sessions = itertools.count(1)
        self.uploads = Uploads(settings.max_uploads)
        self.pixels = PixelBudget(settings.max_pixels)
        self._photo_pipeline = self.pipeline(tracked=False)  # no state: shared by all uploads
        self._subscriber: Any = None

    def pipeline(self, tracked: bool = True) -> Pipeline:
        return self.settings.watch.pipeline(self.classifier, tracked, self.detectors)

    def camera_watch(self, name: str) -> Watch:
        """The watch of a server camera: the board, and alerts and MQTT publishing as asked
        (with several cameras, camera N publishes to the topic's subtopic N)."""
        watch = Watch(self.pipeline(), name)
        watch.add_events(BoardEvents(self.board, name))
        settings = self.settings.watch
        alerts = settings.alerts.dispatcher() if settings.alerts else None
        if alerts is not None:
            watch.add_events(alerts)
        publisher = None
        if settings.mqtt:
            from maskwatch.mqtt import MqttOutput, MqttPublisher

            url = settings.mqtt
            if len(self.settings.sources) > 1:
                url = f"{url.rstrip('/')}/{name.rsplit(' ', 1)[-1]}"
            publisher = MqttPublisher(url, discovery=settings.mqtt_discovery)
            watch.add_events(MqttOutput(publisher, self.settings.events))
        self.metrics.camera(name).watch(watch, alerts, publisher)
        return watch

    def browser_watch(self, name: str) -> Watch:
        """The watch of a browser session: the board, as one run of its own."""
        watch = Watch(self.pipeline(), name)
        watch.add_events(BoardEvents(self.board, name, run=name))
        self.metrics.camera(BROWSER_METRICS).watch(watch)
        return watch

    def start(self) -> None:
        save = self.settings.save
        for i, spec in enumerate(self.settings.sources, 1):
            name = camera_name(i)
            record = recording(save, i) if save is not None else None
            camera = Camera(name, spec, self.camera_watch, self.settings.watch.blur, record)
            self.cameras[name] = camera
            self.board.pin(name, camera.current_error)
            self.metrics.camera(name).follow(camera.current_source)
        if self.settings.mqtt:
            from maskwatch.mqtt import MqttSubscriber

            self._subscriber = MqttSubscriber(self.settings.mqtt, self.remote_event)
            self.metrics.subscribers.append(self._subscriber)
        log.info("serving with the classifier %s", self.classifier.path.name)

    def remote_event(self, topic: str, payload: dict[str, Any]) -> None:
        """An event from MQTT, onto the board if valid (ValueError, dropped, otherwise): a
        remote camera may not pose as one of this server's by taking its name."""
        camera, event = remote_event(topic, payload)
        if is_own_name(camera):
            raise ValueError(
                f"camera {camera[:100]!r}: a name this server gives its own cameras and "
                "webcam sessions"
            )
        self.board.add(camera, [event], run=REMOTE)

    def detect_photo(self, data: bytes, name: str) -> dict[str, Any]:
        """Faces in an uploaded photo; ImageTooLargeError or SourceError if it is not one.
        Decoded only once its pixels fit the budget of pixels in flight."""
        header = image_header(data, name, self.settings.max_pixels)
        with self.pixels.hold(header.width * header.height):
            image = decode_image(data, name, header=header)
            result = self._photo_pipeline.process(Frame(image, 0, 0.0, name, Mode.PHOTO))
        return result.to_dict()

    def stopping(self) -> None:
        """Tell the cameras to stop (ending their MJPEG streams) without waiting for them."""
        for camera in self.cameras.values():
            camera.stopping()

    def stop(self) -> None:
        for camera in self.cameras.values():
            camera.stop()
        if self._subscriber is not None:
            self._subscriber.close()
        self.board.close()
