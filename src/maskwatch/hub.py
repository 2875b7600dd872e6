"""Model and sample registry: names, official URLs, sha256, the verifying cache and the mirror.

Files not shipped in the package are fetched on first use from their official URL (or from
`$MASKWATCH_MIRROR/<file name>` when that variable is set) into `$MASKWATCH_HOME`, written
under a temporary name, checked against their size and sha256 and only then renamed into place.
Each download has one overall deadline (defaults.DOWNLOAD_START_S plus its size at
defaults.DOWNLOAD_MIN_RATE): a server answering a byte at a time is given up.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from maskwatch import defaults
from maskwatch.atomic import atomic_path
from maskwatch.errors import DownloadError, SourceError
from maskwatch.paths import expand_home

ENV_HOME = "MASKWATCH_HOME"
ENV_MIRROR = "MASKWATCH_MIRROR"
COPY_CHUNK = 1 << 20

_SAMPLE_BASE = (
    "https://raw.githubusercontent.com/jolignier/face-mask-dataset-ilc-2021/"
    "1178de48480a2fb7ca5f3c200f335f97fcd0c434/JPEGImages/"
)


@dataclass(frozen=True)
class HubFile:
    """One downloadable file: where it comes from, what it must hash to, and what it is."""

    name: str
    filename: str
    url: str
    sha256: str
    size: int  # bytes: a copy of another size is refused before (or while) it is read
    kind: str  # "detector", "backbone" or "sample"
    licence: str
    description: str


YUNET = HubFile(
    name="yunet",
    filename="face_detection_yunet_2023mar.onnx",
    url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
    "face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    size=232_589,
    kind="detector",
    licence="MIT (OpenCV Zoo)",
    description="YuNet 2023mar face detector (run by ONNX Runtime: yunet.py)",
)
# sha256 of each known original's free-size copy as yunet.py converts it: a cached copy is used
# only when it hashes to this, and only a conversion that does is cached
ANY_SIZE_SHA256 = {
    YUNET.sha256: "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0",
}

MOBILENET_V2 = HubFile(
    name="mobilenet_v2",
    filename="mobilenet_v2-b0353104.pth",
    url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    size=14_212_972,
    kind="backbone",
    licence="BSD-3-Clause (torchvision)",
    description="torchvision ImageNet MobileNetV2 (IMAGENET1K_V1), backbone for training",
)


def _sample(filename: str, sha256: str, size: int, description: str) -> HubFile:
    return HubFile(
        name=f"sample-{filename[:8]}",
        filename=filename,
        url=_SAMPLE_BASE + filename,
        sha256=sha256,
        size=size,
        kind="sample",
        licence="none stated (ILC 2021 face-mask dataset); used as demo input only",
        description=description,
    )


SAMPLES: tuple[HubFile, ...] = (
    _sample(
        "896a9f045de3f8f60941690b94f8a770.jpg",
        "fdf7a7dbd7c9a56fe6ffad2da76c4427ec179bdfc7820608cc56b3ebb8ef4977",
        25_647,
        "patterned cloth mask, mask below nose, no mask (3 faces)",
    ),
    _sample(
        "d28f40f3a60134ccdd5a502a851cf65e.jpg",
        "10b767d1044c916dc07afe8340f1fed9143233b8142c75e579fce00a657ff8c6",
        65_320,
        "street, mask on chin and masks worn (several small faces)",
    ),
    _sample(
        "b5a9a910c327b5843b72eea1ff5a92e2.jpg",
        "6d96cd71108d01257e3078de9e2b39b8ef919571a2b8d9cae9fb5e53aeeaf698",
        77_623,
        "hospital entrance, people at distance",
    ),
    _sample(
        "e07e9c7e729e28f0531e13b0b5a44658.jpg",
        "13600d89b64369a2581c32ffc770b9665f2222cf4173a9a49ce30358732cd370",
        196_806,
        "press conference, several masked faces, one below the nose",
    ),
    _sample(
        "d898baff7259945cdc95d3b400c3af7b.jpg",
        "59994196160cec429d42efdf5bc69d78bb22112602decc6251e1b9f719bf2371",
        60_910,
        "masks below the nose, one face without a mask",
    ),
    _sample(
        "05fe38c36a13204e986c5558169cf0d4.jpg",
        "e41a1adaf14cde61563cfb18e3ecf6863961db202255c298ffabe4a92d2b8ba2",
        37_834,
        "street group, masks worn and not worn",
    ),
)

REGISTRY: dict[str, HubFile] = {f.name: f for f in (YUNET, MOBILENET_V2, *SAMPLES)}


def cache_dir() -> Path:
    """`$MASKWATCH_HOME`, else `$XDG_CACHE_HOME/maskwatch`, else `~/.cache/maskwatch`."""
    if os.environ.get(ENV_HOME):
        return expand_home(os.environ[ENV_HOME], ENV_HOME)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = expand_home(xdg, "XDG_CACHE_HOME") if xdg else expand_home("~/.cache")
    return base / "maskwatch"


def source_url(entry: HubFile) -> str:
    """The URL a file is fetched from: the mirror's when `$MASKWATCH_MIRROR` is set."""
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if mirror:
        return mirror.rstrip("/") + "/" + entry.filename
    return entry.url


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(COPY_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_verified(path: Path, entry: HubFile) -> bool:
    return path.is_file() and path.stat().st_size == entry.size and sha256_of(path) == entry.sha256


def _open_local(url: str, entry: HubFile) -> BinaryIO:
    """A file:// mirror's copy, opened without waiting (a FIFO there would block a plain
    open for ever) and refused unread unless it is a regular file of the expected size."""
    import urllib.parse
    import urllib.request

    from maskwatch.images import open_regular

    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    try:
        file, size = open_regular(path, max_bytes=0, what="a file")
    except SourceError as exc:
        raise DownloadError(f"cannot download {entry.filename} from {url}: {exc}") from None
    if size != entry.size:
        file.close()
        raise DownloadError(
            f"{entry.filename} from {url} is {size} bytes, expected {entry.size}; "
            "refusing to use it"
        )
    return file


def _copy_at_most(source: BinaryIO, out: BinaryIO, limit: int) -> tuple[int, str]:
    """Copy `source` to `out` until it ends or passes `limit` bytes; the bytes copied and
    their sha256 (taken as they pass, not read back)."""
    copied, digest = 0, hashlib.sha256()
    while chunk := source.read(min(COPY_CHUNK, limit + 1 - copied)):
        out.write(chunk)
        digest.update(chunk)
        copied += len(chunk)
    return copied, digest.hexdigest()


def download_seconds(entry: HubFile) -> float:
    """The whole time a download of `entry` is given, from connecting to its last byte."""
    return defaults.DOWNLOAD_START_S + entry.size / defaults.DOWNLOAD_MIN_RATE


def download(entry: HubFile, dest: Path) -> Path:
    """Fetch `entry` to `dest` through a temporary file; raise DownloadError unless it verifies.
    No more than one byte past the expected size is read."""
    import http.client  # here: urllib.request costs 25 ms at every start, downloads are rare
    import urllib.error

    from maskwatch.deadline import Deadline, failure_reason, opener

    url = source_url(entry)
    failed = f"cannot download {entry.filename} from {url}"
    deadline = Deadline(download_seconds(entry))
    try:
        with deadline, atomic_path(dest) as tmp:
            if url.lower().startswith("file:"):
                source = _open_local(url, entry)
            else:
                source = opener(deadline, follow_redirects=True).open(url, timeout=deadline.seconds)
            with source, open(tmp, "wb") as out:
                copied, got = _copy_at_most(source, out, entry.size)
            if copied < entry.size and deadline.passed:  # the watchdog ended an unsized answer
                raise TimeoutError("timed out")
            if copied > entry.size:
                raise DownloadError(
                    f"{entry.filename} from {url} is larger than the expected {entry.size} "
                    "bytes; refusing to use it"
                )
            if got != entry.sha256:
                raise DownloadError(
                    f"{entry.filename} from {url} has sha256 {got[:12]}..., expected "
                    f"{entry.sha256[:12]}...; refusing to use it"
                )
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        if deadline.passed:
            raise DownloadError(
                f"{failed}: no complete answer within {deadline.seconds:.0f} s"
            ) from exc
        raise DownloadError(f"{failed}: {failure_reason(exc)}") from exc
    return dest


def fetch(name: str) -> Path:
    """Path of a verified copy of registry file `name`, downloading it if needed."""
    entry = REGISTRY[name]
    path = cache_dir() / entry.filename
    if is_verified(path, entry):
        return path
    return download(entry, path)
