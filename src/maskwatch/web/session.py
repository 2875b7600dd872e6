"""A browser camera session over the WebSocket `/ws/detect`: frames in, one answer per frame
answered, only the newest frame kept.

The client sends JPEG frames as binary messages; frame N of the session is numbered N (from 0),
or as the client names it with a text message `{"frame": N}` before it (later frames count on
from there). The session reads every message as it arrives and keeps only the newest frame not
yet being answered: a client that sends faster than the server answers drops its own stale
frames, and nothing queues on the server. Each answer is the JSON of `detect --json` for the
frame it answers (`frame` is that frame's number) plus `camera` (the session's name),
`dropped` (frames of this session skipped so far for newer ones) and `server_ms` (from the
frame's arrival to its answer). A frame that cannot be used is answered with `error` in place
of the faces (with `frame`, `dropped` and `server_ms`), any other message with `{"error": ...}`
alone, and the session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from maskwatch.defaults import Range
from maskwatch.errors import SourceError
from maskwatch.types import Frame
from maskwatch.watch import Watch
from maskwatch.web.service import Service, decode_frame

FRAME_NUMBER_RANGE = Range(0, 2**53 - 1)  # integers a JavaScript client can count exactly
MAX_FRAME_MESSAGE = 100  # characters; `{"frame": 9007199254740991}` takes 27
NOT_A_FRAME = 'send frames as binary JPEG messages (a text message may only be {"frame": N})'


@dataclass(frozen=True)
class Received:
    number: int
    data: bytes
    at: float  # time.monotonic() at arrival


class Newest:
    """The newest frame not yet being answered; a newer one replaces it and counts as dropped."""

    def __init__(self) -> None:
        self.dropped = 0
        self._frame: Received | None = None
        self._closed = False
        self._changed = asyncio.Event()

    def put(self, frame: Received) -> None:
        if self._frame is not None:
            self.dropped += 1
        self._frame = frame
        self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    async def take(self) -> Received | None:
        """The newest frame, waiting for one; None once the client has gone."""
        while not self._closed:
            if self._frame is not None:
                frame, self._frame = self._frame, None
                return frame
            self._changed.clear()
            await self._changed.wait()
        return None


def frame_number(text: str) -> int | None:
    """N from a text message `{"frame": N}`, or None when the message is anything else (a long
    one is not parsed at all: JSON nested deep enough fails with a RecursionError)."""
    if len(text) > MAX_FRAME_MESSAGE:
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or set(message) != {"frame"}:
        return None
    number = message["frame"]
    if isinstance(number, bool) or not isinstance(number, int):
        return None
    return number if number in FRAME_NUMBER_RANGE else None


class Session:
    """One browser camera: its WebSocket, its newest frame and its `Watch`."""

    def __init__(self, socket: WebSocket, service: Service, name: str) -> None:
        self.socket = socket
        self.service = service
        self.name = name
        self.newest = Newest()
        self.started = time.monotonic()
        self._sending = asyncio.Lock()

    async def send(self, reply: dict[str, Any]) -> None:
        async with self._sending:
            await self.socket.send_json(reply)

    async def receive(self) -> None:
        """Read every message as it comes, keeping only the newest frame, until the client
        goes."""
        number = 0
        try:
            while True:
                message = await self.socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is not None:
                    self.newest.put(Received(number, data, time.monotonic()))
                    number += 1
                elif (named := frame_number(message.get("text") or "")) is not None:
                    number = named
                else:
                    await self.send({"error": NOT_A_FRAME})
        finally:
            self.newest.close()

    def process(self, watch: Watch, frame: Received) -> dict[str, Any]:
        try:
            image = decode_frame(frame.data, self.service.settings.max_pixels)
        except SourceError as exc:
            return {"error": str(exc), "frame": frame.number}
        seconds = frame.at - self.started
        reply = watch.process(Frame(image, frame.number, seconds, self.name)).to_dict()
        reply["camera"] = self.name
        return reply

    async def answer(self, watch: Watch) -> None:
        """Answer the newest frame, again and again, until the client goes."""
        while (frame := await self.newest.take()) is not None:
            reply = await run_in_threadpool(self.process, watch, frame)
            reply["dropped"] = self.newest.dropped
            reply["server_ms"] = round(1000 * (time.monotonic() - frame.at), 1)
            await self.send(reply)

    async def run(self) -> None:
        board = self.service.board
        reader = asyncio.create_task(self.receive())
        try:
            with self.service.browser_watch(self.name) as watch:
                try:
                    await self.answer(watch)
                except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
                    pass
                finally:
                    watch.finish()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await reader
            board.end(self.name)
