"""Decode untrusted image bytes within a budget.

A small file can hold a huge picture (a 2.6 MB PNG of 30000x30000 pixels decodes to 2.7 GB), so
the picture's size is read from its header with Pillow, which reads headers without decoding,
before OpenCV decodes anything. Files are measured before they are read, so a junk file of
gigabytes is refused instead of being loaded whole. Every front end (files, folders, uploads,
WebSocket frames) decodes through here.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from maskwatch.cvlog import quiet_opencv
from maskwatch.defaults import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from maskwatch.errors import ImageTooLargeError, SourceError

# Header formats Pillow may identify; anything else is not decoded at all (OpenCV would decode
# formats whose size we cannot check first).
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:g} megapixels"


def image_size(data: bytes, name: str = "image") -> tuple[int, int] | None:
    """(width, height) from the header of an image in an allowed format, else None. Reads no
    pixel data. A picture so large that Pillow's own decompression-bomb guard fires (far above
    our default budget) raises ImageTooLargeError."""
    Image.init()  # registers every format plugin once; later calls return at once
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
                return int(image.width), int(image.height)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{name}: the image is too large to decode ({exc}); refused unread"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    """Raise ImageTooLargeError when a `width` x `height` picture is over the budget."""
    if max_pixels > 0 and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: the image is {width}x{height} pixels, more than the limit of "
            f"{_megapixels(max_pixels)} (--max-pixels)"
        )


def decode_image(
    data: bytes, name: str = "image", max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """A BGR image from encoded bytes, checked against `max_pixels` before decoding.

    Raises ImageTooLargeError when the picture is too large and SourceError when the bytes are
    not a readable image."""
    if not data:
        raise SourceError(f"{name}: empty file, not an image")
    size = image_size(data, name)
    if size is None:
        raise SourceError(f"{name}: not a readable image")
    check_pixels(*size, max_pixels, name)
    with quiet_opencv():  # e.g. "[ WARN ] ... 32-bit float TIFF": our error says it instead
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise SourceError(f"{name}: not a readable image")
    return image


def read_file(path: Path, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """A file's bytes, refusing one larger than `max_bytes` before reading it. Errors say why
    (missing, permission denied, too large, not a file) and name the file."""
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise SourceError(f"{path}: not a regular file")
            if max_bytes > 0 and info.st_size > max_bytes:
                raise ImageTooLargeError(
                    f"{path}: the file is {info.st_size / 2**20:.0f} MiB, more than the limit "
                    f"of {max_bytes / 2**20:.0f} MiB for an image"
                )
            data = file.read(max_bytes + 1 if max_bytes > 0 else -1)
    except IsADirectoryError as exc:
        raise SourceError(f"{path}: is a folder, not an image") from exc
    except PermissionError as exc:
        raise SourceError(f"{path}: permission denied") from exc
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: no such file") from exc
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if max_bytes > 0 and len(data) > max_bytes:  # grew while we read it
        raise ImageTooLargeError(f"{path}: the file is larger than the limit for an image")
    return data


def load_image(
    path: Path, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_IMAGE_BYTES
) -> np.ndarray:
    """A BGR image from a file, within both budgets (see `read_file` and `decode_image`)."""
    return decode_image(read_file(path, max_bytes), str(path), max_pixels)
