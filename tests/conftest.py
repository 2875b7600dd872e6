"""Shared fixtures and helpers: the real YuNet, the bundled classifier, real photos from
../shared, the CLI as a subprocess, a real Mosquitto broker, and waiting for servers.

Every test session gets its own empty MASKWATCH_HOME, so models are fetched
through the real verifying cache from MASKWATCH_MIRROR (default: ../shared/mirror).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKWATCH_SHARED", REPO.parent / "shared")).resolve()
MIRROR = SHARED / "mirror"
DATASETS = SHARED / "datasets"
# Three faces: a patterned cloth mask, a mask below the nose, no mask.
THREE_FACES = MIRROR / "896a9f045de3f8f60941690b94f8a770.jpg"
BROWSER_TESTS = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def pytest_configure(config: pytest.Config) -> None:
    if not MIRROR.is_dir() or not DATASETS.is_dir():
        raise pytest.UsageError(
            f"the tests need ../shared (looked in {SHARED}); set MASKWATCH_SHARED to its path"
        )


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("MASKWATCH_MIRROR", MIRROR.as_uri())
    os.environ["MASKWATCH_HOME"] = str(tmp_path_factory.mktemp("maskwatch-home"))


@pytest.fixture(scope="session")
def detector():  # type: ignore[no-untyped-def]
    from maskwatch.faces import YuNetDetector

    return YuNetDetector()


@pytest.fixture(scope="session")
def classifier():  # type: ignore[no-untyped-def]
    from maskwatch.classifier import MaskClassifier

    return MaskClassifier()


@pytest.fixture(scope="session")
def pipeline(detector, classifier):  # type: ignore[no-untyped-def]
    from maskwatch.pipeline import Pipeline

    return Pipeline(detector, classifier)


@pytest.fixture(scope="session")
def three_faces() -> np.ndarray:
    image = cv2.imread(str(THREE_FACES))
    assert image is not None
    return image


def panning_frames(
    photo: np.ndarray, frames: int, size: tuple[int, int] = (640, 480), period: int | None = None
) -> list[np.ndarray]:
    """`photo` fitted into `size`, panning left to right over `period` frames (default: all of
    them), on a grey background."""
    width, height = size
    scale = min(width / photo.shape[1], height / photo.shape[0]) * 0.9
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    period = period or frames
    out = []
    for i in range(frames):
        canvas = np.full((height, width, 3), 90, np.uint8)
        dx = int((width - small.shape[1]) * (i % period) / max(period - 1, 1))
        dy = (height - small.shape[0]) // 2
        canvas[dy : dy + small.shape[0], dx : dx + small.shape[1]] = small
        out.append(canvas)
    return out


def render_video(
    path: Path,
    photo: np.ndarray,
    frames: int = 30,
    size: tuple[int, int] = (640, 480),
    fps: float = 15.0,
    fourcc: str = "mp4v",
) -> Path:
    """A short video of `photo` fitted into `size` and panning slowly, written with OpenCV."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for canvas in panning_frames(photo, frames, size):
        writer.write(canvas)
    writer.release()
    return path


def render_vfr_video(
    path: Path, photo: np.ndarray, times: list[float], size: tuple[int, int] = (320, 240)
) -> Path:
    """A variable-frame-rate H.264 video (Matroska for .mkv) of `photo` panning, its frames
    stamped at `times` (seconds), as a phone records a pause: written with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=15)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for seconds, canvas in zip(times, panning_frames(photo, len(times), size), strict=True):
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts, frame.time_base = round(seconds * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def video_declaring(path: Path, photo: np.ndarray, scale: int, rate: int, frames: int = 4) -> Path:
    """A Motion JPEG .avi of `photo` whose header declares `rate`/`scale` frames/s (its stream
    header rewritten: OpenCV's writer refuses such rates)."""
    render_video(path, photo, frames, size=(320, 240), fourcc="MJPG")
    data = bytearray(path.read_bytes())
    header = data.find(b"strh") + 8  # AVISTREAMHEADER: dwScale, dwRate at 20 and 24
    struct.pack_into("<II", data, header + 20, scale, rate)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="session")
def video(tmp_path_factory: pytest.TempPathFactory, three_faces: np.ndarray) -> Path:
    return render_video(tmp_path_factory.mktemp("video") / "three_faces.mp4", three_faces)


def voc_subset(dest: Path, count: int, start: int = 0) -> Path:
    """A small Pascal VOC folder linking `count` ILC photos and their annotations."""
    ilc = DATASETS / "ilc"
    (dest / "images").mkdir(parents=True)
    (dest / "annotations").mkdir()
    for xml in sorted((ilc / "annotations").glob("*.xml"))[start : start + count]:
        (dest / "annotations" / xml.name).symlink_to(xml)
        image = ilc / "images" / (xml.stem + ".jpg")
        (dest / "images" / image.name).symlink_to(image)
    return dest


def class_subset(
    dest: Path,
    per_class: int,
    names: tuple[str, ...] = ("with_mask", "without_mask"),
    start: int = 0,
) -> Path:
    """A small class-folder dataset linking observations photos (with their groups.csv rows)."""
    obs = DATASETS / "observations"
    rows = (obs / "groups.csv").read_text().splitlines()
    keep = [rows[0]]
    for name in names:
        (dest / name).mkdir(parents=True)
        for image in sorted((obs / name).iterdir())[start : start + per_class]:
            (dest / name / image.name).symlink_to(image)
            keep += [r for r in rows if r.startswith(f"{name}/{image.name},")]
    (dest / "groups.csv").write_text("\n".join(keep) + "\n")
    return dest


def run_cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`maskwatch ARGS` as a user runs it, in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A failed run that said why in one `error:` line (containing every needle), without a
    traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0]


def self_signed(folder: Path, name: str = "", *key_options: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl as the README says
    (`key_options`: e.g. a passphrase instead of the default `-nodes`); skips without openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    cert, key = folder / f"{name}cert.pem", folder / f"{name}key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", *(key_options or ("-nodes",)),
         "-days", "1", "-keyout", str(key), "-out", str(cert),
         "-subj", "/CN=maskwatch", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Any]:
    """A real Mosquitto on a free loopback port; `restart()` brings it back after `stop()`."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("needs mosquitto")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")

    class Broker:
        url = f"mqtt://127.0.0.1:{port}"
        process: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.process = subprocess.Popen(
                [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_for(lambda: listening(port), what="mosquitto")

        def stop(self) -> None:
            if self.process is not None:
                self.process.terminate()
                self.process.wait(timeout=10)
                self.process = None

    b = Broker()
    b.start()
    yield b
    b.stop()


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """The first true value `check` returns, polled every 0.1 s; AssertionError naming `what`
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def run_browser(script: str, *args: str, timeout: float = 180) -> dict[str, Any]:
    """Run a browser test script of tests/browser (Chromium through playwright-core) and return
    the JSON line it prints last; fails the test with its output if the script failed."""
    proc = subprocess.run(
        ["node", str(BROWSER_TESTS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BROWSER_TESTS,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def without_package(name: str, folder: Path) -> dict[str, str]:
    """An environment in which `import NAME` fails, as where it is not installed: a package of
    that name that raises ImportError comes first on the path. For the CLI run by `run_cli`."""
    blocker = folder / f"no-{name}" / name
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text(f'raise ImportError("{name} is blocked by this test")\n')
    path = os.pathsep.join(p for p in (str(blocker.parent), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def without_pyav(folder: Path) -> dict[str, str]:
    """An environment in which `import av` fails, as where PyAV is not installed."""
    return without_package("av", folder)


def video_codec(path: Path) -> tuple[str, int]:
    """The codec of `path`'s video stream and the frames it decodes to, read by PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, sum(1 for _ in container.decode(stream))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real file system that fills up (ENOSPC), unmounted whatever happens."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> str:
    """Fill `disk` until about `leave` bytes are free; returns the filler's name."""
    fs = os.statvfs(disk)
    size = max(0, fs.f_bfree * fs.f_frsize - leave)
    with open(disk / "filler", "wb") as out:
        try:
            out.write(b"\0" * size)
            out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return "filler"
