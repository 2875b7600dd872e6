"""Frame outputs: where each frame's result goes (a window, annotated images or video, JSON
lines). Each has `write(result)` and `close(ok)`; the annotating ones own an `Annotator` and so
their blur mode. watch.py drives them.

Every file sink writes through maskwatch.atomic: a file under a temporary name renamed on close,
so an interrupted run leaves either the previous file or a complete new one; a device or pipe
in place.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from maskwatch.atomic import (
    STDOUT,
    InPlaceFile,
    PendingFile,
    cannot_write,
    check_free_space,
    clashing_input,
    interruptible_write,
    write_bytes,
    write_problem,
    writes_in_place,
)
from maskwatch.cvlog import open_video_file, quiet_opencv
from maskwatch.defaults import DEFAULT_VIDEO_FPS
from maskwatch.draw import Annotator, draw_fps
from maskwatch.encoders import (
    OPENCV_CODECS,
    VIDEO_OUT_NAMES,
    VIDEO_OUT_SUFFIXES,
    EncodeError,
    Encoder,
    open_encoder,
)
from maskwatch.errors import OutputError
from maskwatch.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, FileSource, Source
from maskwatch.types import FrameResult
from maskwatch.watch import Stop

Inputs = dict[tuple[int, int], Path]  # input files by (device, inode)

SAME_FORMAT = {".jpeg": ".jpg", ".tif": ".tiff"}  # suffixes of one format, to the usual one
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


class WindowOutput:
    """The window as a frame output: each annotated frame with an FPS counter; raises `Stop`
    when the user quits (q, Esc or closing the window)."""

    def __init__(self, annotator: Annotator) -> None:
        self.annotator = annotator
        self.window = WindowSink()
        self._meter = FpsMeter()

    def write(self, result: FrameResult) -> None:
        image = self.annotator(result).copy()
        draw_fps(image, self._meter.tick())
        if not self.window.show(image):
            raise Stop

    def close(self, ok: bool = True) -> None:
        self.window.close()


class JsonLinesSink:
    """One JSON object per frame or image, to stdout ('-'), in place to a device or pipe, or
    to a file written atomically. A stream gets each line at once; a file being written is
    flushed at most every FILE_FLUSH_S (a full disk still stops the run within that time)."""

    FILE_FLUSH_S = 1.0

    def __init__(self, target: str) -> None:
        self.target = target
        self._pending: PendingFile | None = None
        self._flushed = time.monotonic()
        self._out: IO[str] | InPlaceFile | None = sys.stdout
        if target == "-":
            if sys.stdout is None:  # the run was started with its standard output closed
                raise OutputError("--json -: standard output is closed (was it started with >&-?)")
            return
        path = Path(target)
        try:
            if writes_in_place(path):
                self._out = InPlaceFile(path)
            else:
                self._pending = PendingFile(path)
                self._out = open(self._pending.tmp, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            if self._pending is not None:
                self._pending.discard()
            raise cannot_write(target, exc) from exc

    def write(self, result: FrameResult) -> None:
        self.write_object(result.to_dict())

    def write_object(self, obj: dict[str, Any]) -> None:
        if self._out is None:
            raise OutputError(f"{self.target}: written after close")
        line = json.dumps(obj) + "\n"
        if isinstance(self._out, InPlaceFile):
            self._out.write(line.encode("utf-8"))
            return
        try:
            if self._pending is None:  # stdout: its reader may be slow, or never read
                with interruptible_write():
                    self._out.write(line)
                    self._out.flush()
                return
            self._out.write(line)
            now = time.monotonic()
            if now - self._flushed >= self.FILE_FLUSH_S:
                self._out.flush()
                self._flushed = now
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and self._pending is None:
                raise  # the pipe's reader is gone, as with `| head`: cli.main ends quietly
            raise cannot_write("stdout" if self.target == "-" else self.target, exc) from exc

    def close(self, ok: bool = True) -> None:
        """Complete the file (or, after a failure, remove what was written). A failing close
        raises only when nothing else has failed."""
        out, self._out = self._out, None
        if out is None or out is sys.stdout:
            return
        if isinstance(out, InPlaceFile):
            out.close()
            return
        try:
            out.close()
        except OSError as exc:
            if self._pending is not None:
                self._pending.discard()
            if ok:
                raise cannot_write(self.target, exc) from exc
            return
        if self._pending is None:
            return
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
    sources in the folder OUT. A device or pipe (/dev/null, a FIFO) is opened once and gets
    every image in turn, so a pipe's reader reads them all as one stream.
    A file named like an input in `inputs` (by device and inode) is refused, never replaced:
    a folder OUT may be the folder being read; so is one another output writes (`others`: the
    option naming it, by real path, as atomic.output_paths gives them)."""

    def __init__(
        self,
        out: Path,
        annotator: Annotator | None = None,
        inputs: Mapping[tuple[int, int], Path] | None = None,
        others: Mapping[str, str] | None = None,
    ) -> None:
        self.out = out
        self.annotator = annotator or Annotator()
        self.inputs = inputs or {}
        self.others = others or {}
        in_place = writes_in_place(out)
        self.single = out.suffix.lower() in IMAGE_SUFFIXES or in_place
        self._used: set[str] = set()
        self.written: list[Path] = []
        self._stream = InPlaceFile(out) if in_place else None

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

    def write(self, result: FrameResult) -> None:
        target = self._target(result.frame.source)
        clash = clashing_input(self.inputs, target)
        real = os.path.realpath(target)
        if clash is not None:
            which = (
                "one of the inputs (a folder being read holds it)"
                if os.path.realpath(clash) == real
                else f"the input {clash}"
            )
            raise OutputError(
                f"--save {self.out}: {target} is {which}: writing there would destroy it; "
                "choose another folder"
            )
        other = self.others.get(real)
        if other is not None:
            raise OutputError(
                f"--save {self.out}: {target} is the {other} output: one would replace the "
                "other; choose another folder or name"
            )
        data = encode_image(target, self.annotator(result))
        if self._stream is not None:
            self._stream.write(data)
        else:
            write_bytes(target, data)
        if target not in self.written:
            self.written.append(target)

    def close(self, ok: bool = True) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


class VideoSink:
    """An annotated video into a temporary file that is checked and put in place on close:
    H.264 for .mp4 and .mkv where PyAV is installed, else OpenCV's mp4v and Motion JPEG; Motion
    JPEG for .avi and for a device or pipe without a video suffix (see encoders.py). `codec`
    says which, once the first frame is written.

    OpenCV's writer reports no write errors, so free space is checked every
    `SPACE_CHECK_FRAMES` frames and the finished file is reopened: it must hold every frame
    written, or the video is an error and is removed.

    The video keeps the frames' own timing: where frames were skipped (a camera's frames dropped
    while processing fell behind, `--realtime`, `--max-fps`), the last frame is held for the
    time they would have taken, up to MAX_HOLD_S, so the recording plays at the speed it
    happened; a longer pause is cut to MAX_HOLD_S once (shorter in a video of more than
    HOLD_FPS frames a second, whose holds would cost that many encodes).
    """

    SPACE_CHECK_FRAMES = 25
    MAX_HOLD_S = 10.0
    HOLD_FPS = 60.0  # a pause costs at most MAX_HOLD_S * HOLD_FPS frames, however fast the video

    def __init__(self, out: Path, fps: float, annotator: Annotator | None = None) -> None:
        self.out = out
        self.annotator = annotator or Annotator()
        self.fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_VIDEO_FPS
        suffix = out.suffix.lower()
        self.suffix = suffix if suffix in OPENCV_CODECS else ".avi"
        self._pending = PendingFile(out, suffix=self.suffix, hold=True)  # a pipe nobody reads: now
        self._encoder: Encoder | None = None
        self._size = (0, 0)
        self.codec: str | None = None
        self.frames = 0
        self.written: list[Path] = []
        self._start: float | None = None  # the first frame's time
        self._last: np.ndarray | None = None

    def _fail(self, exc: EncodeError) -> OutputError:
        """The encoder's error as ours, with the system's reason where there is one; the
        temporary file removed."""
        problem = write_problem(self._pending.tmp)
        self.close(ok=False)
        reason = (problem.strerror or str(problem)) if problem is not None else str(exc)
        return OutputError(f"cannot write {self.out}: {reason}")

    def write(self, result: FrameResult) -> None:
        annotated = self.annotator(result)
        try:
            if self._encoder is None:
                self._size = (annotated.shape[1], annotated.shape[0])
                self._encoder = open_encoder(self._pending.tmp, self.suffix, self.fps, self._size)
                self.codec = self._encoder.codec
            if (annotated.shape[1], annotated.shape[0]) != self._size:
                annotated = cv2.resize(annotated, self._size)
            for image in [*self._held(result.frame.time), annotated]:
                self._encoder.write(image)
                self.frames += 1
                if self.frames % self.SPACE_CHECK_FRAMES == 0:  # stop early on a full disk
                    check_free_space(self._pending.tmp.parent, self.out)
        except EncodeError as exc:
            raise self._fail(exc) from exc
        self._last = annotated

    def _held(self, time: float) -> list[np.ndarray]:
        """The last frame again for each frame time skipped before one at `time`."""
        if self._start is None:
            self._start = time
        due = round((time - self._start) * self.fps)  # frames before this one, by its time
        missing = due - self.frames
        held = min(missing, round(self.MAX_HOLD_S * min(self.fps, self.HOLD_FPS)))
        if missing > held:  # the rest of a long pause is cut: later frames follow on from here
            self._start += (missing - held) / self.fps
        return [self._last] * held if self._last is not None and held > 0 else []

    def _failure(self) -> str | None:
        """Why the temporary video is not complete, or None when it holds every frame."""
        tmp = str(self._pending.tmp)
        capture = open_video_file(tmp)
        with quiet_opencv():
            try:
                count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
                last = count == self.frames and capture.set(
                    cv2.CAP_PROP_POS_FRAMES, self.frames - 1
                )
                complete = bool(last) and capture.read()[0]
            finally:
                capture.release()
        if complete:
            return None
        problem = write_problem(self._pending.tmp)
        if problem is not None:
            return problem.strerror or str(problem)
        return f"the encoder wrote {count} of {self.frames} frames"

    def close(self, ok: bool = True) -> None:
        encoder, self._encoder = self._encoder, None
        try:
            if encoder is not None:
                encoder.close()
        except EncodeError as exc:
            if ok:
                raise self._fail(exc) from exc
        if not ok or self.frames == 0:
            self._pending.discard()
            return
        failure = self._failure()
        if failure is not None:
            self._pending.discard()
            raise OutputError(f"cannot write {self.out}: {failure}")
        self._pending.commit()
        self.written.append(self.out)


def save_name_problem(path: Path, folder: bool = False) -> str | None:
    """Why `path` cannot be saved to, or None when it can: a video container never written; a
    name of a file given as a folder (`folder`: it ended in a slash); a link to a file named
    for another format (the format follows the name given, and would belie its target's)."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES and suffix not in VIDEO_OUT_SUFFIXES:
        return f"cannot write a {suffix} video; a video is written as {VIDEO_OUT_NAMES}"
    media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    if folder and suffix in media:
        return (
            f"{path}/ names a folder, but {path.name} is named like a file: give {path} for a "
            f"file, or a folder name without {path.suffix}"
        )
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        theirs = target.suffix.lower()
        same = SAME_FORMAT.get(suffix, suffix) == SAME_FORMAT.get(theirs, theirs)
        if suffix in media and theirs in media and not same:
            return (
                f"{path} is a link to {target}: a {suffix} file would be written into a "
                f"{theirs} one; save to {target} or to a link that ends in {theirs}"
            )
    return None


class SaveOutput:
    """`--save`: an annotated video or images, chosen at the first frame, when the source
    knows its frame rate. One image file for several inputs is refused before the run: each
    image would replace the one before it."""

    def __init__(
        self,
        save: Path,
        source: Source,
        annotator: Annotator,
        inputs: Inputs | None = None,
        others: Mapping[str, str] | None = None,
    ) -> None:
        self.save = STDOUT if str(save) == "-" else save
        self.source = source
        self.annotator = annotator
        self.inputs = inputs or {}
        self.others = others or {}
        self.sink: ImageSink | VideoSink | None = None
        files = len(source.paths) if isinstance(source, FileSource) else 1
        if (
            files > 1
            and self.save.suffix.lower() in IMAGE_SUFFIXES
            and not writes_in_place(self.save)
        ):
            raise OutputError(
                f"--save {save}: one image file cannot hold the source's {files} files (each "
                "would replace the one before); give a folder, e.g. --save OUT/"
            )

    def _open(self) -> ImageSink | VideoSink:
        video_source = self.source.live or self.source.fps > 0
        problem = save_name_problem(self.save)
        if problem is not None:
            raise OutputError(f"--save {self.save}: {problem}")
        suffix = self.save.suffix.lower()
        if suffix in VIDEO_SUFFIXES or (video_source and writes_in_place(self.save)):
            return VideoSink(self.save, self.source.fps, self.annotator)
        if video_source:
            raise OutputError(
                f"--save {self.save}: a video source needs a {VIDEO_OUT_NAMES} output name"
            )
        return ImageSink(self.save, self.annotator, self.inputs, self.others)

    def write(self, result: FrameResult) -> None:
        if self.sink is None:
            self.sink = self._open()
        self.sink.write(result)

    def close(self, ok: bool = True) -> None:
        if self.sink is not None:
            self.sink.close(ok)

    @property
    def written(self) -> list[Path]:
        return self.sink.written if self.sink is not None else []

    @property
    def codec(self) -> str | None:
        """The saved video's codec (None for images)."""
        return self.sink.codec if isinstance(self.sink, VideoSink) else None
