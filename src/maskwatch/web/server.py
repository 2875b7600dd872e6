"""Running the web service: who may reach it (a token is needed off loopback; the rule is
access.py's, shared with `detect --metrics-port`), HTTPS, and uvicorn bound first (an address
in use fails before the models load) with the guard's limits.
Front ends pass their options here; the policy is not theirs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn

from maskwatch.access import LOOPBACK, TOKEN_ENV, address, server_token
from maskwatch.defaults import (
    LOOPBACK_HOST,
    MAX_SETTINGS_BYTES,
    SERVE_IDLE_TIMEOUT,
    SERVE_PORT,
    SERVE_SHUTDOWN_TIMEOUT,
)
from maskwatch.errors import SettingError, SourceError
from maskwatch.images import read_file
from maskwatch.redact import OWN_SECRET
from maskwatch.web.app import create_app
from maskwatch.web.guard import guarded_h11, listen
from maskwatch.web.service import ServeSettings

log = logging.getLogger("maskwatch")

__all__ = ["LOOPBACK", "TOKEN_ENV", "Listener", "run_server", "server_token"]


@dataclass(frozen=True)
class Listener:
    """Where the server listens, and its TLS certificate and key (both or neither)."""

    host: str = LOOPBACK_HOST
    port: int = SERVE_PORT
    cert: Path | None = None
    key: Path | None = None
    idle_timeout: int = SERVE_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise SettingError("HTTPS needs both --cert and --key")
        if self.cert is not None and self.key is not None:
            check_tls(self.cert, self.key)

    @property
    def scheme(self) -> str:
        return "https" if self.cert else "http"


def check_tls(cert: Path, key: Path) -> None:
    """Load the certificate and key as the server will, before anything is announced: a file
    that is not PEM, a key of another certificate or an encrypted key (serve has no passphrase
    to give) is one line instead of ssl's traceback after "open https://..."."""
    for option, path in (("--cert", cert), ("--key", key)):
        try:  # the bounded read every settings file gets: a FIFO would be waited on
            read_file(path, MAX_SETTINGS_BYTES, "a PEM file")
        except SourceError as exc:
            raise SettingError(f"cannot use {option} {exc}") from exc
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise SettingError(
            f"cannot use --cert {cert} with --key {key}: {reason} (both must be PEM files, the "
            "key unencrypted and matching the certificate)"
        ) from exc


class _Server(uvicorn.Server):
    """uvicorn's server, calling `stopping` as soon as it is told to stop: it then waits for
    open connections, and a camera's MJPEG stream only ends when its camera stops. A second
    signal while it stops (Ctrl-C twice, or SIGTERM then Ctrl-C) is answered in one line and
    the shutdown goes on: uvicorn would skip the app's own shutdown (cameras, event logs) and
    print a traceback. A third stops it at once, as uvicorn's second does."""

    def __init__(self, config: uvicorn.Config, stopping: Callable[[], None]) -> None:
        super().__init__(config)
        self._stopping = stopping
        self._signals = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 2:
            log.warning(
                "already stopping: open connections get at most %d s (again to stop at once)",
                SERVE_SHUTDOWN_TIMEOUT,
            )
            return
        if self._signals > 2:
            self.force_exit = True  # uvicorn forces only on SIGINT; systemd and docker send SIGTERM
        self._stopping()
        super().handle_exit(sig, frame)


class _CutOffRequests(logging.Filter):
    """A request still running when the shutdown's grace ends is cancelled by uvicorn (its
    client gets a 503), which logs Starlette's traceback of the CancelledError: said in one line
    instead. A stop forced by a third signal cancels the app's shutdown too: its traceback is
    left out, the stop having been asked for."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            log.warning("a request still running when the server stopped was cut off")
            return False
        said = record.getMessage()
        return "asyncio.exceptions.CancelledError" not in said and not (
            said.startswith("Cancel ") and said.endswith("timeout graceful shutdown exceeded")
        )  # uvicorn's own line for the cut-off requests, said above


@contextlib.contextmanager
def _uvicorn_lines() -> Iterator[None]:
    """uvicorn's own lines (`Invalid HTTP request received.`) written by maskwatch's handlers,
    in its one-line form (`maskwatch: warning: ...`) instead of uvicorn's `WARNING:  ...`, the
    cut-off requests' tracebacks left out (`_CutOffRequests`)."""
    uvicorn_log = logging.getLogger("uvicorn.error")
    kept = uvicorn_log.handlers[:], uvicorn_log.propagate
    cut_off = _CutOffRequests()
    uvicorn_log.handlers[:] = log.handlers
    uvicorn_log.propagate = False
    uvicorn_log.addFilter(cut_off)
    try:
        yield
    finally:
        uvicorn_log.removeFilter(cut_off)
        uvicorn_log.handlers[:], uvicorn_log.propagate = kept


def run_server(settings: ServeSettings, listener: Listener) -> None:
    """Bind, build the app (loading the models), say where to open it, and serve until
    interrupted."""
    sock = listen(listener.host, listener.port)
    try:
        app = create_app(settings, listener.host)
        config = uvicorn.Config(
            app,
            host=listener.host,
            port=listener.port,
            ssl_certfile=str(listener.cert) if listener.cert else None,
            ssl_keyfile=str(listener.key) if listener.key else None,
            log_level="warning",
            log_config=None,  # its lines go through maskwatch's handler: see _uvicorn_lines
            http=guarded_h11(settings.request_timeout),
            timeout_keep_alive=listener.idle_timeout,
            ws_max_size=settings.max_body,
            timeout_graceful_shutdown=SERVE_SHUTDOWN_TIMEOUT,
        )
        url = address(listener.scheme, listener.host, listener.port, token=settings.token)
        log.info("open %s (dashboard: /dashboard, API docs: /docs)", url, extra={OWN_SECRET: True})
        with _uvicorn_lines():
            _Server(config, app.state.service.stopping).run(sockets=[sock])
    finally:
        sock.close()
