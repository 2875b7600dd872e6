"""Server-side cameras for `serve --source`: each runs the pipeline on its own thread and keeps
its newest annotated frame as JPEG for the page's MJPEG stream."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import cv2

from maskwatch.draw import draw_faces
from maskwatch.errors import MaskwatchError
from maskwatch.events import EventStream
from maskwatch.pipeline import Pipeline
from maskwatch.sources import open_source
from maskwatch.web.board import Board

log = logging.getLogger("maskwatch")

JPEG_QUALITY = 80


class Camera:
    """One `--source`, processed continuously while the server runs."""

    def __init__(
        self, name: str, spec: str, make_pipeline: Callable[[], Pipeline], board: Board
    ) -> None:
        self.name = name
        self.spec = spec
        self.error: str | None = None
        self.frames = 0
        self._make_pipeline = make_pipeline
        self._board = board
        self._jpeg: bytes | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        board.camera(name, lambda: self.error)
        self._thread = threading.Thread(target=self._run, name=f"camera {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pipeline = self._make_pipeline()
        stream = EventStream()
        try:
            source = open_source(self.spec)
        except MaskwatchError as exc:
            self.error = str(exc)
            log.error("camera %s: %s", self.name, exc)
            return
        try:
            for frame in source.frames():
                if self._stop.is_set():
                    break
                result = pipeline.process(frame)
                self._board.add(self.name, stream.events(result))
                ok, data = cv2.imencode(
                    ".jpg",
                    draw_faces(frame.image, result.faces),
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
                )
                with self._cond:
                    self.frames += 1
                    self._jpeg = data.tobytes() if ok else self._jpeg
                    self._cond.notify_all()
            ending = pipeline.finish()
            if ending is not None:
                self._board.add(self.name, stream.events(ending))
        except MaskwatchError as exc:
            self.error = str(exc)
            log.error("camera %s: %s", self.name, exc)
        except Exception as exc:  # one camera's failure must not take the server down
            self.error = f"stopped by an unexpected error: {exc}"
            log.exception("camera %s stopped", self.name)
        finally:
            source.close()
            self._board.end_run(self.name)
            with self._cond:
                self._cond.notify_all()

    def _changed(self, seen: int) -> Callable[[], bool]:
        return lambda: self.frames != seen or not self._thread.is_alive()

    def jpegs(self) -> Iterator[bytes]:
        """Each new annotated frame as JPEG, until the camera stops."""
        seen = -1
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(self._changed(seen), timeout=1.0)
                if self._jpeg is None or self.frames == seen:
                    if not self._thread.is_alive():
                        return
                    continue
                seen, data = self.frames, self._jpeg
            yield data

    def status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "frames": self.frames,
            "running": self._thread.is_alive(),
            "error": self.error,
        }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
