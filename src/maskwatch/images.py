"""Decode untrusted images within a budget.

A small file can hold a huge picture (a 2.6 MB PNG of 30000x30000 pixels decodes to 2.7 GB), so
the picture's size is read from its header with Pillow, which reads headers without decoding,
before OpenCV decodes anything. A file is measured before it is read and its header is read from
the open file, so a junk file of gigabytes is refused unread and a file that is not an image of a
known format is never read whole. Every front end (files, folders, uploads, WebSocket frames)
decodes through here.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from maskwatch.cvlog import quiet_opencv
from maskwatch.defaults import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from maskwatch.errors import ImageTooLargeError, SourceError
from maskwatch.paths import missing

# Header formats Pillow may identify; anything else is not decoded at all (OpenCV would decode
# formats whose size we cannot check first).
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP")
# Pillow modes of samples wider than 16 bits, which OpenCV's TIFF reader cannot convert.
_WIDE_SAMPLES = {"F": "32-bit float", "I": "32-bit integer"}


def as_megapixels(pixels: int) -> str:
    """'50 megapixels': a pixel budget as people read it."""
    return f"{pixels / 1e6:g} megapixels"


@dataclass(frozen=True)
class Header:
    """What an image's header says, read without decoding any pixel."""

    width: int
    height: int
    format: str
    mode: str


class _PillowBombError(Exception):
    """The header declares more pixels than Pillow will open at all."""


def _read_header(source: BinaryIO) -> Header | None:
    Image.init()  # registers every format plugin once; later calls return at once
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=ALLOWED_FORMATS) as image:
                return Header(int(image.width), int(image.height), image.format or "", image.mode)
    except Image.DecompressionBombError as exc:
        raise _PillowBombError from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _checked_header(
    source: BinaryIO, name: str, max_pixels: int, max_side: int | None = None
) -> Header:
    """The header of an image within the pixel budget (and `max_side` a side, when given),
    else ImageTooLargeError / SourceError. Pillow's own bomb guard, which fires far above our
    default budget, is said as our ImageTooLargeError."""
    try:
        header = _read_header(source)
    except _PillowBombError:
        pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise ImageTooLargeError(
            f"{name}: the image is over {pillow_limit:.0f} megapixels, more than the limit of "
            f"{as_megapixels(max_pixels)} (--max-pixels); refused unread"
        ) from None
    if header is None:
        raise SourceError(f"{name}: not a readable image")
    if max_side is not None and max(header.width, header.height) > max_side:
        raise SourceError(
            f"{name}: {header.width}x{header.height} pixels; at most {max_side} a side"
        )
    check_pixels(header.width, header.height, max_pixels, name)
    return header


def check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    """Raise ImageTooLargeError when a `width` x `height` picture is over the budget."""
    if max_pixels > 0 and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: the image is {width}x{height} pixels, more than the limit of "
            f"{as_megapixels(max_pixels)} (--max-pixels)"
        )


def _decode(data: bytes, header: Header, name: str) -> np.ndarray:
    """OpenCV's decoding of bytes whose header was checked; its console noise (e.g. "[ WARN ]
    ... 32-bit samples") is silenced and its failure said in our words."""
    try:
        with quiet_opencv():
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise SourceError(f"{name}: cannot decode the image ({exc.err})") from exc
    if image is None or image.size == 0:
        wide = _WIDE_SAMPLES.get(header.mode)
        if wide:
            raise SourceError(f"{name}: {wide} {header.format} images are not supported")
        raise SourceError(f"{name}: not a readable image")
    return image


def image_header(
    data: bytes,
    name: str = "image",
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_side: int | None = None,
) -> Header:
    """The header of encoded bytes, checked against `max_pixels` (and `max_side`): what
    `decode_image` checks first, for a caller that must know the size before decoding."""
    if not data:
        raise SourceError(f"{name}: empty file, not an image")
    return _checked_header(io.BytesIO(data), name, max_pixels, max_side)


def decode_image(
    data: bytes,
    name: str = "image",
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_side: int | None = None,
    header: Header | None = None,
) -> np.ndarray:
    """A BGR image from encoded bytes, checked against `max_pixels` (and `max_side`) before
    decoding, from one reading of its header (`header`, when `image_header` already read it).

    Raises ImageTooLargeError when the picture is too large and SourceError when the bytes are
    not a readable image."""
    if header is None:
        header = image_header(data, name, max_pixels, max_side)
    return _decode(data, header, name)


def open_regular(
    path: Path, max_bytes: int, what: str = "an image"
) -> tuple[io.BufferedReader, int]:
    """An open regular file within `max_bytes`, and its size. Opened without blocking, so a FIFO
    named like an image (or `what` it should be) is refused instead of waiting for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except IsADirectoryError as exc:
        raise SourceError(f"{path}: is a folder, not {what}") from exc
    except PermissionError as exc:
        raise SourceError(f"{path}: permission denied") from exc
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: {missing(path, 'no such file')}") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceError(f"{path}: {missing(path)}") from exc
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    info = os.fstat(fd)  # before fdopen, which refuses a folder with a bare IsADirectoryError
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = f"is a folder, not {what}" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise SourceError(f"{path}: {kind}")
    file = os.fdopen(fd, "rb")
    if max_bytes > 0 and info.st_size > max_bytes:
        file.close()
        raise ImageTooLargeError(
            f"{path}: the file is {info.st_size / 2**20:.0f} MiB, more than the limit of "
            f"{max_bytes / 2**20:.0f} MiB for {what}; refused unread"
        )
    return file, info.st_size


def _read_all(file: BinaryIO, path: Path, max_bytes: int, what: str = "an image") -> bytes:
    try:
        file.seek(0)
        data = file.read(max_bytes + 1 if max_bytes > 0 else -1)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if max_bytes > 0 and len(data) > max_bytes:  # grew while we read it
        raise ImageTooLargeError(f"{path}: the file is larger than the limit for {what}")
    return data


def read_file(path: Path, max_bytes: int = MAX_IMAGE_BYTES, what: str = "an image") -> bytes:
    """A file's bytes, refusing one larger than `max_bytes` before reading it, and anything
    but a regular file without waiting on it. Errors (SourceError) say why (missing,
    permission denied, too large for `what` it should be, not a file) and name the file."""
    file, _ = open_regular(path, max_bytes, what)
    with file:
        return _read_all(file, path, max_bytes, what)


def file_sha256(path: Path, max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """The SHA-256 of a file's bytes, read in chunks, refusing (as `read_file` does) a file
    that is not a regular file or is larger than `max_bytes` before reading it."""
    file, _ = open_regular(path, max_bytes)
    with file:
        try:
            return hashlib.file_digest(file, "sha256").hexdigest()
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def load_image(
    path: Path, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_IMAGE_BYTES
) -> np.ndarray:
    """A BGR image from a file, within both budgets. The header is read from the open file
    first, so a file that is not an image, or holds too large a one, is not read whole."""
    file, size = open_regular(path, max_bytes)
    with file:
        if size == 0:
            raise SourceError(f"{path}: empty file, not an image")
        header = _checked_header(file, str(path), max_pixels)
        data = _read_all(file, path, max_bytes)
    return _decode(data, header, str(path))


def check_readable(path: Path) -> None:
    """Raise SourceError unless `path` is a regular file this process may read (a FIFO or a
    device named like a video would block or never end); reads nothing."""
    file, _ = open_regular(path, max_bytes=0)
    file.close()


def is_image_file(path: Path) -> bool:
    """Whether `path` is a readable file with the header of an image in an allowed format (of
    any size); reads only the header."""
    try:
        file, _ = open_regular(path, max_bytes=0)
    except SourceError:
        return False
    with file:
        try:
            return _read_header(file) is not None
        except _PillowBombError:
            return True
