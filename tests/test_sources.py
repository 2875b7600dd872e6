"""Sources: files, folders, globs, videos to the end, cameras and streams that fail."""

from __future__ import annotations

import json
import logging
import math
import socket
import sqlite3
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import (
    assert_one_line_error,
    render_vfr_video,
    render_video,
    run_cli,
    video_declaring,
)
from maskwatch import defaults
from maskwatch.defaults import VIDEO_MAX_PAUSE
from maskwatch.errors import SettingError, SourceError
from maskwatch.redact import redact
from maskwatch.sinks import VideoSink
from maskwatch.sources import FileSource, LiveSource, Pacer, RealTime, VideoClock, open_source


def _write(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def test_folder_skips_non_images_with_a_warning(tmp_path: Path, three_faces, caplog) -> None:  # type: ignore[no-untyped-def]
    _write(tmp_path / "a.jpg", three_faces)
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "b.png", three_faces[:100, :100])
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    source = open_source(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="maskwatch"):
        frames = list(source.frames())
    assert [Path(f.source).name for f in frames] == ["a.jpg", "b.png"]
    assert [f.index for f in frames] == [0, 1]
    assert source.read == 2 and source.skipped == 1
    assert "broken.jpg" in caplog.text


def test_glob_and_single_image(tmp_path: Path, three_faces) -> None:  # type: ignore[no-untyped-def]
    for name in ("x1.jpg", "x2.jpg", "y.jpg"):
        _write(tmp_path / name, three_faces)
    assert len(list(open_source(str(tmp_path / "x*.jpg")).frames())) == 2
    (frame,) = open_source(str(tmp_path / "y.jpg")).frames()
    assert frame.image.shape == three_faces.shape and frame.time == 0.0


def test_video_is_read_to_the_end_without_crashing(video: Path) -> None:
    source = open_source(str(video))
    frames = list(source.frames())
    assert len(frames) == 30 and source.read == 30
    assert frames[-1].index == 29
    assert frames[15].time == pytest.approx(1.0, abs=0.01)
    assert frames[0].source == str(video)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.jpg", "no such file"),
        ("nothing-matches-*.jpg", r"no image or video matches"),
    ],
)
def test_missing_inputs_are_clear_errors(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(str(tmp_path / spec))


def test_a_lone_unreadable_file_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "fake.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match=r"fake\.mp4"):
        list(open_source(str(bad)).frames())
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SourceError, match="not an image or video"):
        list(open_source(str(text)).frames())


def test_a_camera_that_will_not_open_is_an_error() -> None:
    with pytest.raises(SourceError, match=r"cannot open camera 97"):
        open_source("97")


def test_a_stream_that_will_not_open_is_an_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match="cannot open"):
        open_source(f"rtsp://127.0.0.1:{port}/cam")


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_stream_that_accepts_and_never_answers_is_given_up_in_time(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenCV alone waits 30 s, holding a lock every other camera's opening waits on."""
    monkeypatch.setattr(defaults, "STREAM_OPEN_TIMEOUT_S", 1.0)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        started = time.monotonic()
        with pytest.raises(SourceError, match="cannot open"):
            open_source(f"{scheme}://127.0.0.1:{server.getsockname()[1]}/cam", reconnect_attempts=0)
        assert time.monotonic() - started < 15, "the open timeout was not applied"


def test_a_stream_that_goes_silent_is_dropped_in_time(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """An MJPEG camera that sends three frames and then nothing, its connection open: reading
    gives up after the read timeout (shortened here; OpenCV alone waits 30 s) and the stream
    counts as dropped, without OpenCV's own "Stream timeout triggered" line."""
    monkeypatch.setattr(defaults, "STREAM_READ_TIMEOUT_S", 1.0)
    frame = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
    part = b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)

        def camera() -> None:
            client, _ = server.accept()
            client.recv(4096)
            head = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=f\r\n"
            client.sendall(head + b"\r\n")
            client.sendall(part % (len(frame), frame) * 3)
            time.sleep(30)  # silent, the connection left open
            client.close()

        threading.Thread(target=camera, daemon=True).start()
        source = open_source(
            f"http://127.0.0.1:{server.getsockname()[1]}/cam", reconnect_attempts=0
        )
        started = time.monotonic()
        with pytest.raises(SourceError, match="stopped delivering frames"):
            for _ in source.frames():
                pass
        source.close()
        assert source.read >= 1
        assert time.monotonic() - started < 15, "the read timeout was not applied"
    assert "WARN" not in capfd.readouterr().err


def test_a_stream_that_reopens_but_never_gives_a_frame_uses_up_its_attempts() -> None:
    """A server that claims a frame of a gigabyte, sends a little of it and hangs up, on every
    connection: each reopening succeeded, reset the count of attempts and the run reconnected
    without end."""
    connections = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)

        def camera() -> None:
            while len(connections) < 8:
                client, _ = server.accept()
                connections.append(client)
                client.recv(4096)
                head = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=f\r\n"
                part = b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: 999999999\r\n\r\n"
                client.sendall(head + b"\r\n" + part + bytes(65536))
                client.close()

        threading.Thread(target=camera, daemon=True).start()
        source = open_source(
            f"http://127.0.0.1:{server.getsockname()[1]}/cam", reconnect_attempts=2
        )
        with pytest.raises(SourceError, match="did not come back after 2 attempts"):
            for _ in source.frames():
                pass
        source.close()
    assert source.read == 0
    assert len(connections) == 3  # the first opening and two attempts


def test_live_source_reconnects_then_gives_up(video: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A stream that ends is reopened with backoff; when it stays away the error is clear."""
    opened = []

    def open_capture() -> cv2.VideoCapture:
        opened.append(1)
        return cv2.VideoCapture(str(video) if len(opened) <= 2 else "/nonexistent.mp4")

    source = LiveSource("test stream", open_capture, reconnect_attempts=2, first_backoff_s=0.01)
    with (
        caplog.at_level(logging.WARNING, logger="maskwatch"),
        pytest.raises(SourceError, match="did not come back after 2 attempts"),
    ):
        for _ in source.frames():
            pass
    source.close()
    assert source.reconnects == 1
    assert source.read >= 1
    assert "reconnecting" in caplog.text


def test_live_source_keeps_only_the_newest_frame(video: Path) -> None:
    import time

    source = LiveSource("slow consumer", lambda: cv2.VideoCapture(str(video)), reconnect_attempts=0)
    frames = []
    with pytest.raises(SourceError):
        for frame in source.frames():
            frames.append(frame)
            time.sleep(0.05)
    source.close()
    assert source.dropped > 0
    assert len(frames) + source.dropped <= 30


def test_file_source_counts_nothing_read_for_empty_list() -> None:
    source = FileSource([], "empty")
    assert list(source.frames()) == [] and source.read == 0


class _Camera:
    """What cv2.VideoCapture gives for a camera that delivers grey frames."""

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 15.0

    def read(self) -> tuple[bool, np.ndarray]:
        time.sleep(1 / 15)
        return True, np.full((48, 64, 3), 90, np.uint8)

    def release(self) -> None:
        pass


@pytest.mark.parametrize(("scale", "rate"), [(1_000_000, 1), (1, 1_000_000_000)])
def test_an_absurd_declared_frame_rate_is_taken_as_unknown_with_one_warning(
    tmp_path: Path,
    three_faces: np.ndarray,
    caplog: pytest.LogCaptureFixture,
    scale: int,
    rate: int,
) -> None:
    clip = video_declaring(tmp_path / "odd.avi", three_faces, scale, rate)
    source = open_source(str(clip), realtime=True)
    waits: list[float] = []
    with caplog.at_level(logging.WARNING, logger="maskwatch"):
        # serve's file cameras; detect --realtime's Pacer would wait 11.6 days a frame at 1e-6
        frames = list(RealTime(source.frames(), wait=waits.append))
    assert source.fps == 0 and source.dropped == 0
    assert [f.time for f in frames] == [0.0, 0.04, 0.08, 0.12]  # at the default 25 frames/s
    assert max(waits) <= 0.12  # not 1e6 s apart
    said = [r.getMessage() for r in caplog.records if "frames/s" in r.getMessage()]
    assert said == [
        f"{clip} declares {rate / scale:g} frames/s, not from 0.5 to 1000: its rate is taken "
        "as unknown (no --realtime pacing; frames timed and recorded at 25 frames/s)"
    ]


def test_frames_of_a_camera_url_do_not_carry_its_password() -> None:
    from maskwatch.sources import LiveSource

    source = LiveSource("rtsp://admin:hunter2@10.0.0.7/stream?token=abc", _Camera)
    try:
        frame = next(iter(source.frames()))
    finally:
        source.close()
    assert "hunter2" not in frame.source and "abc" not in frame.source
    assert frame.source == "rtsp://admin:***@10.0.0.7/stream?token=***"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://cam.example/live#token=abc", "https://cam.example/live#token=***"),
        (
            "https://cam.example/v#access_token=abc&expires=60",
            "https://cam.example/v#access_token=***&expires=60",
        ),
        ("https://b.example/s.m3u8?sig=abc&se=1", "https://b.example/s.m3u8?sig=***&se=1"),
        ("https://b.example/s?Signature=abc&x=1", "https://b.example/s?Signature=***&x=1"),
        (
            "https://b.example/s?X-Amz-Credential=abc/20260101&X-Amz-Date=1",
            "https://b.example/s?X-Amz-Credential=***&X-Amz-Date=1",
        ),
    ],
)
def test_signed_urls_and_fragment_tokens_are_redacted(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    ("drop_after", "expected"),
    [
        (0.1, [(0, 0.0), (1, 0.1), (2, 0.2), (4, 0.45), (5, 0.5), (6, 0.6)]),
        (None, [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.45), (4, 0.55), (5, 0.65), (6, 0.75)]),
    ],
    ids=["drop (detect --realtime)", "keep (serve's file cameras)"],
)
def test_a_pacer_holds_frames_to_their_time_and_drops_or_keeps_late_ones(
    drop_after: float | None, expected: list[tuple[int, float]]
) -> None:
    """On a simulated clock, a 10 frames/s video whose frame 2 takes 0.25 s of work: dropping,
    frame 3 (late by more than a frame) is dropped and the video stays on its schedule;
    keeping, every frame is given and the video goes on from where it is."""
    now = [0.0]

    def wait(seconds: float) -> None:
        now[0] += seconds

    pacer = Pacer(drop_after, lambda: now[0], wait)
    given = []
    for index in range(7):
        if pacer.due(index / 10):
            given.append((index, now[0]))
            now[0] += 0.25 if index == 2 else 0.0
    assert given == [(i, pytest.approx(t)) for i, t in expected]


# A phone's recording paused for 40 s after its fourth frame (15 frames/s either side).
PAUSED = [0.0, 1 / 15, 2 / 15, 3 / 15, 40.0, 40 + 1 / 15, 40 + 2 / 15]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])  # an MP4 declares its average rate
def test_a_variable_frame_rate_video_keeps_its_pause_in_frame_and_event_times(
    tmp_path: Path, three_faces: np.ndarray, suffix: str
) -> None:
    clip = render_vfr_video(tmp_path / f"phone{suffix}", three_faces, PAUSED)
    out, events = tmp_path / "frames.jsonl", tmp_path / "events.db"
    proc = run_cli(
        "detect", "--source", str(clip), "--no-show", "--json", str(out), "--events", str(events)
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    times = [json.loads(line)["time"] for line in out.read_text().splitlines()]
    assert times == pytest.approx(PAUSED, abs=0.002)  # was 4/15 s for the fifth frame
    with sqlite3.connect(events) as db:
        stamped = db.execute("SELECT time, frame FROM events").fetchall()
    assert min(f for _, f in stamped) < 4 < max(f for _, f in stamped)  # either side of it
    starts = [at - PAUSED[frame] for at, frame in stamped]  # the run's start, by each event
    assert max(starts) - min(starts) < 0.01


def test_realtime_and_served_files_wait_out_a_variable_frame_rate_videos_pause(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    clip = render_vfr_video(tmp_path / "phone.mkv", three_faces, [0.0, 1 / 15, 1.5, 1.5 + 1 / 15])
    now = [0.0]

    def wait(seconds: float) -> None:
        now[0] += seconds

    # serve's file cameras, on a simulated clock
    list(RealTime(open_source(str(clip)).frames(), lambda: now[0], wait))
    assert now[0] == pytest.approx(1.5 + 1 / 15, abs=0.002)
    # detect --realtime: the frame after the pause is not given before its time
    source = open_source(str(clip), realtime=True)
    given = [time.monotonic() for _ in source.frames()]
    assert given[2] - given[0] >= 1.4 and source.dropped == 0


def test_frames_without_usable_timestamps_are_timed_by_the_frame_rate() -> None:
    clock = VideoClock(Path("clip.mp4"), step=0.1)
    stamps = [0.0, 100.0, 200.0, 150.0, math.nan, 900.0]  # goes back at the fourth
    assert [clock.time(ms) for ms in stamps] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.9])
    clock = VideoClock(Path("clip.mp4"), step=0.1, stamped=False)
    assert [clock.time(ms) for ms in stamps] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


def test_a_timestamp_too_far_ahead_is_not_believed_but_a_pause_after_a_bad_one_is() -> None:
    """A damaged or hostile file stamped its fifth frame 11.6 days (or 2**52 ms) on: --realtime
    waited for it, or died with an OverflowError; one repeated stamp lost a later pause."""
    for jump in (1e9, 2.0**52):
        clock = VideoClock(Path("clip.mkv"), step=0.1)
        stamps = [0.0, 100.0, 200.0, 300.0, jump, jump + 100.0, 500.0]
        times = [clock.time(ms) for ms in stamps]
        assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    clock = VideoClock(Path("clip.mkv"), step=0.1)
    stamps = [0.0, 100.0, 100.0, 200.0, 40_000.0, 40_100.0]
    assert [clock.time(ms) for ms in stamps] == pytest.approx([0.0, 0.1, 0.2, 0.3, 40.0, 40.1])
    clock = VideoClock(Path("clip.mkv"), step=0.1)
    assert clock.time(0.0) == 0 and clock.time(1000 * VIDEO_MAX_PAUSE) == VIDEO_MAX_PAUSE


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_recording_cuts_a_long_pause_once(
    tmp_path: Path, three_faces: np.ndarray, suffix: str
) -> None:
    """A 40 s pause is held for MAX_HOLD_S, and the frames after it follow at their own pace
    (each one used to be held another MAX_HOLD_S: 2 s of video became 302 s), at the video's
    own frame rate (an MP4's average, 0.24 frames/s here, was taken for it)."""
    times = [i / 15 for i in range(5)] + [40 + i / 15 for i in range(5)]
    clip = render_vfr_video(tmp_path / f"phone{suffix}", three_faces, times)
    out = tmp_path / "out.avi"
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--save", str(out))
    assert proc.returncode == 0, proc.stderr
    capture = cv2.VideoCapture(str(out))
    fps, frames = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert fps == pytest.approx(15, abs=0.5)
    assert frames == 10 + round(VideoSink.MAX_HOLD_S * fps)


def test_a_burst_of_gaps_says_nothing_of_the_frame_rate(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    """16 frames 3000 s apart measured 1/3000 frames/s, judged absurd: every timestamp of the
    file was thrown away and its frames timed at 25 a second."""
    stamps = [3000.0 * i for i in range(16)] + [45_000 + (i + 1) / 15 for i in range(3)]
    clip = render_vfr_video(tmp_path / "gaps.mkv", three_faces, stamps, size=(160, 120))
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    times = [json.loads(line)["time"] for line in proc.stdout.splitlines()]
    assert times == pytest.approx(stamps, abs=0.002)


def test_a_pause_in_a_fast_video_costs_a_bounded_recording(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    """A video of 1000 frames a second paused for 20 s: the recording, at the video's rate,
    held the pause for 10 s, 10,000 frames encoded (118 s for 3 frames processed)."""
    stamps = [i / 1000 for i in range(16)] + [20.0]
    clip = render_vfr_video(tmp_path / "fast.mkv", three_faces, stamps, size=(160, 120))
    out = tmp_path / "out.avi"
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--save", str(out))
    assert proc.returncode == 0, proc.stderr
    capture = cv2.VideoCapture(str(out))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert frames == len(stamps) + round(VideoSink.MAX_HOLD_S * VideoSink.HOLD_FPS)


@pytest.mark.parametrize("kind", ["folder", "photo"])
def test_realtime_without_a_video_is_one_line_error(
    tmp_path: Path, three_faces: np.ndarray, kind: str
) -> None:
    photo = _write(tmp_path / "a.jpg", three_faces)
    spec = tmp_path if kind == "folder" else photo
    proc = run_cli("detect", "--source", str(spec), "--no-show", "--json", "-", "--realtime")
    assert_one_line_error(proc, f"--realtime plays videos at their own pace, and {spec} has no")
    assert proc.stdout == ""


def test_realtime_takes_a_glob_with_a_video_among_photos(
    tmp_path: Path, three_faces: np.ndarray
) -> None:
    _write(tmp_path / "a.jpg", three_faces)
    render_video(tmp_path / "b.mp4", three_faces, frames=2)
    assert open_source(str(tmp_path / "*"), realtime=True).realtime
    with pytest.raises(SettingError, match="has no video"):
        open_source(str(tmp_path / "*.jpg"), realtime=True)


@pytest.mark.parametrize("spec", ["3", "rtsp://user:secret@127.0.0.1:9/live"])
def test_realtime_on_a_live_source_says_it_is_for_files(
    spec: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera or a stream comes at its own pace: --realtime is said to do nothing there (it
    was silently ignored), without the URL's password."""
    with caplog.at_level(logging.WARNING, logger="maskwatch"), pytest.raises(SourceError):
        open_source(spec, realtime=True)  # no such camera here, nothing listening there
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("--realtime is for files: ")
    assert "secret" not in said[0] and "comes at its own pace already" in said[0]
