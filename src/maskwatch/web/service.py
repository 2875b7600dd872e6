"""What `maskwatch serve` runs behind its routes: its settings, the shared classifier, the
server cameras and browser sessions (each a `Watch` into the board), the MQTT subscriber, and
the bounded queue of uploads. The routes live in app.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException

from maskwatch.classifier import MaskClassifier
from maskwatch.defaults import (
    MAX_IMAGE_PIXELS,
    SERVE_MAX_CAMERAS,
    SERVE_MAX_SESSIONS,
    SERVE_MAX_UPLOAD_MB,
    SERVE_REQUEST_TIMEOUT,
    SERVE_SESSION_IDLE_TIMEOUT,
    SERVE_UPLOAD_QUEUE,
    SERVE_UPLOAD_SLOTS,
)
from maskwatch.images import decode_image
from maskwatch.pipeline import Pipeline
from maskwatch.types import Frame, Mode
from maskwatch.watch import Watch, WatchSettings
from maskwatch.web.board import REMOTE, Board
from maskwatch.web.cameras import BoardEvents, Camera
from maskwatch.web.remote import remote_event

log = logging.getLogger("maskwatch")

MAX_FRAME_SIDE = 1920  # a frame from the page larger than this is refused
MULTIPART_OVERHEAD = 64 * 1024  # bytes of framing allowed around an upload's image


@dataclass
class ServeSettings:
    model: Path | None = None
    sources: list[str] = field(default_factory=list)
    watch: WatchSettings = field(default_factory=WatchSettings)  # server cameras, as detect's
    events: Path | None = None
    mqtt: str | None = None
    token: str | None = None
    max_upload_mb: float = SERVE_MAX_UPLOAD_MB
    max_pixels: int = MAX_IMAGE_PIXELS
    request_timeout: float = SERVE_REQUEST_TIMEOUT
    upload_slots: int = SERVE_UPLOAD_SLOTS
    upload_queue: int = SERVE_UPLOAD_QUEUE
    max_sessions: int = SERVE_MAX_SESSIONS
    session_idle_timeout: float = SERVE_SESSION_IDLE_TIMEOUT
    max_cameras: int = SERVE_MAX_CAMERAS

    @property
    def max_body(self) -> int:
        return int(self.max_upload_mb * 2**20) + MULTIPART_OVERHEAD

    @property
    def too_large(self) -> str:
        return f"the upload is larger than {self.max_upload_mb:g} MB (--max-upload-mb)"


class Slots:
    """At most `running` uploads decoded and processed at once and `waiting` more queued; any
    beyond are refused with 503, so memory stays bounded however many arrive."""

    def __init__(self, running: int, waiting: int) -> None:
        self._semaphore = asyncio.Semaphore(running)
        self._limit = running + waiting
        self._taken = 0

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self._taken >= self._limit:
            raise HTTPException(
                503, "the server is busy with other uploads; try again", {"Retry-After": "1"}
            )
        self._taken += 1
        try:
            async with self._semaphore:
                yield
        finally:
            self._taken -= 1


def decode_frame(data: bytes, max_pixels: int) -> np.ndarray:
    """A frame from the page, refused (SourceError) before decoding when larger than
    MAX_FRAME_SIDE a side or than the pixel budget."""
    return decode_image(data, "frame", max_pixels, max_side=MAX_FRAME_SIDE)


class Service:
    """The models and cameras behind the app. The classifier is shared (ONNX Runtime runs are
    thread-safe); each camera and browser session runs its own `Watch`, with its own detector
    and tracker, into the board (server cameras also into alerts and MQTT, as detect's)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.classifier = MaskClassifier(settings.model)
        self.board = Board(settings.events, settings.max_cameras)
        self.cameras: dict[str, Camera] = {}
        self.sessions = itertools.count(1)
        self.uploads = Slots(settings.upload_slots, settings.upload_queue)
        self._photo_pipeline = self.pipeline(tracked=False)
        self._photo_lock = threading.Lock()
        self._subscriber: Any = None

    def pipeline(self, tracked: bool = True) -> Pipeline:
        return self.settings.watch.pipeline(self.classifier, tracked)

    def camera_watch(self, name: str) -> Watch:
        """The watch of a server camera: the board, and alerts and MQTT publishing as asked
        (with several cameras, camera N publishes to the topic's subtopic N)."""
        watch = Watch(self.pipeline(), name)
        watch.add_events(BoardEvents(self.board, name))
        settings = self.settings.watch
        alerts = settings.alerts.dispatcher() if settings.alerts else None
        if alerts is not None:
            watch.add_events(alerts)
        if settings.mqtt:
            from maskwatch.mqtt import MqttOutput, MqttPublisher

            url = settings.mqtt
            if len(self.settings.sources) > 1:
                url = f"{url.rstrip('/')}/{name.rsplit(' ', 1)[-1]}"
            watch.add_events(MqttOutput(MqttPublisher(url), self.settings.events))
        return watch

    def browser_watch(self, name: str) -> Watch:
        """The watch of a browser session: the board, as one run of its own."""
        watch = Watch(self.pipeline(), name)
        watch.add_events(BoardEvents(self.board, name, run=name))
        return watch

    def start(self) -> None:
        for i, spec in enumerate(self.settings.sources, 1):
            name = f"camera {i}"
            camera = Camera(name, spec, self.camera_watch, self.settings.watch.blur)
            self.cameras[name] = camera
            self.board.pin(name, camera.current_error)
        if self.settings.mqtt:
            from maskwatch.mqtt import MqttSubscriber

            self._subscriber = MqttSubscriber(self.settings.mqtt, self.remote_event)
        log.info("serving with the classifier %s", self.classifier.path.name)

    def remote_event(self, topic: str, payload: dict[str, Any]) -> None:
        """An event from MQTT, onto the board if valid (ValueError, dropped, otherwise)."""
        camera, event = remote_event(topic, payload)
        self.board.add(camera, [event], run=REMOTE)

    def detect_photo(self, data: bytes, name: str) -> dict[str, Any]:
        """Faces in an uploaded photo; ImageTooLargeError or SourceError if it is not one."""
        image = decode_image(data, name, self.settings.max_pixels)
        with self._photo_lock:
            result = self._photo_pipeline.process(Frame(image, 0, 0.0, name, Mode.PHOTO))
        return result.to_dict()

    def stop(self) -> None:
        for camera in self.cameras.values():
            camera.stop()
        if self._subscriber is not None:
            self._subscriber.close()
        self.board.close()
