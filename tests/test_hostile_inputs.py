"""Hostile inputs through the real command line: decompression bombs, gigabyte junk files, FIFOs,
files and folders we may not read, a float TIFF, a truncated video, and out-of-range options.
Every case must end in clear lines of ours (never a traceback or OpenCV's console noise), keep
the run going where other inputs remain, and keep memory small."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import THREE_FACES, panning_frames
from maskwatch.errors import SettingError, SourceError
from maskwatch.faces import YuNetDetector

# A child reading a 3 GB file whole, or decoding a 30000x30000 picture, would need gigabytes;
# importing OpenCV and ONNX Runtime and loading both models takes about 220 MB.
RSS_LIMIT_MB = 600


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    max_rss_mb: float

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "error:" in line]

    def assert_clean(self) -> None:
        """Nothing but our own lines: no traceback, no OpenCV or FFmpeg console output."""
        assert "Traceback" not in self.stderr, self.stderr
        assert "[ WARN" not in self.stderr and "cv2.error" not in self.stderr, self.stderr
        for line in self.stderr.splitlines():
            assert line.startswith(("maskwatch", "usage:", " ")), self.stderr

    def assert_one_error(self, *needles: str) -> str:
        """Exactly one error line, the last, containing every needle; a non-zero exit."""
        self.assert_clean()
        assert self.returncode != 0
        errors = self.error_lines()
        assert len(errors) == 1, self.stderr
        assert self.stderr.splitlines()[-1] == errors[0]
        for needle in needles:
            assert needle in errors[0], errors[0]
        return errors[0]


# The command run as `python -m maskwatch.cli` runs it, reporting its peak resident memory (VmHWM,
# which unlike ru_maxrss does not count the test process it was forked from) when it exits.
_MEASURED_CLI = """
import atexit, os, runpy

def _peak():
    with open("/proc/self/status") as status:
        kb = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["MASKWATCH_TEST_PEAK"], "w") as out:
        out.write(kb)

atexit.register(_peak)
runpy.run_module("maskwatch.cli", run_name="__main__", alter_sys=True)
"""


def run_cli(*args: str, prefix: tuple[str, ...] = (), timeout: float = 120) -> Run:
    """The real `maskwatch` command in a child process, and its peak memory."""
    with tempfile.TemporaryDirectory() as folder:
        peak = Path(folder) / "peak"
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", _MEASURED_CLI, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "MASKWATCH_TEST_PEAK": str(peak)},
        )
        peak_kb = float(peak.read_text()) if peak.exists() else float("nan")
    return Run(proc.returncode, proc.stdout, proc.stderr, peak_kb / 1024)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PNGs of 30000x30000 (900 megapixels, 2.7 GB decoded) and 40000x40000 pixels that are
    a few hundred KB on disk, and a 64-megapixel one under Pillow's own guard."""
    folder = tmp_path_factory.mktemp("bombs")
    made = {}
    for name, mode, side in (("30000", "1", 30000), ("40000", "1", 40000), ("8000", "L", 8000)):
        path = folder / f"bomb{name}.png"
        Image.new(mode, (side, side)).save(path)
        assert path.stat().st_size < 3 * 2**20
        made[name] = path
    return made


@pytest.mark.parametrize("command", ["detect", "classify"])
@pytest.mark.parametrize("bomb", ["30000", "40000", "8000"])
def test_a_decompression_bomb_is_refused_before_decoding(
    bombs: dict[str, Path], command: str, bomb: str
) -> None:
    args = ["--source", str(bombs[bomb]), "--no-show", "--json", "-"]
    run = run_cli(command, *(args if command == "detect" else [str(bombs[bomb])]))
    run.assert_one_error(bombs[bomb].name, "megapixels", "--max-pixels")
    assert run.stdout == ""
    assert run.max_rss_mb < RSS_LIMIT_MB


@pytest.mark.parametrize("size", [(40000, 1), (1, 40000), (1, 1)])
def test_strips_and_dots_within_the_budget_are_processed(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    """Extreme shapes: scaled for detection to a 0-pixel side (a cv2.error once), or framed
    whole by classify in a 40000 px square window (4.8 GB once)."""
    strip = tmp_path / "strip.png"
    Image.new("RGB", size, "white").save(strip)
    run = run_cli("detect", "--source", str(strip), "--no-show", "--json", "-")
    run.assert_clean()
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["faces"] == []
    run = run_cli("classify", str(strip))
    run.assert_clean()
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["path"] == str(strip)
    assert run.max_rss_mb < RSS_LIMIT_MB


def test_max_pixels_is_an_option_in_megapixels() -> None:
    run = run_cli("classify", str(THREE_FACES), "--max-pixels", "0.1")
    run.assert_one_error("660x281 pixels, more than the limit of 0.1 megapixels")
    ok = run_cli("classify", str(THREE_FACES), "--max-pixels", "0.2")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["path"] == str(THREE_FACES)


def test_a_folder_goes_on_past_junk_bombs_and_fifos_in_little_memory(
    tmp_path: Path, bombs: dict[str, Path]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(THREE_FACES)
    with open(folder / "huge.jpg", "wb") as junk:
        junk.truncate(3 * 2**30)  # sparse: 3 GB long, nothing on disk
    (folder / "bomb.png").symlink_to(bombs["30000"])
    (folder / "big.png").symlink_to(bombs["8000"])
    os.mkfifo(folder / "pipe.jpg")  # opening it to read would wait for a writer forever
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out.jsonl"
    run = run_cli("detect", "--source", str(folder), "--no-show", "--json", str(out), timeout=60)
    last = run.assert_one_error("5 of 6 files could not be read", "the rest was processed")
    warnings = [line for line in run.stderr.splitlines() if "warning:" in line]
    expected = {
        "huge.jpg": "the file is 3072 MiB, more than the limit of 64 MiB",
        "bomb.png": "more than the limit of 50 megapixels",
        "big.png": "8000x8000 pixels, more than the limit of 50 megapixels",
        "pipe.jpg": "not a regular file",
        "empty.jpg": "empty file",
    }
    for name, reason in expected.items():
        assert any(name in w and reason in w for w in warnings), (name, run.stderr)
    assert last == run.stderr.splitlines()[-1]
    frames = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(f["source"]).name for f in frames] == ["a.jpg"]
    assert len(frames[0]["faces"]) == 3
    assert run.max_rss_mb < RSS_LIMIT_MB, f"peak RSS {run.max_rss_mb:.0f} MB"


def test_classify_skips_what_it_cannot_read_and_says_so_at_the_end(
    tmp_path: Path, bombs: dict[str, Path]
) -> None:
    (tmp_path / "a.jpg").symlink_to(THREE_FACES)
    (tmp_path / "b.png").symlink_to(bombs["40000"])
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    run = run_cli("classify", str(tmp_path))
    run.assert_one_error("2 of 3 files could not be read")
    assert [json.loads(line)["path"] for line in run.stdout.splitlines()] == [
        str(tmp_path / "a.jpg")
    ]
    assert "skipping " + str(tmp_path / "b.png") in run.stderr
    assert "skipping " + str(tmp_path / "c.jpg") + ": not a readable image" in run.stderr


def test_an_image_that_became_a_folder_after_listing_is_skipped_in_one_line(
    tmp_path: Path,
) -> None:
    """A folder's photo replaced by a folder of its name mid-run (listing found a file): one
    SourceError, which detect and classify turn into a warning (it was a bare traceback)."""
    from maskwatch.errors import SourceError
    from maskwatch.images import load_image

    (tmp_path / "g271.jpg").mkdir()
    with pytest.raises(SourceError, match=r"g271.jpg: is a folder, not an image"):
        load_image(tmp_path / "g271.jpg")


def test_a_file_name_cannot_forge_a_line_or_colour_the_terminal(tmp_path: Path) -> None:
    name = "x.jpg\nmaskwatch: wrote evil.jpg\r\x1b[31mRED\x1b[0m.jpg"
    (tmp_path / name).write_bytes(b"junk")
    (tmp_path / "a.jpg").symlink_to(THREE_FACES)
    run = run_cli("classify", str(tmp_path), "--json", os.devnull)
    assert len(run.stderr.splitlines()) == 2, run.stderr  # the warning, then the error
    escaped = "x.jpg\\nmaskwatch: wrote evil.jpg\\r\\x1b[31mRED\\x1b[0m.jpg"
    assert f"skipping {tmp_path}/{escaped}: not a readable image" in run.stderr
    assert "\x1b" not in run.stderr and "\r" not in run.stderr
    bad_option = run_cli("classify", str(tmp_path), "--json", f"{tmp_path}/{name}/")
    assert len(bad_option.stderr.splitlines()) == 1, bad_option.stderr  # argparse's error too
    assert escaped in bad_option.stderr and "\x1b" not in bad_option.stderr


def test_a_source_that_is_a_loop_or_a_dangling_link_says_so(tmp_path: Path) -> None:
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "back.jpg")
    (tmp_path / "back.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    for name, reason in (
        ("loop.jpg", "a loop of symbolic links"),
        ("gone.mp4", f"a link to nothing ({tmp_path / 'nowhere.mp4'})"),
    ):
        path = str(tmp_path / name)
        detect = run_cli("detect", "--source", path, "--no-show", "--json", "-")
        detect.assert_one_error(f"{path}: {reason}")
        run_cli("classify", path).assert_one_error(f"{path}: {reason}")


def test_a_gif_in_a_folder_is_read_like_a_lone_one(tmp_path: Path) -> None:
    """A lone .gif was read, but a folder of them held "no images"."""
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(THREE_FACES).save(folder / "a.gif")
    run = run_cli("classify", str(folder))
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["path"] for line in run.stdout.splitlines()] == [str(folder / "a.gif")]
    run = run_cli("detect", "--source", str(folder), "--no-show", "--save", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    assert cv2.imread(str(tmp_path / "out" / "a.gif")) is not None


def test_a_lone_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    for name in ("pipe.jpg", "pipe.mp4", "pipe"):
        os.mkfifo(tmp_path / name)
        run = run_cli("detect", "--source", str(tmp_path / name), "--no-show", "--json", "-")
        run.assert_one_error(name, "not a regular file")


@pytest.fixture
def no_permission_override() -> tuple[str, ...]:
    """A command prefix under which permission bits apply: root's override capabilities are
    dropped for the child (root ignores the bits otherwise); nothing is needed for others."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot be tested")
    caps = "-dac_override,-dac_read_search"
    prefix = ("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--")
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_text("secret")
        probe.chmod(0)
        denied = subprocess.run([*prefix, "cat", str(probe)], capture_output=True)
    if denied.returncode == 0 or b"denied" not in denied.stderr:
        pytest.skip("cannot drop root's permission override here (no CAP_SETPCAP?)")
    return prefix


def test_files_and_folders_we_may_not_read_say_permission_denied(
    tmp_path: Path, no_permission_override: tuple[str, ...]
) -> None:
    (tmp_path / "a.jpg").symlink_to(THREE_FACES)
    locked_file = tmp_path / "locked.jpg"
    locked_file.write_bytes(THREE_FACES.read_bytes())
    locked_folder = tmp_path / "sub"
    locked_folder.mkdir()
    (locked_folder / "b.jpg").write_bytes(THREE_FACES.read_bytes())
    locked_file.chmod(0)
    locked_folder.chmod(0)
    try:
        prefix = no_permission_override
        args = ("--no-show", "--json", "-")
        run = run_cli("detect", "--source", str(locked_file), *args, prefix=prefix)
        run.assert_one_error(f"{locked_file}: permission denied")
        run = run_cli("classify", str(locked_file), prefix=prefix)
        run.assert_one_error(f"{locked_file}: permission denied")
        run = run_cli("detect", "--source", str(locked_folder), *args, prefix=prefix)
        run.assert_one_error(f"{locked_folder}: cannot read the folder: permission denied")

        run = run_cli("detect", "--source", str(tmp_path), *args, prefix=prefix)
        run.assert_one_error("1 of 2 files could not be read; 1 folder could not be read")
        assert f"warning: skipping folder {locked_folder}: permission denied" in run.stderr
        assert f"warning: skipping {locked_file}: permission denied" in run.stderr
        assert [Path(json.loads(line)["source"]).name for line in run.stdout.splitlines()] == [
            "a.jpg"
        ]
    finally:
        locked_folder.chmod(0o755)  # so that pytest can remove it


def test_a_float_tiff_is_one_line_of_ours(tmp_path: Path) -> None:
    tiff = tmp_path / "depth.tif"
    Image.fromarray(np.random.default_rng(0).random((40, 50), np.float32), mode="F").save(tiff)
    for run in (
        run_cli("detect", "--source", str(tiff), "--no-show", "--json", "-"),
        run_cli("classify", str(tiff)),
    ):
        run.assert_one_error("depth.tif: 32-bit float TIFF images are not supported")


@pytest.fixture(scope="module")
def truncated_avi(tmp_path_factory: pytest.TempPathFactory, three_faces: np.ndarray) -> Path:
    """An MJPG AVI of 12 frames (its header says 12), cut to half its bytes."""
    folder = tmp_path_factory.mktemp("truncated")
    whole = folder / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (320, 240))
    assert writer.isOpened()
    for frame in panning_frames(three_faces, 12, (320, 240)):
        writer.write(frame)
    writer.release()
    cut = folder / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_a_truncated_video_is_processed_to_the_cut_then_fails(
    tmp_path: Path, truncated_avi: Path
) -> None:
    saved, log = tmp_path / "out.avi", tmp_path / "out.jsonl"
    run = run_cli(
        "detect",
        "--source",
        str(truncated_avi),
        "--no-show",
        "--save",
        str(saved),
        "--json",
        str(log),
    )
    run.assert_one_error("1 video could be read only in part")
    frames = [json.loads(line) for line in log.read_text().splitlines()]
    assert 0 < len(frames) < 12
    warning = f"{truncated_avi}: read {len(frames)} of the 12 frames its header declares"
    assert warning in run.stderr
    capture = cv2.VideoCapture(str(saved))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames), "complete, not cut"
    capture.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.avi", "out.jsonl"]


def test_video_frames_over_the_pixel_budget_are_refused_before_decoding(
    truncated_avi: Path,
) -> None:
    run = run_cli(
        "detect", "--source", str(truncated_avi), "--no-show", "--json", "-", "--max-pixels", "0.05"
    )
    run.assert_one_error("its frames are 320x240 pixels, more than the limit of 0.05 megapixels")
    assert run.stdout == ""


DETECT = ("detect", "--source", str(THREE_FACES), "--no-show", "--json", "-")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((*DETECT, "--score-threshold", "-1"), "must be more than 0 and at most 1"),
        ((*DETECT, "--score-threshold", "0"), "must be more than 0 and at most 1"),
        ((*DETECT, "--score-threshold", "nan"), "'nan' is not a finite number"),
        ((*DETECT, "--detect-video-side", "0"), "must be from 64 to 1920"),
        ((*DETECT, "--detect-min-side", "100000"), "must be from 0 to 4096"),
        ((*DETECT, "--detect-min-side", "-5"), "must be from 0 to 4096"),
        ((*DETECT, "--settle-frames", "-3"), "must be from 1 to 1000"),
        ((*DETECT, "--max-fps", "-1"), "must be more than 0 and at most 1000"),
        ((*DETECT, "--max-fps", "0"), "must be more than 0 and at most 1000"),
        ((*DETECT, "--reconnect", "-1"), "must be from 0 to 1000"),
        ((*DETECT, "--reconnect", "2.5"), "'2.5' is not a whole number"),
        ((*DETECT, "--alert-interval", "-1"), "must be from 0 to 604800"),
        ((*DETECT, "--alert-global-interval", "inf"), "'inf' is not a finite number"),
        ((*DETECT, "--max-pixels", "0"), "must be from 0.01 to 150"),
        ((*DETECT, "--max-pixels", "lots"), "'lots' is not a number"),
        (("detect", "--source", ""), "an empty source names no file, folder, camera or stream"),
        (("detect", "--source", "  "), "an empty source names no file"),
        (("classify", str(THREE_FACES), "--max-pixels", "1000"), "must be from 0.01 to 150"),
        (("demo", "--score-threshold", "2"), "must be more than 0 and at most 1"),
        (("train", "--epochs", "0"), "must be from 1 to 10000"),
        (("train", "--batch-size", "0"), "must be from 1 to 4096"),
        (("train", "--learning-rate", "0"), "must be more than 0 and at most 1"),
        (("train", "--test-fraction", "1"), "must be more than 0 and less than 1"),
        (("train", "--val-fraction", "-0.1"), "must be at least 0 and less than 1"),
        (("train", "--views", "0"), "must be from 1 to 64"),
        (("train", "--input-size", "8"), "must be from 32 to 1024"),
        (("train", "--seed", "-1"), "must be from 0 to 4294967295"),
        (("train", "--limit-per-class", "0"), "must be from 1 to 1000000000"),
        (("export", "--faces", "0"), "must be from 1 to 100000"),
        (("data", "audit", "--test-fraction", "0"), "must be more than 0 and less than 1"),
        (("data", "audit", "--seed", "-1"), "must be from 0 to 4294967295"),
    ],
)
def test_out_of_range_options_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    run = run_cli(*args)
    error = run.assert_one_error(message)
    assert run.returncode == 2
    option = next((a for a in args if a.startswith("--") and a != "--no-show"), None)
    if option is not None and option != "--source":
        assert f"argument {option}:" in error


def test_the_library_checks_the_same_ranges() -> None:
    from maskwatch.sources import LiveSource, open_source
    from maskwatch.tracking import IoUTracker

    with pytest.raises(ValueError, match=r"score_threshold must be more than 0 and at most 1"):
        YuNetDetector(score_threshold=-1)
    with pytest.raises(SettingError, match=r"video_side must be from 64 to 4096, not 0"):
        YuNetDetector(video_side=0)
    with pytest.raises(SettingError, match=r"min_side must be from 0 to 4096, not 100000"):
        YuNetDetector(min_side=100000)
    with pytest.raises(SettingError, match=r"settle_frames must be from 1 to 1000, not -3"):
        IoUTracker(settle_frames=-3)
    with pytest.raises(SettingError, match=r"max_fps must be more than 0"):
        LiveSource("cam", cv2.VideoCapture, max_fps=-1)
    with pytest.raises(SourceError, match="an empty source"):
        open_source(" ")


def test_training_data_skips_junk_and_bombs_with_warnings(
    tmp_path: Path,
    bombs: dict[str, Path],
    detector: YuNetDetector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from maskwatch.train.data import load_dataset
    from maskwatch.train.framing import frame_samples

    folder = tmp_path / "people"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(THREE_FACES)
    (folder / "bomb.png").symlink_to(bombs["40000"])
    with open(folder / "huge.jpg", "wb") as junk:
        junk.truncate(3 * 2**30)
    with caplog.at_level(logging.WARNING, logger="maskwatch"):
        samples = load_dataset(f"{folder}:no_mask")
        framed = frame_samples(samples, detector, 64, 0.15)
    assert sorted(s.image.name for s in samples) == ["a.jpg", "bomb.png"]  # huge.jpg: unread
    assert [Path(p).name for p in framed.photos] == ["a.jpg"]
    assert "huge.jpg: the file is 3072 MiB" in caplog.text
    assert "bomb.png: the image is over 179 megapixels" in caplog.text


def blank_png(path: Path, width: int, height: int) -> Path:
    """A black 8-bit RGB PNG, compressed a hundred rows at a time: a picture that decodes to
    gigabytes, made without holding it (Pillow would)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    pack = zlib.compressobj(1)
    rows = b"\0" * (1 + 3 * width) * 100
    idat = b"".join(pack.compress(rows) for _ in range(height // 100)) + pack.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png)
    return path


def test_an_image_named_like_a_video_is_measured_from_its_header(
    tmp_path: Path, bombs: dict[str, Path]
) -> None:
    """A picture named .mp4 once went to FFmpeg, which decoded all of it (920 MB of peak memory
    for 16000 x 16000 pixels) before its size could be asked; its header decides now."""
    big = blank_png(tmp_path / "big.mp4", 16000, 16000)
    (tmp_path / "mid.avi").symlink_to(bombs["8000"])
    (tmp_path / "photo.mp4").symlink_to(THREE_FACES)
    args = ("--no-show", "--json", "-")
    run = run_cli("detect", "--source", str(big), *args)
    run.assert_one_error("big.mp4: the image is over", "more than the limit of 50 megapixels")
    assert run.max_rss_mb < RSS_LIMIT_MB, f"peak RSS {run.max_rss_mb:.0f} MB"
    run = run_cli("detect", "--source", str(tmp_path / "mid.avi"), *args)
    run.assert_one_error("mid.avi: the image is 8000x8000 pixels, more than the limit")
    assert run.max_rss_mb < RSS_LIMIT_MB, f"peak RSS {run.max_rss_mb:.0f} MB"
    run = run_cli("detect", "--source", str(tmp_path / "photo.mp4"), *args)
    run.assert_clean()
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["faces"]) == 3


def test_a_video_cut_inside_its_header_is_one_line_of_ours(
    tmp_path: Path, truncated_avi: Path
) -> None:
    """OpenCV's own AVI reader once printed "Unexpected element. Expected: LIST. Got: ..." with
    raw bytes straight to stderr."""
    header_only = tmp_path / "hdr.avi"
    header_only.write_bytes((truncated_avi.parent / "whole.avi").read_bytes()[:3000])
    run = run_cli("detect", "--source", str(header_only), "--no-show", "--json", "-")
    run.assert_one_error("hdr.avi: not a readable video")
    (tmp_path / "a.jpg").symlink_to(THREE_FACES)
    run = run_cli("detect", "--source", str(tmp_path / "*"), "--no-show", "--json", "-")
    run.assert_one_error("1 of 2 files could not be read")
    assert f"warning: skipping {header_only}: not a readable video" in run.stderr
    assert [Path(json.loads(line)["source"]).name for line in run.stdout.splitlines()] == ["a.jpg"]


def _event_log(path: Path, times: list[float]) -> Path:
    """An event log holding one person per time (appearing then settling, a second later)."""
    from maskwatch.events import Event, EventLog
    from maskwatch.types import APPEAR, SETTLE

    log = EventLog(path, "door")
    box = (0.0, 0.0, 10.0, 10.0)
    events = [
        Event(when + lag, "door", 0, kind, track, label, 0.9, box)
        for track, when in enumerate(times)
        for lag, kind, label in ((0.0, APPEAR, None), (1.0, SETTLE, "mask"))
    ]
    log.write(events)
    log.close()
    return path


def test_stats_skips_events_whose_time_no_calendar_shows(tmp_path: Path) -> None:
    """Times of 1e300, infinity, -1e18 and text once ended `stats` in OverflowError, OSError
    and TypeError tracebacks (the server already left them out)."""
    import sqlite3

    now = time.time()
    log = _event_log(tmp_path / "events.db", [now - 7200 + i for i in range(6)])
    with sqlite3.connect(log) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM events WHERE kind = 'appear'")]
        for event_id, bad in zip(ids, (1e300, float("inf"), -1e18, "abc"), strict=False):
            db.execute("UPDATE events SET time = ? WHERE id = ?", (bad, event_id))
    db.close()
    run = run_cli("stats", str(log))
    run.assert_clean()
    assert run.returncode == 0, run.stderr
    assert f"warning: {log}: skipped 4 of 12 events whose time is not a date" in run.stderr
    total = run.stdout.splitlines()[-1].split()
    assert total[:3] == ["total", "6", "6"], run.stdout  # each one settled a second later


def test_a_chart_of_ten_thousand_minutes_shows_the_last_ones(tmp_path: Path) -> None:
    """A bar per minute for a week once drew a 500250 x 400 PNG in 1.6 GB."""
    from maskwatch.defaults import STATS_PLOT_BARS

    start = time.time() - 10_000 * 60 - 3600
    log = _event_log(tmp_path / "events.db", [start + 60 * i for i in range(10_000)])
    chart = tmp_path / "chart.png"
    run = run_cli("stats", str(log), "--by", "minute", "--plot", str(chart), timeout=300)
    run.assert_clean()
    assert run.returncode == 0, run.stderr
    assert (
        f"warning: the chart shows the last {STATS_PLOT_BARS} of 10000 minutes; "
        "use --by hour or day to see them all" in run.stderr
    )
    assert "total" in run.stdout, "the table still has every minute"
    width, height = Image.open(chart).size
    assert width <= 60 * STATS_PLOT_BARS and height == 400
    assert run.max_rss_mb < RSS_LIMIT_MB, f"peak RSS {run.max_rss_mb:.0f} MB"


def _many_people(log: Path, people: int) -> None:
    """`people` more people in `log`, one appearance each (as the attacker's log of 3 M)."""
    now = int(time.time())
    with sqlite3.connect(log) as db:
        db.execute(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "INSERT INTO events(run, time, frame, kind, track, label, confidence) "
            "SELECT 1, ? - (i % 86400), i, 'appear', i + 1000, NULL, 0.5 FROM c",
            (people, now),
        )
    db.close()


def test_stats_reads_a_log_row_by_row_in_memory_of_its_periods(tmp_path: Path) -> None:
    """`stats` held every row and every person at once: 1.95 GB for 3 M rows, a MemoryError
    traceback for 7.5 M. Now 300,000 people take no more memory than 6 do (the log is walked
    in order of run and track, each person counted as their events end)."""
    small = _event_log(tmp_path / "small.db", [time.time() - 7200 + i for i in range(6)])
    big = tmp_path / "big.db"
    shutil.copyfile(small, big)
    _many_people(big, 300_000)
    runs = {log: run_cli("stats", str(log), "--by", "day", timeout=300) for log in (small, big)}
    for run in runs.values():
        run.assert_clean()
        assert run.returncode == 0, run.stderr
    total = runs[big].stdout.splitlines()[-1].split()
    assert total[:4] == ["total", "300006", "6", "0"], runs[big].stdout
    growth = runs[big].max_rss_mb - runs[small].max_rss_mb
    assert growth < 40, f"peak RSS grew {growth:.0f} MB for 300,000 more people"


def test_stats_skips_unknown_labels_and_names_sources_of_any_type(tmp_path: Path) -> None:
    """A run's source held as a BLOB ended `stats --source` in a TypeError traceback; a
    settled label that is none of ours counted a person in `people` but in no column."""
    log = _event_log(tmp_path / "events.db", [time.time() - 7200 + i for i in range(3)])
    with sqlite3.connect(log) as db:
        db.execute("UPDATE events SET label = 'hat' WHERE track = 0 AND kind = 'settle'")
        db.execute("INSERT INTO runs(started, source) VALUES (?, ?)", (time.time(), b"\xffcam"))
        run_id = db.execute("SELECT max(id) FROM runs").fetchone()[0]
        db.execute(
            "INSERT INTO events(run, time, frame, kind, track, label, confidence) "
            "VALUES (?, ?, 0, 'appear', 1, NULL, 0.5)",
            (run_id, time.time() - 60),
        )
    db.close()
    run = run_cli("stats", str(log), "--source", "nowhere")
    run.assert_clean()
    assert run.returncode == 0, run.stderr
    assert f"warning: {log}: skipped 1 of 7 events whose label is not mask" in run.stderr
    assert "its cameras: 'door', b'\\xffcam'" in run.stderr, run.stderr
    run = run_cli("stats", str(log))
    total = run.stdout.splitlines()[-1].split()
    # people, mask, no_mask, incorrect, unsettled: the person labelled 'hat' is unsettled
    assert total == ["total", "4", "2", "0", "0", "2"], run.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("classify", ""),
        ("detect", "--source", str(THREE_FACES), "--no-show", "--save", ""),
        ("detect", "--source", str(THREE_FACES), "--no-show", "--json", " "),
        ("demo", "--out", ""),
        ("stats", ""),
    ],
)
def test_an_empty_path_is_refused_not_taken_as_this_folder(args: tuple[str, ...]) -> None:
    run_cli(*args).assert_one_error("an empty path names no file or folder")


def test_a_camera_index_opencv_cannot_take_is_one_line() -> None:
    proc = run_cli("detect", "--source", "2147483648", "--no-show", "--json", "-")
    proc.assert_one_error("cannot open camera 2147483648")


def test_stats_on_a_log_with_a_missing_table_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "door.db"
    made = run_cli("detect", "--source", str(THREE_FACES), "--no-show", "--events", str(log))
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(log) as db:
        db.execute("DROP TABLE events")
    run_cli("stats", str(log)).assert_one_error("not a usable maskwatch event log")


def test_classify_refuses_to_write_over_its_input(tmp_path: Path) -> None:
    photo = tmp_path / "me.jpg"
    shutil.copy(THREE_FACES, photo)
    (tmp_path / "link.jpg").symlink_to(photo)
    for out in (photo, tmp_path / "link.jpg"):
        run_cli("classify", str(photo), "--json", str(out)).assert_one_error(
            "is the input", "would destroy"
        )
    assert photo.read_bytes() == THREE_FACES.read_bytes()


def test_serve_refuses_an_event_log_it_cannot_use_before_it_starts(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a database")
    proc = run_cli("serve", "--port", "1", "--events", str(junk))
    proc.assert_one_error("junk.jpg: not a usable maskwatch event log")
    assert junk.read_bytes() == b"not a database"
