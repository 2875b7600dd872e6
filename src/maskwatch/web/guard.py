"""What stands between the network and the app: the token, a browser page of another site,
the body's size and its deadline, checked before the app reads a byte of the body, and
connection timers uvicorn lacks.

`Guard` is a pure ASGI middleware (it sees the raw `receive` and `send`, so it can answer before
any body is read or spooled): a request to a protected path without the token gets 401 at once,
a declared body over the limit 413 at once, and a body that has not arrived within the deadline
408. A response sent before the request's body was read whole closes the connection, so a
refused client cannot keep streaming into it. Bodies without a Content-Length are counted while
they stream by FastAPI's own `max_body_size` on the upload route. WebSocket sessions are
counted: beyond `max_sessions` at once a handshake is closed with 1013 and a reason the page
shows, and a session that sends nothing for `session_idle` seconds is closed, so neither many
sessions nor idle ones can hold the server's memory.

A browser names the page behind a request in its Origin header: a WebSocket handshake or a
request that may change something (any method but GET and HEAD) from a page of another site is
refused (WebSocket: closed with 1008; HTTP: 403), so a site the user visits cannot feed the
board or the event log through their browser. A request without Origin is not a browser
page's (a script, curl): the token alone decides.

`guarded_h11` is uvicorn's h11 protocol with an idle timer from the moment a connection opens
(uvicorn starts it only after a first response) and a deadline for a request's head, so idle or
slowly dribbled connections are closed instead of held forever.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from maskwatch.access import host_is_allowed
from maskwatch.defaults import SERVE_MAX_SESSIONS, SERVE_SESSION_IDLE_TIMEOUT

TOKEN_NEEDED = "this server needs a token"
# The close reason must fit a WebSocket control frame (123 bytes).
WS_TOKEN_REASON = f"{TOKEN_NEEDED}: open the address maskwatch serve printed (with ?token=)"
HTTP_TOKEN_MESSAGE = f"{TOKEN_NEEDED}: send 'Authorization: Bearer TOKEN' or ?token=TOKEN"
WRONG_TOKEN = "the token sent is not this server's"
HTTP_WRONG_TOKEN = f"{WRONG_TOKEN}: send the one maskwatch serve was given"
WS_WRONG_TOKEN = f"{WRONG_TOKEN}: open the address maskwatch serve printed"
POLICY_VIOLATION = 1008
NORMAL_CLOSURE = 1000
TRY_AGAIN_LATER = 1013
WS_BUSY_REASON = "the server is busy: too many sessions; try again later"
CROSS_SITE = "a page of another site may not use this server"
SAFE_METHODS = frozenset({"GET", "HEAD"})


def given_token(scope: Scope) -> str | None:
    """The token of a request or WebSocket handshake: a Bearer header, else ?token=."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def foreign_origin(scope: Scope, allowed: Sequence[str] = ()) -> str | None:
    """The Origin of a request from a browser page of another site than this server (as the
    request's own Host and scheme name it, or a name --allow-host gave: a reverse proxy's),
    else None."""
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is None:
        return None
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    own = f"{scheme}://{headers.get('host', '')}"
    if origin.lower() == own.lower():
        return None
    try:
        name = urlsplit(origin).hostname
    except ValueError:
        return origin
    return None if host_is_allowed(name, allowed) else origin


def token_matches(given: str | None, expected: str | None) -> bool:
    return expected is None or (
        given is not None and hmac.compare_digest(given.encode(), expected.encode())
    )


class BodyTimeout(HTTPException):
    """The request body did not arrive within the deadline; answered 408 (and closed)."""


@dataclass(frozen=True)
class GuardSettings:
    token: str | None
    is_public: Callable[[str], bool]  # paths served without the token
    max_body: int  # bytes; a declared Content-Length above it is refused unread
    body_timeout: float  # seconds for a request's whole body to arrive
    too_large: str  # the 413 message
    max_sessions: int = SERVE_MAX_SESSIONS  # WebSocket sessions at once; more get 1013
    session_idle: float = SERVE_SESSION_IDLE_TIMEOUT  # seconds a session may wait for a message
    allowed_hosts: tuple[str, ...] = ()  # --allow-host: pages there are not of another site


def _error_messages(status: int, message: str, close: bool) -> list[Message]:
    body = json.dumps({"error": message}, separators=(",", ":")).encode()  # as FastAPI
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


async def _refuse(receive: Receive, send: Send, code: int, reason: str) -> None:
    """Accept a WebSocket handshake, then close it with `code` and `reason`: a browser sees a
    close code and reason only after a handshake."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


def _closing_when_idle(receive: Receive, send: Send, settings: GuardSettings) -> Receive:
    """`receive` for a WebSocket session that closes it (1000, with a reason) when no message
    arrives within `session_idle` seconds; the app then sees an ordinary disconnect."""
    idle = settings.session_idle

    async def receive_or_close() -> Message:
        try:
            async with asyncio.timeout(idle):
                return await receive()
        except TimeoutError:
            reason = f"closed after {idle:g} s without a frame"
            await send({"type": "websocket.close", "code": NORMAL_CLOSURE, "reason": reason})
            return {"type": "websocket.disconnect", "code": NORMAL_CLOSURE, "reason": reason}

    return receive_or_close


class Guard:
    """Pure ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings
        self._sessions = 0  # WebSocket sessions open (one event loop: no lock needed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        return self.settings.is_public(scope["path"]) or token_matches(
            given_token(scope), self.settings.token
        )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if foreign_origin(scope, self.settings.allowed_hosts) is not None:
            await _refuse(receive, send, POLICY_VIOLATION, CROSS_SITE)
        elif not self._allowed(scope):
            wrong = given_token(scope) is not None
            reason = WS_WRONG_TOKEN if wrong else WS_TOKEN_REASON
            await _refuse(receive, send, POLICY_VIOLATION, reason)
        elif self._sessions >= self.settings.max_sessions:
            await _refuse(receive, send, TRY_AGAIN_LATER, WS_BUSY_REASON)
        else:
            self._sessions += 1
            try:
                await self.app(scope, _closing_when_idle(receive, send, self.settings), send)
            finally:
                self._sessions -= 1

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.settings
        pending = _has_body(scope)  # body bytes the client may still be sending
        foreign = scope["method"] not in SAFE_METHODS and foreign_origin(
            scope, settings.allowed_hosts
        )
        if foreign:
            status, message = 403, f"{CROSS_SITE} (Origin: {foreign[:200]})"
        elif not self._allowed(scope):
            wrong = given_token(scope) is not None
            status, message = 401, HTTP_WRONG_TOKEN if wrong else HTTP_TOKEN_MESSAGE
        elif (_declared_length(scope) or 0) > settings.max_body:
            status, message = 413, settings.too_large
        else:
            status = 0
        if status:
            for reply in _error_messages(status, message, close=pending):
                await send(reply)
            return

        deadline = asyncio.get_running_loop().time() + settings.body_timeout
        started = False

        async def receive_in_time() -> Message:
            nonlocal pending
            if not pending:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(
                    408, f"the request body did not arrive within {settings.body_timeout:g} s"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                pending = False
            return message

        async def send_closing(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if pending:  # never drain the rest of a refused or unread body
                    headers = [*message["headers"], (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_closing)
        except BodyTimeout as exc:  # raised outside a route's own exception handling
            if started:
                raise
            for reply in _error_messages(exc.status_code, str(exc.detail), close=True):
                await send(reply)
        except asyncio.CancelledError:  # the server stopped before this request was answered
            if not started:
                for reply in _error_messages(503, "the server is stopping", close=True):
                    await send(reply)
            raise


def guarded_h11(request_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections idle from the start (after uvicorn's own
    `timeout_keep_alive`) and requests whose head does not arrive within `request_timeout`."""

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            waiting = self.conn.their_state is h11.IDLE  # bytes of a head, not all of it
            if waiting and self._head_timer is None and not self.transport.is_closing():
                self._head_timer = self.loop.call_later(request_timeout, self._head_timeout)
            elif not waiting:
                self._cancel_head_timer()

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE:
                self.timeout_keep_alive_handler()

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

    return GuardedH11Protocol


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` and listening, made before the models load, so that an
    address in use is one clear error instead of uvicorn's log line after a start message."""
    from maskwatch.errors import MaskwatchError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise MaskwatchError(f"cannot serve on {host}:{port}: {why}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise MaskwatchError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
    return sock
