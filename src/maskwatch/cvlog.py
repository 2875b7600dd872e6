"""Keep OpenCV's own log off the user's terminal while we call it; our errors say what failed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import cv2

# FFmpeg (inside OpenCV) prints its own lines for every failed connection of a stream; sources.py
# reports outages itself. Read by OpenCV when it first opens a capture; a user's setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@contextmanager
def quiet_opencv(level: str = "LOG_LEVEL_SILENT") -> Iterator[None]:
    """Lower OpenCV's log level for the block, then restore it (no global change persists)."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(getattr(logging, level))
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def open_capture(target: int | str) -> cv2.VideoCapture:
    """cv2.VideoCapture without OpenCV's console noise when the target cannot be opened."""
    with quiet_opencv():
        return cv2.VideoCapture(target)


def open_video_file(path: str) -> cv2.VideoCapture:
    """A capture of a video file through FFmpeg alone where OpenCV has it. Trying every backend
    would end in OpenCV's own AVI reader, which prints what it dislikes in a damaged file (e.g.
    "Unexpected element. Expected: LIST. Got: ...") straight to stderr, past any log level, and
    reads nothing FFmpeg cannot."""
    backend = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    with quiet_opencv():
        return cv2.VideoCapture(path, backend)
