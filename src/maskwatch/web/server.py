"""Running the web service: who may reach it (a token is needed off loopback; the rule is
access.py's, shared with `detect --metrics-port`), HTTPS, and uvicorn bound first (an address
in use fails before the models load) with the guard's limits.
Front ends pass their options here; the policy is not theirs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from maskwatch.access import LOOPBACK, TOKEN_ENV, address, server_token
from maskwatch.defaults import SERVE_IDLE_TIMEOUT, SERVE_SHUTDOWN_TIMEOUT
from maskwatch.errors import SettingError
from maskwatch.web.app import create_app
from maskwatch.web.guard import guarded_h11, listen
from maskwatch.web.service import ServeSettings

log = logging.getLogger("maskwatch")

__all__ = ["LOOPBACK", "TOKEN_ENV", "Listener", "run_server", "server_token"]


@dataclass(frozen=True)
class Listener:
    """Where the server listens, and its TLS certificate and key (both or neither)."""

    host: str = "127.0.0.1"
    port: int = 8000
    cert: Path | None = None
    key: Path | None = None
    idle_timeout: int = SERVE_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise SettingError("HTTPS needs both --cert and --key")

    @property
    def scheme(self) -> str:
        return "https" if self.cert else "http"


def run_server(settings: ServeSettings, listener: Listener) -> None:
    """Bind, build the app (loading the models), say where to open it, and serve until
    interrupted."""
    sock = listen(listener.host, listener.port)
    try:
        config = uvicorn.Config(
            create_app(settings),
            host=listener.host,
            port=listener.port,
            ssl_certfile=str(listener.cert) if listener.cert else None,
            ssl_keyfile=str(listener.key) if listener.key else None,
            log_level="warning",
            http=guarded_h11(settings.request_timeout),
            timeout_keep_alive=listener.idle_timeout,
            ws_max_size=settings.max_body,
            timeout_graceful_shutdown=SERVE_SHUTDOWN_TIMEOUT,
        )
        url = address(listener.scheme, listener.host, listener.port, token=settings.token)
        log.info("open %s (dashboard: /dashboard, API docs: /docs)", url)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
