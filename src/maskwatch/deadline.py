"""One overall deadline for an HTTP(S) call, from connecting to the end of the answer.

A socket's timeout bounds each read alone, so a server answering a byte at a time would never be
given up. Here a watchdog shuts down every socket the call opened when the deadline comes, which
ends any read or TLS handshake still waiting.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import http.client
    import urllib.request


class Deadline:
    """Use as a context manager around the call; connections made through `connect` (as
    `opener` makes them) are shut down once `seconds` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        # duplicates: TLS takes the original socket over, the shutdown must still reach it
        self._sockets: list[socket.socket] = []
        self._expired = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.end

    def connect(
        self,
        address: tuple[str, int],
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """socket.create_connection for http.client, its timeout what is left of the deadline."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        sock = socket.create_connection(address, left, source_address)
        with self._lock:
            self._sockets.append(sock.dup())
            if self._expired:
                _shut_down(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shut_down(sock)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def failure_reason(exc: BaseException) -> str:
    """What went wrong in an HTTP(S) call, in one short line: an HTTP status with the first line
    of its reason (a redirect loop's runs over three), an answer that is not HTTP, or the
    system's reason ("Connection refused", not "<urlopen error [Errno 111] ...>")."""
    import http.client
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        said = (str(exc.reason).splitlines() or [""])[0][:120]
        return f"HTTP {exc.code} {said}".rstrip()
    if isinstance(exc, http.client.HTTPException):
        return f"not a valid HTTP answer ({type(exc).__name__}: {str(exc).strip()[:80]!r})"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def opener(deadline: Deadline, *, follow_redirects: bool) -> urllib.request.OpenerDirector:
    """urllib's opener for http(s) alone (proxies from the environment included), its
    connections under `deadline`. A status other than 2xx raises HTTPError, a redirect too
    unless `follow_redirects`: urllib would follow a POST's 301-303 as a GET without its body."""
    import http.client  # here: urllib.request costs 25 ms at start-up, and few calls need it
    import ssl
    import urllib.request

    def connection(kind: type[http.client.HTTPConnection]) -> Callable[..., Any]:
        def make(host: str, **options: Any) -> http.client.HTTPConnection:
            made = kind(host, **options)
            made._create_connection = deadline.connect  # type: ignore[attr-defined]
            return made

        return make

    context = ssl.create_default_context()

    class Plain(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(connection(http.client.HTTPConnection), req)

    class Secure(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(connection(http.client.HTTPSConnection), req, context=context)

    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler(),
        Plain(),
        Secure(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ]
    if follow_redirects:
        handlers.append(urllib.request.HTTPRedirectHandler())
    result = urllib.request.OpenerDirector()
    for handler in handlers:
        result.add_handler(handler)
    return result
