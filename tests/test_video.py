"""Saved videos through the real CLI: H.264 in .mp4 through PyAV (probed, then played by
Chromium from a loopback server), OpenCV's writer when PyAV cannot be imported, what the
"wrote" line says about each, and `serve --save` recording the server cameras."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from conftest import (
    CHROMIUM,
    assert_one_line_error,
    free_port,
    panning_frames,
    render_video,
    run_browser,
    run_cli,
    video_codec,
    video_declaring,
    wait_for,
    without_pyav,
)

FRAMES = 10
ODD_SIZE = (321, 241)  # H.264's 4:2:0 colour needs even sides: the encoder pads


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, three_faces: np.ndarray) -> Path:
    """A lossless clip of odd size (OpenCV's writers would round it down to even sides)."""
    import av

    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=15)
        stream.width, stream.height = ODD_SIZE
        stream.pix_fmt = "bgr0"
        for image in panning_frames(three_faces, FRAMES, ODD_SIZE):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))
    return path


def save(clip: Path, out: Path, env: dict[str, str] | None = None) -> str:
    """`detect --save out` on the clip; its stderr."""
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--save", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def container_of(path: Path) -> str:
    """The container `path` really is, by its first bytes (not its name)."""
    head = path.read_bytes()[:12]
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return "mp4" if head[4:8] == b"ftyp" else repr(head)


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP server of `tmp_path` on 127.0.0.1; its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_mp4_is_h264_with_every_frame_and_says_so(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    said = save(clip, out)
    assert f"wrote {out} (H.264)" in said
    assert (container_of(out), video_codec(out)) == ("mp4", ("h264", FRAMES))
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_without_pyav_mp4_falls_back_to_opencv_and_says_so(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    said = save(clip, out, env=without_pyav(tmp_path / "env"))
    assert f"wrote {out} (MPEG-4 Part 2 (mp4v), which browsers do not play" in said
    assert "pip install av" in said
    assert video_codec(out) == ("mpeg4", FRAMES)


def test_avi_stays_motion_jpeg(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.avi"
    assert f"wrote {out} (Motion JPEG (MJPG))" in save(clip, out)
    assert (container_of(out), video_codec(out)) == ("avi", ("mjpeg", FRAMES))


def test_mkv_is_matroska_h264_or_without_pyav_motion_jpeg(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    assert f"wrote {out} (H.264)" in save(clip, out)
    assert (container_of(out), video_codec(out)) == ("matroska", ("h264", FRAMES))
    fallback = tmp_path / "fallback.mkv"
    said = save(clip, fallback, env=without_pyav(tmp_path / "env"))
    assert f"wrote {fallback} (Motion JPEG (MJPG))" in said
    assert (container_of(fallback), video_codec(fallback)) == ("matroska", ("mjpeg", FRAMES))
    read = cv2.VideoCapture(str(fallback))
    assert read.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES and read.read()[0]
    read.release()


@pytest.mark.parametrize("name", ["out.webm", "out.MOV", "out.wmv", "out.mpg"])
def test_a_video_name_never_written_is_refused_before_any_work(name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    proc = run_cli("detect", "--source", "no/such/clip.mp4", "--no-show", "--save", str(out))
    suffix = out.suffix.lower()
    assert_one_line_error(
        proc, f"--save: cannot write a {suffix} video; a video is written as .mp4, .mkv or .avi"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_chromium_plays_the_h264_mp4_and_not_the_fallback(
    clip: Path, tmp_path: Path, loopback: str
) -> None:
    save(clip, tmp_path / "h264.mp4")
    save(clip, tmp_path / "mp4v.mp4", env=without_pyav(tmp_path / "env"))
    out = run_browser("video.mjs", f"{loopback}/h264.mp4", f"{loopback}/mp4v.mp4")
    h264, mp4v = out["videos"]
    assert h264["readyState"] >= 2 and "error" not in h264, h264
    assert (h264["width"], h264["height"]) == (322, 242), "padded to even sides"
    assert h264["time"] > 0, "it played"
    assert mp4v["readyState"] < 2 and mp4v.get("error") == 4, "MPEG-4 Part 2: not supported"


def test_serve_records_each_server_camera_as_h264(clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port),
         "--source", str(clip), "--source", str(tmp_path / "gone.mp4"), "--save", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for((folder / "camera-1.mp4").exists, timeout=90, what="the recording")
    finally:
        server.terminate()
        said = server.communicate(timeout=30)[0]
    assert f"camera 1: wrote {folder / 'camera-1.mp4'} (H.264)" in said
    assert f"camera 2: {tmp_path / 'gone.mp4'}" in said and "camera camera" not in said
    assert video_codec(folder / "camera-1.mp4") == ("h264", FRAMES)
    assert os.listdir(folder) == ["camera-1.mp4"], "nothing for the camera that never opened"
    recorded = cv2.VideoCapture(str(folder / "camera-1.mp4"))
    assert recorded.get(cv2.CAP_PROP_FPS) == pytest.approx(15), "the clip's own rate, not 25"
    recorded.release()


def test_a_video_declaring_1e9_frames_per_second_is_recorded_at_the_default_rate(
    three_faces: np.ndarray, tmp_path: Path
) -> None:
    clip = video_declaring(tmp_path / "fast.avi", three_faces, 1, 1_000_000_000)
    out = tmp_path / "out.mp4"
    assert "declares 1e+09 frames/s" in save(clip, out)
    recorded = cv2.VideoCapture(str(out))
    assert recorded.get(cv2.CAP_PROP_FPS) == pytest.approx(25)
    recorded.release()
    assert video_codec(out) == ("h264", 4)


def test_a_video_keeps_its_frames_timing_where_frames_were_skipped(
    three_faces: np.ndarray, tmp_path: Path
) -> None:
    from maskwatch.sinks import VideoSink
    from maskwatch.types import Faces, Frame, FrameResult

    sink = VideoSink(tmp_path / "out.mp4", 15.0)
    images = panning_frames(three_faces, 4, (320, 240))
    # frames 0, 1, then 5 (2-4 dropped while processing fell behind), then 30 s later
    for image, index in zip(images, (0, 1, 5, 455), strict=True):
        sink.write(FrameResult(Frame(image, index, index / 15, "cam"), Faces()))
    sink.close()
    # 0, 1, 1 held for 2-4, 5, then 5 held for 10 s at most (150 frames), 455
    assert video_codec(tmp_path / "out.mp4")[1] == 2 + 3 + 1 + 150 + 1


def test_serve_save_is_refused_where_it_cannot_record(clip: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep\n")
    shutil.copy(clip, tmp_path / "camera-1.mp4")
    for args, message in (
        (("--save", str(tmp_path)), "--save records the server cameras: give them with --source"),
        (("--source", str(clip), "--save", str(a_file)), f"--save {a_file}: not a folder"),
        (
            ("--source", str(tmp_path / "camera-1.mp4"), "--save", str(tmp_path)),
            f"--save {tmp_path / 'camera-1.mp4'} is the input",
        ),
    ):
        assert_one_line_error(run_cli("serve", "--port", str(free_port()), *args), message)
    assert a_file.read_text() == "keep\n"
    assert sorted(os.listdir(tmp_path)) == ["camera-1.mp4", "notes.txt"]


def test_serve_completes_a_recording_when_stopped_mid_stream(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    long_clip = render_video(tmp_path / "long.mp4", three_faces, 1500, (320, 240))
    folder = tmp_path / "recordings"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port),
         "--source", str(long_clip), "--save", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    cameras = f"http://127.0.0.1:{port}/api/v1/cameras"

    def frames_seen() -> int:
        try:
            return int(httpx.get(cameras, timeout=2).json()[0]["frames"])
        except (httpx.HTTPError, IndexError, KeyError, ValueError):
            return 0

    try:
        wait_for(lambda: frames_seen() >= 20, timeout=90, what="20 frames")
    finally:
        server.terminate()  # as Ctrl-C: uvicorn shuts down, the cameras stop
        said = server.communicate(timeout=30)[0]
    codec, frames = video_codec(folder / "camera-1.mp4")
    assert codec == "h264" and 20 <= frames < 1500, frames
    assert f"camera 1: wrote {folder / 'camera-1.mp4'} (H.264)" in said
    assert os.listdir(folder) == ["camera-1.mp4"]
