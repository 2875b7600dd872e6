"""Where frames come from: webcam, video file, rtsp/http stream, image, folder or glob.

`open_source` resolves a `--source` string to one of two kinds of source. Files (images and
videos, alone, in a folder or matched by a glob) are read in order without dropping anything;
a file that cannot be read is skipped with a warning. Live sources (cameras and streams) are
read on their own thread that keeps only the newest frame, so lag never builds up when
processing is slower than the camera; a stream that drops is reopened with backoff.
"""

from __future__ import annotations

import functools
import glob
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from maskwatch.cvlog import open_capture, open_video_file, quiet_opencv
from maskwatch.defaults import (
    DEFAULT_VIDEO_FPS,
    MAX_FPS_RANGE,
    MAX_IMAGE_PIXELS,
    RECONNECT_ATTEMPTS,
    RECONNECT_RANGE,
    VIDEO_FPS_RANGE,
    VIDEO_MAX_PAUSE,
)
from maskwatch.errors import SettingError, SourceError
from maskwatch.images import as_megapixels, check_readable, is_image_file, load_image
from maskwatch.paths import expand_home, missing
from maskwatch.redact import redact
from maskwatch.types import Frame, Mode

log = logging.getLogger("maskwatch")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
)
# Containers whose header states the exact number of frames (elsewhere FFmpeg estimates it from
# the duration), so that reading fewer means the file is truncated or damaged.
EXACT_COUNT_SUFFIXES = frozenset({".avi", ".mp4", ".mov", ".m4v"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
MAX_CAMERA_INDEX = 2**31 - 1
_GLOB_CHARS = frozenset("*?[")


class Source(Protocol):
    """An iterable of frames that can be closed; `read` counts frames or images delivered."""

    name: str
    live: bool
    read: int
    fps: float

    def frames(self) -> Iterator[Frame]: ...

    def shortfall(self) -> str | None: ...

    def close(self) -> None: ...


def _reason(exc: OSError) -> str:
    return "permission denied" if isinstance(exc, PermissionError) else exc.strerror or str(exc)


def scan_images(folder: Path) -> tuple[list[Path], int]:
    """Every image below `folder` by suffix, recursively, in a stable order, and how many
    sub-folders could not be read (each is warned about). An unreadable `folder` is an error."""

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        if where == folder:
            raise SourceError(f"{folder}: cannot read the folder: {_reason(exc)}")
        missed.append(where)
        log.warning("skipping folder %s: %s", where, _reason(exc))

    missed: list[Path] = []
    found = [
        Path(root) / name
        for root, _, names in os.walk(folder, onerror=unreadable)
        for name in names
        if Path(name).suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(found), len(missed)


def list_images(folder: Path) -> list[Path]:
    """Every image below `folder` (see `scan_images`; unreadable sub-folders are warned about)."""
    return scan_images(folder)[0]


@dataclass
class FileSource:
    """Images and videos read in order, images within `max_pixels` (see maskwatch.images).

    A file that cannot be read is skipped with a warning (an error when it is the only one),
    and a video that ends before the frame count its header declares is counted in
    `incomplete`, with a warning; `shortfall` sums both up once the source is read. Each video
    says when it ends. A video frame's time is its container's timestamp (`VideoClock`), so a
    variable-frame-rate video keeps its pauses. With `realtime`, videos play at their own
    pace, as a camera would deliver them: frames wait for their time, and frames whose time
    has passed while the previous one was processed are dropped (counted in `dropped`, and
    said). With `max_fps`, a video gives at most that many frames per second of its own time
    (the others are passed over, not counted as dropped).
    """

    paths: list[Path]
    name: str
    max_pixels: int = MAX_IMAGE_PIXELS
    unreadable_folders: int = 0
    live: bool = False
    read: int = 0
    skipped: int = 0
    incomplete: int = 0
    fps: float = 0.0
    realtime: bool = False
    dropped: int = 0
    max_fps: float | None = None

    def __post_init__(self) -> None:
        if self.max_fps is not None:
            MAX_FPS_RANGE.check("max_fps", self.max_fps)

    def frames(self) -> Iterator[Frame]:
        image_index = 0
        for path in self.paths:
            # By its header first: a picture named .mp4 must not reach FFmpeg, which decodes it
            # whole before its size can be asked.
            suffix = path.suffix.lower()
            if suffix not in IMAGE_SUFFIXES and not is_image_file(path):
                known = suffix in VIDEO_SUFFIXES
                yield from self._video_frames(path, why=None if known else "not an image or video")
                continue
            try:
                image = load_image(path, self.max_pixels)
            except SourceError as exc:
                self._skip(str(exc))
                continue
            self.read += 1
            yield Frame(image=image, index=image_index, time=0.0, source=str(path), mode=Mode.PHOTO)
            image_index += 1

    def _video_frames(self, path: Path, why: str | None = None) -> Iterator[Frame]:
        """Frames of one video; `why` replaces the specific reason when it cannot be read."""
        try:
            check_readable(path)
        except SourceError as exc:
            self._skip(str(exc))
            return
        capture = open_video_file(str(path))
        try:
            if not capture.isOpened():
                self._skip(f"{path}: {why or 'not a readable video'}")
                return
            width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if width * height > self.max_pixels > 0:
                self._skip(self._too_large(path, width, height))
                return
            declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            fps = stream_rate(path, capture.get(cv2.CAP_PROP_FPS) or 0.0)
            stamped = True  # whether the container's timestamps may be believed
            if fps and fps not in VIDEO_FPS_RANGE:  # its timestamps follow the same absurd rate
                stamped = False
                log.warning(
                    "%s declares %g frames/s, not %s: its rate is taken as unknown (no "
                    "--realtime pacing; frames timed and recorded at %g frames/s)",
                    path,
                    fps,
                    VIDEO_FPS_RANGE.describe(),
                    DEFAULT_VIDEO_FPS,
                )
                fps = 0.0
            self.fps = fps
            clock = VideoClock(path, 1.0 / (fps or DEFAULT_VIDEO_FPS), stamped)
            pacer = Pacer(drop_after=1.0 / fps) if self.realtime and fps > 0 else None
            gap = 1.0 / self.max_fps if self.max_fps else 0.0
            index = dropped = 0
            taken = -math.inf  # the time of the last frame given
            while True:
                image = _read_frame(capture)
                if image is None:
                    break
                seconds = clock.time(capture.get(cv2.CAP_PROP_POS_MSEC))
                if seconds - taken < gap - 1e-6:
                    index += 1
                    continue
                if pacer is not None and not pacer.due(seconds):
                    if not dropped:
                        log.warning(
                            "%s: processing is slower than the video's %g frames/s; dropping "
                            "frames to keep up (--realtime)",
                            path,
                            fps,
                        )
                    dropped += 1
                    index += 1
                    continue
                if image.shape[0] * image.shape[1] > self.max_pixels > 0:
                    height, width = image.shape[:2]
                    log.warning(
                        "%s; the rest of the video is skipped", self._too_large(path, width, height)
                    )
                    self.incomplete += 1
                    return
                self.read += 1
                taken = seconds
                yield Frame(image=image, index=index, time=seconds, source=str(path))
                index += 1
            self.dropped += dropped
            if index == 0:
                self._skip(f"{path}: {why or 'no frame could be decoded'}")
                return
            log.info(
                "%s ended after %d frames%s",
                path,
                index,
                f" ({dropped} dropped to play in real time)" if dropped else "",
            )
            if path.suffix.lower() in EXACT_COUNT_SUFFIXES and index < declared:
                self.incomplete += 1
                log.warning(
                    "%s: read %d of the %d frames its header declares; the rest could not be "
                    "decoded (the file is truncated or damaged)",
                    path,
                    index,
                    declared,
                )
        finally:
            capture.release()

    def _too_large(self, path: Path, width: int, height: int) -> str:
        return (
            f"{path}: its frames are {width}x{height} pixels, more than the limit of "
            f"{as_megapixels(self.max_pixels)} (--max-pixels)"
        )

    def _skip(self, message: str) -> None:
        self.skipped += 1
        if len(self.paths) == 1:
            raise SourceError(message)
        log.warning("skipping %s", message)

    def shortfall(self) -> str | None:
        """One line on what could not be read (files, folders, ends of videos), or None."""
        return shortfall(len(self.paths), self.skipped, self.unreadable_folders, self.incomplete)

    def close(self) -> None:
        pass


class VideoClock:
    """Each frame's time in its video, in seconds from the first frame: the container's
    timestamp of the frame (milliseconds), so that a variable-frame-rate video (a phone's,
    paused for a while) keeps its pauses. A timestamp that is missing, not finite, not later
    than the frame before or more than VIDEO_MAX_PAUSE after it (a damaged or hostile file:
    `--realtime` would wait for it) is not believed: that frame comes `step` seconds after the
    one before, and the next good timestamp is believed again. `stamped` False times every
    frame so."""

    def __init__(self, path: Path, step: float, stamped: bool = True) -> None:
        self._path = path
        self._step = step
        self._stamped = stamped
        self._first: float | None = None  # the first frame's timestamp
        self._last: float | None = None  # the last frame's time
        self._said = False

    def time(self, stamp_ms: float) -> float:
        """The time of the frame whose container timestamp is `stamp_ms`."""
        stamp = stamp_ms / 1000.0
        if self._stamped and math.isfinite(stamp):
            if self._first is None:
                self._first = stamp
            seconds = stamp - self._first
            if self._last is None or self._last < seconds <= self._last + VIDEO_MAX_PAUSE:
                self._last = seconds
                return seconds
        if self._stamped and not self._said:
            self._said = True
            log.debug("%s: a frame without a usable timestamp; timed by its frame rate", self._path)
        self._last = 0.0 if self._last is None else self._last + self._step
        return self._last


class Pacer:
    """Plays one video at its own frame rate on `clock`, from its first frame: `due(seconds)`
    waits (with `wait`) until that moment of the video has come. A frame late by `drop_after`
    seconds or more is dropped (`due` says False at once); with `drop_after` None every frame
    is kept, and a late one moves the video on from where it is, with no burst to catch up."""

    def __init__(
        self,
        drop_after: float | None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        self._drop_after = drop_after
        self._clock = clock
        self._wait = wait
        self._origin: float | None = None  # the clock's reading at the video's time 0

    def due(self, seconds: float) -> bool:
        """Wait until the video's moment `seconds` has come; False, at once, for a frame to
        drop."""
        now = self._clock()
        if self._origin is None:
            self._origin = now - seconds  # the first frame
        late = now - (self._origin + seconds)
        if late < 0:
            self._wait(-late)
        elif self._drop_after is None:
            self._origin = now - seconds  # late and kept: on from here
        elif late >= self._drop_after:
            return False
        return True


def shortfall(files: int, skipped: int, folders: int = 0, videos: int = 0) -> str | None:
    """'2 of 7 files could not be read; 1 folder could not be read', or None when all was."""

    def some(n: int, noun: str) -> str:
        return f"{n} {noun}{'' if n == 1 else 's'}"

    parts = []
    if skipped:
        parts.append(f"{skipped} of {some(files, 'file')} could not be read")
    if folders:
        parts.append(f"{some(folders, 'folder')} could not be read")
    if videos:
        parts.append(f"{some(videos, 'video')} could be read only in part")
    return "; ".join(parts) or None


RATE_PROBE_FRAMES = 16  # frames whose timestamps say a video's own frame rate
RATE_TOLERANCE = 0.1  # a declared rate this close to the timestamps' is kept (29.97, not 30.3)


def stream_rate(path: Path, declared: float) -> float:
    """The frame rate a video's frames keep: one over the median gap between the timestamps of
    its first RATE_PROBE_FRAMES frames, or `declared` where that is close or there are no
    timestamps to go by. An MP4 declares its average rate, which a pause brings down: a phone
    video of 6 frames at 15 frames/s with a 30 s pause in the middle declares 0.2 frames/s."""
    capture = open_video_file(str(path))
    stamps: list[float] = []
    try:
        with quiet_opencv():
            while len(stamps) < RATE_PROBE_FRAMES and capture.grab():
                stamps.append(capture.get(cv2.CAP_PROP_POS_MSEC))
    except cv2.error:
        pass
    finally:
        capture.release()
    gaps = np.diff(np.asarray(stamps, np.float64))
    gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
    if len(gaps) < 2:
        return declared
    measured = 1000.0 / float(np.median(gaps))
    if measured not in VIDEO_FPS_RANGE or (
        declared > 0 and abs(measured - declared) <= RATE_TOLERANCE * declared
    ):
        return declared  # a burst of frames or of gaps says nothing of the rate
    log.debug("%s: declares %g frames/s, its frames keep %g", path, declared, measured)
    return measured


def _read_frame(capture: cv2.VideoCapture) -> np.ndarray | None:
    """The next frame, or None at the end or where a frame cannot be decoded."""
    try:
        with quiet_opencv():
            ok, image = capture.read()
    except cv2.error:
        return None
    return image if ok and image is not None else None


CaptureFactory = Callable[[], cv2.VideoCapture]


class LiveSource:
    """A camera or stream read on a background thread that keeps only the newest frame.

    When a read fails the capture is reopened after 0.5, 1, 2, 4 ... seconds (each outage is
    logged); after `reconnect_attempts` reopenings without a frame between them the source gives
    up with a SourceError (a stream that opens but never gives a frame uses them up too). A
    camera gets no reconnection: a webcam that stops delivering is reported at once. Reads are
    made with OpenCV's log silenced: an outage is said once, by us.
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
        RECONNECT_RANGE.check("reconnect_attempts", reconnect_attempts)
        if max_fps is not None:
            MAX_FPS_RANGE.check("max_fps", max_fps)
        self.name = name
        self._shown = redact(name)  # what outputs say: a camera URL's password is not theirs
        self.read = 0
        self.dropped = 0
        self.reconnects = 0
        self.reconnecting = False  # between a drop and the stream's return (or giving up)
        self._open = open_capture
        self._attempts = reconnect_attempts
        self._spent = 0  # reopenings since the last frame
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
                with quiet_opencv():
                    ok, image = self._capture.read()
                if ok and image is not None:
                    self._spent = 0
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
        delay = min(self._backoff * 2 ** min(self._spent, 16), 30.0)
        self.reconnecting = True
        while self._spent < self._attempts:
            self._spent += 1
            log.warning(
                "%s dropped; reconnecting in %.1f s (attempt %d of %d)",
                self.name,
                delay,
                self._spent,
                self._attempts,
            )
            if self._stop.wait(delay):
                return False
            capture = self._open()
            if capture.isOpened():
                self._capture = capture
                self.reconnects += 1
                self.reconnecting = False
                log.warning("%s reconnected", self.name)
                return True
            capture.release()
            delay = min(delay * 2, 30.0)
        self._fail(f"{self.name} dropped and did not come back after {self._attempts} attempts")
        return False

    def _fail(self, message: str) -> None:
        self.reconnecting = False
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
            yield Frame(image=image, index=index, time=now - self._start, source=self._shown)
            index += 1

    def shortfall(self) -> str | None:
        """None: a live source's failures end the run with an error instead."""
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _expand_glob(pattern: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    return [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]


def _kind(path: Path) -> str | None:
    """'folder', 'file' or None (nothing there); a path we may not look at is an error."""
    try:
        info = path.stat()
    except PermissionError as exc:
        raise SourceError(f"{path}: permission denied") from exc
    except OSError:
        return None
    return "folder" if stat.S_ISDIR(info.st_mode) else "file"


def open_source(
    spec: str,
    reconnect_attempts: int = RECONNECT_ATTEMPTS,
    max_fps: float | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    realtime: bool = False,
) -> Source:
    """Resolve a --source string: a camera index, a stream URL, a file, a folder or a glob.
    Images larger than `max_pixels` are refused before they are decoded; videos are played at
    their own pace when `realtime` (see FileSource), which files without a video refuse."""
    spec = spec.strip()
    if not spec:
        raise SourceError("an empty source names no file, folder, camera or stream")
    live = spec.isdigit() or spec.lower().startswith(STREAM_SCHEMES)
    if live and realtime:
        log.warning("--realtime is for files: %s comes at its own pace already", redact(spec))
    if spec.isdigit():
        index = int(spec)
        if index > MAX_CAMERA_INDEX:  # OpenCV takes a C int
            raise SourceError(f"cannot open camera {spec}: no such camera")
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
    path = expand_home(spec)
    kind = _kind(path)
    unreadable = 0
    if kind == "folder":
        paths, unreadable = scan_images(path)
        if not paths:
            raise SourceError(f"{path}: folder contains no images")
    elif kind == "file":
        paths = [path]
    elif _GLOB_CHARS & set(spec):
        paths = _expand_glob(spec)
        if not paths:
            raise SourceError(f"{spec}: no image or video matches this pattern")
    else:
        raise SourceError(f"{spec}: {missing(path, 'no such file, folder, camera or stream')}")
    if realtime and all(p.suffix.lower() in IMAGE_SUFFIXES or is_image_file(p) for p in paths):
        raise SettingError(f"--realtime plays videos at their own pace, and {spec} has no video")
    return FileSource(
        paths,
        str(path) if kind else spec,
        max_pixels=max_pixels,
        unreadable_folders=unreadable,
        realtime=realtime,
        max_fps=max_fps,
    )


class RealTime:
    """The frames of videos at their own frame rate, never faster: each frame is held back until
    its time comes. Every frame is given; when the reader falls behind, the video goes on from
    where it is at its own rate (no burst to catch up). Photos pass at once; each video starts
    its own clock. `wait(seconds)` sleeps (a stop event's wait, to stop sooner)."""

    def __init__(
        self,
        frames: Iterable[Frame],
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        self._frames = frames
        self._pacer = functools.partial(Pacer, None, clock, wait)  # keeps every frame

    def __iter__(self) -> Iterator[Frame]:
        pacer = self._pacer()
        previous: Frame | None = None
        for frame in self._frames:
            if frame.mode is Mode.PHOTO:
                yield frame
                continue
            if previous is not None and (
                frame.source != previous.source or frame.time < previous.time
            ):
                pacer = self._pacer()  # a new video
            previous = frame
            pacer.due(frame.time)
            yield frame
