"""Keep OpenCV's own log off the user's terminal while we call it; our errors say what failed."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2

from maskwatch import defaults

# FFmpeg (inside OpenCV) prints its own lines for every failed connection of a stream; sources.py
# reports outages itself. Read by OpenCV when it first opens a capture; a user's setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


_quiet_lock = threading.Lock()
_quiet_depth = 0  # blocks inside quiet_opencv now, in every thread
_quiet_previous = 0


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's log for the block, then restore the level it had (no global change
    persists). OpenCV's level is one for the whole process, so blocks running at once in
    several threads (server cameras starting together) share one silence, and the level comes
    back only when the last of them ends."""
    global _quiet_depth, _quiet_previous
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_previous = logging.getLogLevel()
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logging.setLogLevel(_quiet_previous)


def open_capture(target: int | str) -> cv2.VideoCapture:
    """cv2.VideoCapture without OpenCV's console noise when the target cannot be opened; a
    stream (a URL) through FFmpeg, giving up opening after STREAM_OPEN_TIMEOUT_S and a read
    after STREAM_READ_TIMEOUT_S of silence (the stream is then reconnected)."""
    with quiet_opencv():
        if isinstance(target, str) and cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                round(defaults.STREAM_OPEN_TIMEOUT_S * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                round(defaults.STREAM_READ_TIMEOUT_S * 1000),
            ]
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, timeouts)
        return cv2.VideoCapture(target)


def open_video_file(path: str) -> cv2.VideoCapture:
    """A capture of a video file through FFmpeg alone where OpenCV has it. Trying every backend
    would end in OpenCV's own AVI reader, which prints what it dislikes in a damaged file (e.g.
    "Unexpected element. Expected: LIST. Got: ...") straight to stderr, past any log level, and
    reads nothing FFmpeg cannot."""
    backend = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    with quiet_opencv():
        return cv2.VideoCapture(path, backend)
