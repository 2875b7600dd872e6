"""`maskwatch serve`: the browser-webcam page, server-side camera streams, the dashboard and the
HTTP API, as one FastAPI app. Needs the `web` extra.

Security: the CLI binds to 127.0.0.1 unless told otherwise and then demands a token (or an
explicit --no-auth). The token is accepted as `Authorization: Bearer TOKEN` or `?token=TOKEN`
(the page passes it on, the WebSocket included). Uploads are size-limited and must decode as
images; nothing from a request is used as a path or URL; nothing is stored unless the server
was given an event log.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile, WebSocket
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from maskwatch import __version__
from maskwatch.classifier import MaskClassifier
from maskwatch.defaults import STATS_PERIODS
from maskwatch.events import Event, EventStream
from maskwatch.faces import YuNetDetector
from maskwatch.pipeline import Pipeline
from maskwatch.tracking import IoUTracker
from maskwatch.types import Frame
from maskwatch.web.board import Board
from maskwatch.web.cameras import Camera

log = logging.getLogger("maskwatch")

MAX_UPLOAD_MB = 8.0
MAX_FRAME_SIDE = 1920  # a frame from the page larger than this is refused
STATIC = Path(str(resources.files("maskwatch") / "web" / "static"))


@dataclass
class ServeSettings:
    model: Path | None = None
    sources: list[str] = field(default_factory=list)
    events: Path | None = None
    mqtt: str | None = None
    token: str | None = None
    max_upload_mb: float = MAX_UPLOAD_MB


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _decode(data: bytes) -> np.ndarray | None:
    if not data:
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return image


class Service:
    """The models and cameras behind the app. The classifier is shared (ONNX Runtime runs are
    thread-safe); each camera and browser session gets its own detector and tracker."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.classifier = MaskClassifier(settings.model)
        self.board = Board(settings.events)
        self.cameras: dict[str, Camera] = {}
        self.sessions = itertools.count(1)
        self._photo_pipeline = self.pipeline(tracked=False)
        self._photo_lock = threading.Lock()
        self._subscriber: Any = None

    def pipeline(self, tracked: bool = True) -> Pipeline:
        return Pipeline(YuNetDetector(), self.classifier, IoUTracker() if tracked else None)

    def start(self) -> None:
        for i, spec in enumerate(self.settings.sources, 1):
            name = f"camera {i}"
            self.cameras[name] = Camera(name, spec, self.pipeline, self.board)
        if self.settings.mqtt:
            from maskwatch.mqtt import MqttSubscriber

            self._subscriber = MqttSubscriber(self.settings.mqtt, self.remote_event)
        log.info("serving with the classifier %s", self.classifier.path.name)

    def remote_event(self, topic: str, payload: dict[str, Any]) -> None:
        camera = str(payload.get("camera") or topic)
        try:
            event = Event.from_json(payload)
        except (KeyError, ValueError, TypeError, IndexError):
            log.warning("ignoring a malformed event on %s", topic)
            return
        self.board.add(camera, [event], run="mqtt")

    def detect_photo(self, image: np.ndarray, name: str) -> dict[str, Any]:
        with self._photo_lock:
            result = self._photo_pipeline.process(Frame(image, 0, 0.0, name, still=True))
        return result.to_json()

    def stop(self) -> None:
        for camera in self.cameras.values():
            camera.stop()
        if self._subscriber is not None:
            self._subscriber.close()
        self.board.close()


def create_app(settings: ServeSettings) -> FastAPI:
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.stop()

    app = FastAPI(
        title="maskwatch",
        version=__version__,
        description="Face-mask detection: upload photos, stream a webcam, watch cameras.",
        lifespan=lifespan,
    )
    app.state.service = service

    def allowed(token: str | None) -> bool:
        expected = settings.token
        return expected is None or (
            token is not None and hmac.compare_digest(token.encode(), expected.encode())
        )

    def require_token(request: Request, token: Annotated[str | None, Query()] = None) -> None:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else token
        if not allowed(given):
            raise HTTPException(401, "a valid token is required (?token=... or a Bearer header)")

    upload_limit = int(settings.max_upload_mb * 2**20)

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next: Any) -> Any:
        """A declared body over the limit is refused before it is read or parsed."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > upload_limit + 64 * 1024:
            return _error(413, f"upload larger than {settings.max_upload_mb:g} MB")
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    def page(name: str) -> Callable[[], FileResponse]:
        def serve_page() -> FileResponse:
            return FileResponse(STATIC / name, media_type="text/html")

        return serve_page

    app.get("/", include_in_schema=False)(page("index.html"))
    app.get("/dashboard", include_in_schema=False)(page("dashboard.html"))

    assets = {p.name: p for p in STATIC.iterdir() if p.suffix in (".js", ".css")}

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in assets:  # only files the package ships; never a path from the request
            raise HTTPException(404, "no such file")
        return FileResponse(assets[name])

    @app.get("/api/v1/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "model": service.classifier.path.name,
            "classes": service.classifier.classes,
            "auth": settings.token is not None,
        }

    @app.post("/api/v1/detect", dependencies=[Depends(require_token)])
    async def detect(image: Annotated[UploadFile, File()]) -> JSONResponse:
        """Faces in an uploaded photo, in the JSON of `maskwatch detect --json`."""
        data = await image.read(upload_limit + 1)
        if len(data) > upload_limit:
            return _error(413, f"upload larger than {settings.max_upload_mb:g} MB")
        decoded = await run_in_threadpool(_decode, data)
        if decoded is None:
            return _error(415, "the upload is not an image OpenCV can read (JPEG, PNG, ...)")
        name = Path(image.filename or "upload").name
        return JSONResponse(await run_in_threadpool(service.detect_photo, decoded, name))

    @app.get("/api/v1/stats", dependencies=[Depends(require_token)])
    def stats(by: str = "minute", camera: str | None = None) -> dict[str, Any]:
        if by not in STATS_PERIODS:
            raise HTTPException(422, f"by must be one of {', '.join(STATS_PERIODS)}")
        return {
            **service.board.live(),
            "timeline": service.board.timeline(by, camera),
            "stored": settings.events is not None,
        }

    @app.get("/api/v1/cameras", dependencies=[Depends(require_token)])
    def cameras() -> list[dict[str, object]]:
        return [camera.status() for camera in service.cameras.values()]

    @app.get("/api/v1/cameras/{index}/mjpeg", dependencies=[Depends(require_token)])
    def mjpeg(index: int) -> StreamingResponse:
        camera = service.cameras.get(f"camera {index}")
        if camera is None:
            raise HTTPException(404, "no such camera")

        def parts() -> Iterator[bytes]:
            for data in camera.jpegs():
                yield b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + data + b"\r\n"

        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame")

    @app.websocket("/ws/detect")
    async def browser_camera(socket: WebSocket, token: str | None = None) -> None:
        """The page's webcam: JPEG frames in, one JSON result per frame out."""
        if not allowed(token):
            await socket.close(code=1008, reason="a valid token is required")
            return
        await socket.accept()
        name = f"browser {next(service.sessions)}"
        service.board.camera(name)
        pipeline = service.pipeline()
        stream = EventStream()
        started = time.monotonic()
        index = 0

        def process(image: np.ndarray) -> dict[str, Any]:
            result = pipeline.process(Frame(image, index, time.monotonic() - started, name))
            service.board.add(name, stream.events(result), run=name)
            return result.to_json()

        try:
            while True:
                data = await socket.receive_bytes()
                t0 = time.perf_counter()
                image = _decode(data) if len(data) <= upload_limit else None
                if image is None or max(image.shape[:2]) > MAX_FRAME_SIDE:
                    await socket.send_text(json.dumps({"error": "not a usable JPEG frame"}))
                    continue
                reply = await run_in_threadpool(process, image)
                reply["server_ms"] = round(1000 * (time.perf_counter() - t0), 1)
                reply["camera"] = name
                await socket.send_text(json.dumps(reply))
                index += 1
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            ending = pipeline.finish()
            if ending is not None:
                service.board.add(name, stream.events(ending), run=name)
            service.board.end_run(name, run=name)

    return app
