"""`maskwatch serve`'s routes: the browser-webcam page, server-side camera streams, the
dashboard and the HTTP API, as one FastAPI app over a `Service` (service.py). Needs the `web`
extra.

Security: the server binds to 127.0.0.1 unless told otherwise and then demands a token (or an
explicit --no-auth; server.py); on loopback it answers only requests that name a loopback host
(access.host_names: DNS rebinding), and nowhere does it take a WebSocket or an upload from a
browser page of another site (guard.py). Its pages send headers that bar framing and keep them
to their own server (headers.py). The token is accepted as `Authorization: Bearer TOKEN` or
`?token=TOKEN` (the page passes it on, the WebSocket included) and checked before a request's
body is read (see guard.py). Uploads are size-limited while they stream, decoded only within a
pixel budget read from the image's header, a bounded number at once (more get 503), and decoded
within a budget of pixels in flight (service.py); WebSocket sessions are limited in number and
closed when idle (guard.py) and keep only their newest frame (session.py); every error the API
returns is `{"error": "message"}`. Nothing from a request is used as a path or URL; nothing is
stored unless the server was given an event log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import (
    FastAPI,
    File,
    HTTPException,
    Query,
    Request,
    Security,
    UploadFile,
    WebSocket,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyQuery, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from maskwatch import __version__
from maskwatch.access import host_names
from maskwatch.defaults import SERVE_MJPEG_READERS, STATS_MAX_PERIODS, STATS_PERIODS
from maskwatch.errors import ImageTooLargeError, SourceError
from maskwatch.metrics import CONTENT_TYPE, RequestTimer
from maskwatch.web.docs import PAGES as DOCS_PAGES
from maskwatch.web.docs import add_docs
from maskwatch.web.guard import Guard, GuardSettings, given_token, token_matches
from maskwatch.web.headers import page_headers
from maskwatch.web.service import ServeSettings, Service, camera_name, session_name
from maskwatch.web.session import Session

log = logging.getLogger("maskwatch")

MJPEG_PART = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n"
STATIC = Path(str(resources.files("maskwatch") / "web" / "static"))
PUBLIC_PATHS = frozenset(
    {"/", "/dashboard", "/favicon.ico", "/api/v1/health", "/openapi.json", *DOCS_PAGES}
)


class Error(BaseModel):
    """Every error the API returns."""

    error: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": Error} for status in statuses}


def is_public(path: str) -> bool:
    """Paths served without the token: the pages, their assets, health and the API docs (which
    describe the API and hold no data; every operation they try still needs the token)."""
    return path in PUBLIC_PATHS or path.startswith("/static/")


def _message(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg"))


def add_error_handlers(app: FastAPI, settings: ServeSettings) -> None:
    """Every error as `{"error": message}`: FastAPI's and Starlette's own (404, 405, 422, the
    body limit's 413), the upload's (413, 415) and anything unexpected (500, logged)."""

    def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = settings.too_large if exc.status_code == 413 else str(exc.detail)
        return error(exc.status_code, message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "; ".join(_message(e) for e in exc.errors()) or "invalid request")

    @app.exception_handler(ImageTooLargeError)
    async def too_many_pixels(request: Request, exc: ImageTooLargeError) -> JSONResponse:
        return error(413, str(exc))

    @app.exception_handler(SourceError)
    async def not_an_image(request: Request, exc: SourceError) -> JSONResponse:
        return error(415, f"{exc} (JPEG, PNG, WebP, TIFF, GIF or BMP)")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error(500, "internal error")  # uvicorn logs the traceback


class _ToMaskwatch(logging.Handler):
    """Hands a library's log records to maskwatch's logger, so they are formatted as ours."""

    def emit(self, record: logging.LogRecord) -> None:
        log.handle(record)


def route_multipart_log() -> None:
    """python-multipart logs each malformed upload as a warning of its own, unformatted (the
    400 already says what is wrong); only its errors are kept, through maskwatch's logger."""
    multipart = logging.getLogger("python_multipart")
    multipart.setLevel(logging.ERROR)
    multipart.propagate = False
    if not any(isinstance(h, _ToMaskwatch) for h in multipart.handlers):
        multipart.addHandler(_ToMaskwatch())


def create_app(settings: ServeSettings, host: str | None = None) -> FastAPI:
    """The app for a server listening on `host` (which Host names it answers to depends on it;
    None for an app driven in-process, as tests do, which answers to any)."""
    route_multipart_log()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.stop()

    app = FastAPI(
        title="maskwatch",
        version=__version__,
        description="Face-mask detection: upload photos, stream a webcam, watch cameras. "
        'Errors are `{"error": "message"}`.\n\n'
        "The webcam stream is the WebSocket `/ws/detect`: JPEG frames as binary messages, "
        'numbered from 0 or from N after a text message `{"frame": N}`. Only the newest frame '
        "not yet answered is kept; each answer is the JSON of `detect --json` for the frame it "
        "answers (`frame`), with `camera`, `dropped` (frames of the session skipped for newer "
        "ones) and `server_ms`.",
        lifespan=lifespan,
        redirect_slashes=False,  # /api/v1/stats/ is a JSON 404, not an empty 307
        docs_url=None,  # add_docs serves them without a CDN
        redoc_url=None,
    )
    add_docs(app)
    app.state.service = service
    if host is not None:  # inside Guard, so that a refused request's unread body is not drained
        app.add_middleware(
            TrustedHostMiddleware, allowed_hosts=host_names(host, settings.allowed_hosts)
        )
    app.add_middleware(
        Guard,
        settings=GuardSettings(
            token=settings.token,
            is_public=is_public,
            max_body=settings.max_body,
            body_timeout=settings.request_timeout,
            too_large=settings.too_large,
            max_sessions=settings.max_sessions,
            session_idle=settings.session_idle_timeout,
            allowed_hosts=tuple(settings.allowed_hosts),
        ),
    )
    app.add_middleware(RequestTimer, metrics=service.metrics, routes=app.router.routes)
    add_error_handlers(app, settings)
    # Declared so /docs shows both ways of sending the token (its Authorize button sends it);
    # the check itself is Guard's, made before any body is read.
    token = [
        Security(HTTPBearer(auto_error=False, description="the server's token")),
        Security(APIKeyQuery(name="token", auto_error=False, description="or as ?token=")),
    ]
    api_errors = _errors(401, 404, 422, 500)

    def page(name: str) -> Callable[[], FileResponse]:
        def serve_page() -> FileResponse:
            return FileResponse(STATIC / name, media_type="text/html", headers=page_headers())

        return serve_page

    app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)(page("index.html"))
    app.api_route("/dashboard", methods=["GET", "HEAD"], include_in_schema=False)(
        page("dashboard.html")
    )

    assets = {p.name: p for p in STATIC.iterdir() if p.suffix in (".js", ".css", ".svg")}

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    @app.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in assets:  # only files the package ships; never a path from the request
            raise HTTPException(404, "no such file")
        return FileResponse(assets[name])

    @app.get("/api/v1/health", responses=_errors(500))
    def health(request: Request) -> dict[str, Any]:
        """The server's status and each server camera's state (starting, running,
        reconnecting, failed, ended), newest frame and frames per second; a failed camera's
        `error` (which names its host, path and user) only with the token, or when the server
        has none."""
        trusted = token_matches(given_token(request.scope), settings.token)
        cameras = [
            {**camera.health(trusted), **service.metrics.camera(name).activity()}
            for name, camera in service.cameras.items()
        ]
        return {
            "status": "ok",
            "version": __version__,
            "model": service.classifier.path.name,
            "classes": service.classifier.classes,
            "auth": settings.token is not None,
            "max_upload_mb": settings.max_upload_mb,
            "max_pixels": settings.max_pixels,
            "cameras": cameras,
            "max_uploads": settings.max_uploads,
        }

    @app.get(
        "/metrics",
        dependencies=token,
        responses={**api_errors, 200: {"content": {CONTENT_TYPE: {}}}},
        response_class=Response,
    )
    def metrics() -> Response:
        """Prometheus metrics: frames, frames per second, faces, events and people in view per
        camera, dropped frames, reconnects, alerts, MQTT deliveries, request latency."""
        return Response(service.metrics.text(), media_type=CONTENT_TYPE)

    @app.post(
        "/api/v1/detect",
        dependencies=token,
        responses=_errors(400, 401, 403, 408, 413, 415, 422, 500, 503),
        max_body_size=settings.max_body,
        form_limits={"max_files": 1, "max_fields": 0},
    )
    async def detect(
        image: Annotated[UploadFile, File(description="one photo (JPEG, PNG, WebP, ...)")],
    ) -> JSONResponse:
        """Faces in an uploaded photo, in the JSON of `maskwatch detect --json`. One file per
        request; 413 over the size or pixel limits; 503 with Retry-After when `--max-uploads`
        uploads are already in the server."""
        name = Path(image.filename or "upload").name
        with service.uploads.hold():  # read into memory only once it has a place
            data = await image.read()
            result = await run_in_threadpool(service.detect_photo, data, name)
        return JSONResponse(result)

    @app.get("/api/v1/stats", dependencies=token, responses=api_errors)
    def stats(
        by: str = "minute",
        camera: str | None = None,
        periods: Annotated[
            int | None,
            Query(
                description="the timeline of the last N periods only (1 to "
                f"{STATS_MAX_PERIODS:,}), read from the log's last N periods alone"
            ),
        ] = None,
    ) -> dict[str, Any]:
        if by not in STATS_PERIODS:
            raise HTTPException(422, f"by must be one of {', '.join(STATS_PERIODS)}")
        if periods is not None and not 1 <= periods <= STATS_MAX_PERIODS:
            raise HTTPException(422, f"periods must be from 1 to {STATS_MAX_PERIODS}")
        return {
            **service.board.live(),
            **service.board.history(by, camera, periods=periods),
            "stored": settings.events is not None,
        }

    @app.get("/api/v1/cameras", dependencies=token, responses=api_errors)
    def cameras() -> list[dict[str, object]]:
        return [camera.status() for camera in service.cameras.values()]

    @app.get(
        "/api/v1/cameras/{index}/mjpeg",
        dependencies=token,
        responses={**api_errors, **_errors(503)},
    )
    async def mjpeg(index: int, request: Request) -> StreamingResponse:
        """The camera's annotated frames as an MJPEG stream, from its first frame (waited for);
        503 with the reason when it has none to give (it failed, or the server is stopping),
        and with Retry-After when SERVE_MJPEG_READERS streams of it are open."""
        camera = service.cameras.get(camera_name(index))
        if camera is None:
            raise HTTPException(404, "no such camera")
        reason = camera.unavailable()
        if reason is not None:
            raise HTTPException(503, reason)
        if camera.readers >= SERVE_MJPEG_READERS:
            busy = f"{camera.name} has {SERVE_MJPEG_READERS} streams open; try again"
            raise HTTPException(503, busy, {"Retry-After": "5"})
        frames = camera.jpegs(request.is_disconnected)
        first = await anext(frames, None)  # the status must say whether there is a stream
        if first is None:
            raise HTTPException(503, camera.unavailable() or f"{camera.name} {camera.state}")

        async def parts() -> AsyncIterator[bytes]:
            yield MJPEG_PART + first + b"\r\n"
            async for data in frames:
                yield MJPEG_PART + data + b"\r\n"

        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame")

    @app.websocket("/ws/detect")
    async def browser_camera(socket: WebSocket) -> None:
        """The page's webcam: JPEG frames in (binary messages), the newest answered (see
        session.py)."""
        await socket.accept()
        await Session(socket, service, session_name(next(service.sessions))).run()

    return app
