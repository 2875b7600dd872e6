"""Where frames come from: webcam, video file, rtsp/http stream, image, folder or glob.

`open_source` resolves a `--source` string to one of two kinds of source. Files (images and
videos, alone, in a folder or matched by a glob) are read in order without dropping anything;
a file that cannot be read is skipped with a warning. Live sources (cameras and streams) are
read on their own thread that keeps only the newest frame, so lag never builds up when
processing is slower than the camera; a stream that drops is reopened with backoff.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from maskwatch.cvlog import open_capture
from maskwatch.defaults import RECONNECT_ATTEMPTS
from maskwatch.errors import SourceError
from maskwatch.types import Frame

log = logging.getLogger("maskwatch")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
)
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_GLOB_CHARS = frozenset("*?[")


class Source(Protocol):
    """An iterable of frames that can be closed; `read` counts frames or images delivered."""

    name: str
    live: bool
    read: int
    skipped: int
    fps: float

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


def read_image(path: Path) -> np.ndarray | None:
    """A BGR image, or None when the file is not a readable image (also handles non-ASCII paths)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


def list_images(folder: Path) -> list[Path]:
    """Every image below `folder` by suffix, recursively, in a stable order."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclass
class FileSource:
    """Images and videos read in order. Unreadable files are skipped with a warning."""

    paths: list[Path]
    name: str
    live: bool = False
    read: int = 0
    skipped: int = 0
    fps: float = 0.0

    def frames(self) -> Iterator[Frame]:
        image_index = 0
        for path in self.paths:
            suffix = path.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                yield from self._video_frames(path)
                continue
            image = read_image(path)
            if image is None and suffix not in IMAGE_SUFFIXES:
                yield from self._video_frames(path, why="not an image or video")
                continue
            if image is None:
                self._skip(path, "not a readable image")
                continue
            self.read += 1
            yield Frame(image=image, index=image_index, time=0.0, source=str(path), still=True)
            image_index += 1

    def _video_frames(self, path: Path, why: str | None = None) -> Iterator[Frame]:
        """Frames of one video; `why` replaces the specific reason when it cannot be read."""
        if not path.is_file():
            self._skip(path, "no such file")
            return
        capture = open_capture(str(path))
        try:
            if not capture.isOpened():
                self._skip(path, why or "not a readable video")
                return
            fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
            self.fps = fps
            index = 0
            while True:
                ok, image = capture.read()
                if not ok or image is None:
                    break
                self.read += 1
                seconds = index / fps if fps > 0 else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield Frame(image=image, index=index, time=seconds, source=str(path))
                index += 1
            if index == 0:
                self._skip(path, why or "no frame could be decoded")
        finally:
            capture.release()

    def _skip(self, path: Path, why: str) -> None:
        self.skipped += 1
        if len(self.paths) == 1:
            raise SourceError(f"{path}: {why}")
        log.warning("skipping %s: %s", path, why)

    def close(self) -> None:
        pass


CaptureFactory = Callable[[], cv2.VideoCapture]


class LiveSource:
    """A camera or stream read on a background thread that keeps only the newest frame.

    When a read fails the capture is reopened after 0.5, 1, 2, 4 ... seconds (each outage is
    logged); after `reconnect_attempts` failed reopenings the source gives up with a SourceError.
    A camera gets no reconnection: a webcam that stops delivering is reported at once.
    """

    live = True

    def __init__(
        self,
        name: str,
        open_capture: CaptureFactory,
        reconnect_attempts: int = RECONNECT_ATTEMPTS,
        first_backoff_s: float = 0.5,
        max_fps: float | None = None,
    ) -> None:
        self.name = name
        self.read = 0
        self.skipped = 0
        self.dropped = 0
        self.reconnects = 0
        self._open = open_capture
        self._attempts = reconnect_attempts
        self._backoff = first_backoff_s
        self._min_interval = 1.0 / max_fps if max_fps else 0.0
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._error: SourceError | None = None
        self._finished = False
        self._stop = threading.Event()
        capture = open_capture()
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {name}")
        self._capture = capture
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if max_fps:
            self.fps = min(self.fps or max_fps, max_fps)
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"capture {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ok, image = self._capture.read()
                if ok and image is not None:
                    with self._cond:
                        if self._latest is not None:
                            self.dropped += 1
                        self._latest = image
                        self._cond.notify_all()
                    continue
                if not self._reconnect():
                    return
        finally:
            self._capture.release()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _reconnect(self) -> bool:
        self._capture.release()
        if self._attempts <= 0:
            self._fail(f"{self.name} stopped delivering frames")
            return False
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            log.warning(
                "%s dropped; reconnecting in %.1f s (attempt %d of %d)",
                self.name,
                delay,
                attempt,
                self._attempts,
            )
            if self._stop.wait(delay):
                return False
            capture = self._open()
            if capture.isOpened():
                self._capture = capture
                self.reconnects += 1
                log.warning("%s reconnected", self.name)
                return True
            capture.release()
            delay = min(delay * 2, 30.0)
        self._fail(f"{self.name} dropped and did not come back after {self._attempts} attempts")
        return False

    def _fail(self, message: str) -> None:
        with self._cond:
            self._error = SourceError(message)
            self._cond.notify_all()

    def frames(self) -> Iterator[Frame]:
        index = 0
        last = 0.0
        while True:
            with self._cond:
                while self._latest is None and self._error is None and not self._finished:
                    self._cond.wait(timeout=1.0)
                if self._latest is None:
                    if self._error is not None:
                        raise self._error
                    return
                image, self._latest = self._latest, None
            now = time.monotonic()
            if self._min_interval and now - last < self._min_interval:
                time.sleep(self._min_interval - (now - last))
                now = time.monotonic()
            last = now
            self.read += 1
            yield Frame(image=image, index=index, time=now - self._start, source=self.name)
            index += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _expand_glob(pattern: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    return [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]


def open_source(
    spec: str, reconnect_attempts: int = RECONNECT_ATTEMPTS, max_fps: float | None = None
) -> Source:
    """Resolve a --source string: a camera index, a stream URL, a file, a folder or a glob."""
    spec = spec.strip()
    if spec.isdigit():
        index = int(spec)
        return LiveSource(
            f"camera {index}",
            lambda: open_capture(index),
            reconnect_attempts=0,
            max_fps=max_fps,
        )
    if spec.lower().startswith(STREAM_SCHEMES):
        return LiveSource(
            spec,
            lambda: open_capture(spec),
            reconnect_attempts=reconnect_attempts,
            max_fps=max_fps,
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise SourceError(f"{path}: folder contains no images")
        return FileSource(images, str(path))
    if path.is_file():
        return FileSource([path], str(path))
    if _GLOB_CHARS & set(spec):
        matches = _expand_glob(spec)
        if not matches:
            raise SourceError(f"{spec}: no image or video matches this pattern")
        return FileSource(matches, spec)
    raise SourceError(f"{spec}: no such file, folder, camera or stream")
