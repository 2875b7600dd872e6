"""Video encoders behind `VideoSink`: H.264 through PyAV (FFmpeg's libx264, which browsers
play) for .mp4 and .mkv where PyAV is installed, else OpenCV's writer: MPEG-4 Part 2 (mp4v) in
.mp4, Motion JPEG in .mkv and .avi. The container is the suffix's; no other suffix is written.
Each encoder says its codec, for the "wrote ..." line."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from maskwatch.cvlog import quiet_opencv

OPENCV_CODECS = {
    ".mp4": ("mp4v", "MPEG-4 Part 2"),
    ".mkv": ("MJPG", "Motion JPEG"),
    ".avi": ("MJPG", "Motion JPEG"),
}
VIDEO_OUT_SUFFIXES = tuple(OPENCV_CODECS)  # the containers a video is written in
VIDEO_OUT_NAMES = f"{', '.join(VIDEO_OUT_SUFFIXES[:-1])} or {VIDEO_OUT_SUFFIXES[-1]}"
# FFmpeg's muxer for H.264 by suffix, and its options: an MP4's index first, so that a page can
# start playing it before it has all of it.
H264_CONTAINERS: dict[str, tuple[str, dict[str, str]]] = {
    ".mp4": ("mp4", {"movflags": "+faststart"}),
    ".mkv": ("matroska", {}),
}
H264 = "H.264"
# libx264's speed/size trade-off: about twice as fast as its default ("medium") at about the
# same size (benchmarks/bench_video_writers.py), so a live camera's frame rate holds.
H264_PRESET = "veryfast"
NOT_IN_BROWSERS = ", which browsers do not play: install PyAV (pip install av) for H.264"


class EncodeError(Exception):
    """The encoder failed; the message is FFmpeg's (the sink adds the system's reason)."""


class Encoder(Protocol):
    codec: str

    def write(self, image: np.ndarray) -> None: ...

    def close(self) -> None: ...


def pyav_with_x264() -> Any | None:
    """PyAV, when it is installed and its FFmpeg has libx264; else None."""
    try:
        import av
    except ImportError:
        return None
    return av if "libx264" in av.codecs_available else None


def even(size: tuple[int, int]) -> tuple[int, int]:
    """`size` rounded up to even sides, as H.264's 4:2:0 colour needs."""
    width, height = size
    return width + width % 2, height + height % 2


class H264Encoder:
    """H.264 (yuv420p, what every browser plays) in the container of `suffix` (H264_CONTAINERS).
    Odd sides are padded by a pixel."""

    codec = H264

    def __init__(self, av: Any, path: Path, suffix: str, fps: float, size: tuple[int, int]) -> None:
        self._av = av
        self._size = even(size)
        muxer, options = H264_CONTAINERS[suffix]
        try:
            self._container = av.open(str(path), mode="w", format=muxer, container_options=options)
        except av.error.FFmpegError as exc:
            raise EncodeError(exc.strerror or str(exc)) from exc
        try:
            self._stream = self._container.add_stream(
                "libx264", rate=Fraction(fps).limit_denominator(1001)
            )
            self._stream.width, self._stream.height = self._size
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"preset": H264_PRESET}
        except av.error.FFmpegError as exc:
            self._container.close()
            raise EncodeError(exc.strerror or str(exc)) from exc

    def write(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if (width, height) != self._size:
            image = cv2.copyMakeBorder(
                image, 0, self._size[1] - height, 0, self._size[0] - width, cv2.BORDER_REPLICATE
            )
        try:
            frame = self._av.VideoFrame.from_ndarray(image, format="bgr24")
            self._container.mux(self._stream.encode(frame))
        except self._av.error.FFmpegError as exc:
            raise EncodeError(exc.strerror or str(exc)) from exc

    def close(self) -> None:
        try:
            try:
                self._container.mux(self._stream.encode(None))
            finally:
                self._container.close()
        except self._av.error.FFmpegError as exc:
            raise EncodeError(exc.strerror or str(exc)) from exc


class OpenCVEncoder:
    """OpenCV's writer (FFmpeg inside OpenCV), which reports no errors: the sink checks the
    file it wrote."""

    def __init__(self, path: Path, suffix: str, fps: float, size: tuple[int, int]) -> None:
        fourcc, name = OPENCV_CODECS[suffix]
        self.codec = f"{name} ({fourcc})" + (NOT_IN_BROWSERS if suffix == ".mp4" else "")
        with quiet_opencv():
            self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
        if not self._writer.isOpened():
            raise EncodeError(f"OpenCV cannot encode {fourcc} into {suffix} here")

    def write(self, image: np.ndarray) -> None:
        with quiet_opencv():
            self._writer.write(image)

    def close(self) -> None:
        with quiet_opencv():
            self._writer.release()


def open_encoder(path: Path, suffix: str, fps: float, size: tuple[int, int]) -> Encoder:
    """H.264 for an .mp4 or .mkv where PyAV can write it, else OpenCV's codec for `suffix`."""
    av = pyav_with_x264() if suffix in H264_CONTAINERS else None
    if av is not None:
        return H264Encoder(av, path, suffix, fps, size)
    return OpenCVEncoder(path, suffix, fps, size)
