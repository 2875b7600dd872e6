"""Where results go: a window, annotated images or video, JSON lines.

Every file sink writes under a temporary name and renames on close, so an interrupted run
leaves either the previous file or a complete new one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from maskwatch.atomic import PendingFile, write_bytes
from maskwatch.errors import OutputError
from maskwatch.sources import IMAGE_SUFFIXES
from maskwatch.types import FrameResult

QUIT_KEYS = frozenset({ord("q"), ord("Q"), 27})
SYSTEM_FONTS = "/usr/share/fonts/truetype/dejavu"


class FpsMeter:
    """Frames per second over the last `window` frames."""

    def __init__(self, window: int = 30) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        self._times.append(time.perf_counter())
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])


class WindowSink:
    """An OpenCV window; `show` returns False once the user pressed q or Esc or closed it."""

    def __init__(self, title: str = "maskwatch") -> None:
        self.title = title
        if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            raise OutputError(
                "cannot open a window: no display (DISPLAY is not set); "
                "use --no-show with --save or --json"
            )
        if Path(SYSTEM_FONTS).is_dir():  # OpenCV's bundled Qt ships no fonts and warns
            os.environ.setdefault("QT_QPA_FONTDIR", SYSTEM_FONTS)
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as exc:
            raise OutputError(
                "cannot open a window (no display?); use --no-show with --save or --json"
            ) from exc
        self._shown = False

    def show(self, image: np.ndarray, wait_ms: int = 1) -> bool:
        cv2.imshow(self.title, image)
        if not self._shown:
            cv2.resizeWindow(self.title, image.shape[1], image.shape[0])
            self._shown = True
        key = cv2.waitKey(wait_ms) & 0xFF
        if key in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)


class JsonLinesSink:
    """One JSON object per frame or image, to stdout ('-') or to a file written atomically."""

    def __init__(self, target: str) -> None:
        self._pending: PendingFile | None = None
        self._out: IO[str] = sys.stdout
        if target != "-":
            self._pending = PendingFile(Path(target))
            try:
                self._out = open(self._pending.tmp, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc

    def write(self, result: FrameResult) -> None:
        self.write_object(result.to_json())

    def write_object(self, obj: dict[str, Any]) -> None:
        self._out.write(json.dumps(obj) + "\n")
        self._out.flush()

    def close(self, ok: bool = True) -> None:
        """Complete the file (or, after a failure, remove what was written)."""
        if self._pending is None:
            return
        self._out.close()
        if ok:
            self._pending.commit()
        else:
            self._pending.discard()

    def __enter__(self) -> JsonLinesSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.close(ok=exc_type is None)


def encode_image(path: Path, image: np.ndarray) -> bytes:
    """Image bytes in the format of `path`'s suffix (JPEG when it has none)."""
    ok, data = cv2.imencode(path.suffix or ".jpg", image)
    if not ok:
        raise OutputError(f"cannot encode {path}")
    return data.tobytes()


class ImageSink:
    """Annotated images: one file when OUT has an image suffix, else files named after their
    sources in the folder OUT."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.single = out.suffix.lower() in IMAGE_SUFFIXES
        self._used: set[str] = set()
        self.written: list[Path] = []

    def _target(self, source: str) -> Path:
        if self.single:
            return self.out
        src = Path(source)
        suffix = src.suffix.lower() if src.suffix.lower() in IMAGE_SUFFIXES else ".jpg"
        name, n = f"{src.stem}{suffix}", 1
        while name in self._used:
            n += 1
            name = f"{src.stem}_{n}{suffix}"
        self._used.add(name)
        return self.out / name

    def write(self, result: FrameResult, annotated: np.ndarray) -> None:
        target = self._target(result.frame.source)
        write_bytes(target, encode_image(target, annotated))
        self.written.append(target)

    def close(self, ok: bool = True) -> None:
        pass


class VideoSink:
    """An annotated video, encoded with mp4v (.mp4) or MJPG (.avi), renamed into place on close."""

    def __init__(self, out: Path, fps: float) -> None:
        self.out = out
        self.fps = fps if fps > 0 else 25.0
        self._pending = PendingFile(out)
        self._writer: cv2.VideoWriter | None = None
        self.written: list[Path] = []

    def write(self, result: FrameResult, annotated: np.ndarray) -> None:
        if self._writer is None:
            fourcc = "MJPG" if self.out.suffix.lower() == ".avi" else "mp4v"
            size = (annotated.shape[1], annotated.shape[0])
            self._writer = cv2.VideoWriter(
                str(self._pending.tmp), cv2.VideoWriter.fourcc(*fourcc), self.fps, size
            )
            if not self._writer.isOpened():
                self.close(ok=False)
                raise OutputError(f"cannot write video {self.out} (try a .mp4 or .avi name)")
            self._size = size
        if (annotated.shape[1], annotated.shape[0]) != self._size:
            annotated = cv2.resize(annotated, self._size)
        self._writer.write(annotated)

    def close(self, ok: bool = True) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if ok:
            self._pending.commit()
            self.written.append(self.out)
        else:
            self._pending.discard()
