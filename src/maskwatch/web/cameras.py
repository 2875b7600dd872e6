"""Server-side cameras for `serve --source`, and the outputs of every watch the server runs.

Each camera runs one `Watch` on its own thread, with the outputs `detect` would have (alerts,
MQTT, blur as the options say) plus the dashboard board, a buffer keeping the newest
annotated frame as JPEG for the page's MJPEG stream, and with `serve --save` a recording of
the annotated video (H.264 where PyAV is installed; see sinks.VideoSink)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path

import anyio.to_thread
import cv2
import numpy as np

from maskwatch.defaults import SERVE_MJPEG_POLL, Blur
from maskwatch.draw import Annotator
from maskwatch.errors import MaskwatchError
from maskwatch.events import Event
from maskwatch.redact import redact
from maskwatch.sinks import SaveOutput
from maskwatch.sources import LiveSource, RealTime, Source, open_source
from maskwatch.types import Frame, FrameResult
from maskwatch.watch import Watch
from maskwatch.web.board import Board

log = logging.getLogger("maskwatch")

JPEG_QUALITY = 80
HEALTH_KEYS = ("name", "state", "error", "frames")  # in /api/v1/health's order


class BoardEvents:
    """The dashboard as an event output of one camera's run (a process, a browser session)."""

    def __init__(self, board: Board, camera: str, run: str = "") -> None:
        self.board = board
        self.camera = camera
        self.run = run
        board.camera(camera)

    def write(self, events: Sequence[Event], image: np.ndarray | None = None) -> None:
        self.board.add(self.camera, list(events), run=self.run)

    def close(self) -> None:
        self.board.end_run(self.camera, run=self.run)


class JpegBuffer:
    """The newest annotated frame as JPEG, for any number of MJPEG readers (a frame output).

    A frame is drawn and encoded only when a reader asks for it, on a worker thread, once
    however many read it: a camera nobody watches spends nothing on JPEG, and one watched
    never waits for the encoder. Readers wait for frames on the event loop, holding no
    thread."""

    def __init__(self, annotator: Annotator) -> None:
        self.annotator = annotator
        self.frames = 0
        self.closed = False
        self.readers = 0  # MJPEG streams reading it now
        self._latest: FrameResult | None = None
        self._jpeg: tuple[int, bytes] | None = None  # (frame number, its JPEG)
        self._lock = threading.Lock()
        self._encoding = asyncio.Lock()  # one encoder at a time; the others take its JPEG

    def write(self, result: FrameResult) -> None:
        with self._lock:
            self.frames += 1
            self._latest = result

    def close(self, ok: bool = True) -> None:
        self.closed = True

    def _encode(self, number: int, result: FrameResult) -> bytes | None:
        """Frame `number` as JPEG (None if OpenCV cannot encode it), kept for other readers."""
        image = self.annotator(result)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return None
        jpeg = data.tobytes()
        if self._jpeg is None or self._jpeg[0] < number:
            self._jpeg = (number, jpeg)
        return jpeg

    async def _jpeg_of(self, number: int, result: FrameResult) -> bytes | None:
        async with self._encoding:
            cached = self._jpeg
            if cached is not None and cached[0] == number:
                return cached[1]
            return await anyio.to_thread.run_sync(self._encode, number, result)

    async def jpegs(
        self, stop: threading.Event, left: Callable[[], Awaitable[bool]]
    ) -> AsyncIterator[bytes]:
        """Each new frame as JPEG, until the buffer closes, `stop` is set or, before the
        first frame, the reader has `left` (after it, cancelling the stream ends it)."""
        self.readers += 1
        try:
            seen = 0
            while not stop.is_set():
                if self.frames == seen:
                    if self.closed or (seen == 0 and await left()):
                        return
                    await asyncio.sleep(SERVE_MJPEG_POLL)
                    continue
                with self._lock:
                    seen, latest = self.frames, self._latest
                if latest is not None and (data := await self._jpeg_of(seen, latest)):
                    yield data
        finally:
            self.readers -= 1


class CameraState(StrEnum):
    """Where a server camera is, as `/api/v1/cameras` says it."""

    STARTING = "starting"  # its source is opening
    RUNNING = "running"
    RECONNECTING = "reconnecting"  # a stream that dropped, being opened again
    ENDED = "ended"  # a file source played to its end: its last frame is not live
    FAILED = "failed"  # see its error
    STOPPED = "stopped"  # the server is stopping


class Camera:
    """One `--source`, watched continuously while the server runs. `make_watch(name)` gives
    the watch with its pipeline and event outputs; the camera adds its MJPEG buffer. A file
    plays at its own frame rate, never faster (RealTime), every frame of it, and then ends; a
    live source keeps only its newest frame (`dropped` counts the others)."""

    def __init__(
        self,
        name: str,
        spec: str,
        make_watch: Callable[[str], Watch],
        blur: Blur = Blur.NONE,
        record: Path | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.record = record  # the annotated video, put in place when the camera stops
        self.error: str | None = None  # without any URL's credentials
        self.source: Source | None = None  # once opened
        self._state = CameraState.STARTING
        self._make_watch = make_watch
        self._buffer = JpegBuffer(Annotator(blur))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def frames(self) -> int:
        return self._buffer.frames

    def _frames(self, source: Source) -> Iterator[Frame]:
        """The source's frames until the camera stops; a file's at its own frame rate."""
        frames: Iterable[Frame] = source.frames()
        if not isinstance(source, LiveSource):
            frames = RealTime(frames, wait=self._stop.wait)
        for frame in frames:
            if self._stop.is_set():
                return
            yield frame

    def _run(self) -> None:
        try:
            with self._make_watch(self.name) as watch:
                watch.add(self._buffer)
                source = self.source = open_source(self.spec)
                watch.on_close(source.close)
                recording = None
                if self.record is not None:
                    # opened at the first frame, when a file's frame rate is known
                    recording = SaveOutput(self.record, source, self._buffer.annotator)
                    watch.add(recording)
                self._state = CameraState.RUNNING
                watch.run(self._frames(source), workers=1)  # one frame in flight a stream
            self._state = CameraState.STOPPED if self._stop.is_set() else CameraState.ENDED
            if recording is not None and recording.written:
                log.info("%s: wrote %s (%s)", self.name, self.record, recording.codec)
        except MaskwatchError as exc:
            self._fail(str(exc))
            log.error("%s: %s", self.name, exc)
        except Exception as exc:  # one camera's failure must not take the server down
            self._fail(f"stopped by an unexpected error: {exc}")
            log.exception("%s stopped", self.name)
        finally:
            self._buffer.close()

    def _fail(self, error: str) -> None:
        self.error = redact(error)  # shown by the API, the page and the dashboard
        self._state = CameraState.FAILED

    def jpegs(self, left: Callable[[], Awaitable[bool]]) -> AsyncIterator[bytes]:
        """Each new annotated frame as JPEG, until the camera stops, fails or its source ends,
        or the reader has `left` before its first frame."""
        return self._buffer.jpegs(self._stop, left)

    @property
    def readers(self) -> int:
        """Its MJPEG streams now."""
        return self._buffer.readers

    def unavailable(self) -> str | None:
        """Why the camera has no frames to stream (None while it may have): it failed, or it
        or the server is stopping."""
        if self.state is CameraState.FAILED:
            return f"{self.name} failed: {self.error}"
        if self._stop.is_set() or self.state is CameraState.STOPPED:
            return "the server is stopping"
        return None

    @property
    def dropped(self) -> int:
        """Frames a live source dropped for newer ones (a file's are all watched)."""
        return self.source.dropped if isinstance(self.source, LiveSource) else 0

    def status(self) -> dict[str, object]:
        """Its state for /api/v1/cameras."""
        return {
            "name": self.name,
            "state": str(self.state),
            "frames": self.frames,
            "dropped": self.dropped,
            "error": self.error,
        }

    def current_source(self) -> Source | None:
        return self.source

    @property
    def state(self) -> CameraState:
        """Where the camera is now; a running stream that dropped is reconnecting."""
        if self._state is CameraState.RUNNING and getattr(self.source, "reconnecting", False):
            return CameraState.RECONNECTING
        return self._state

    def health(self, trusted: bool) -> dict[str, object]:
        """Its state for /api/v1/health, which needs no token: `status` without `dropped`, and
        without `error` (its source's host, path and user) unless the client is `trusted`."""
        status = self.status()
        return {key: status[key] for key in HEALTH_KEYS if trusted or key != "error"}

    def current_error(self) -> str | None:
        """The camera's error now (None while it works), for the dashboard to ask when shown."""
        return self.error

    def stopping(self) -> None:
        """Stop without waiting: its readers' streams end and its recording is completed."""
        self._stop.set()

    def stop(self) -> None:
        self.stopping()
        self._thread.join(timeout=5.0)
