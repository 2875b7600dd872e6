"""Outputs in hostile places, through the real CLI: devices, pipes, links, a full disk, a
read-only file system, a file-size limit, a missing permission and an MQTT broker that never
answers. Each failure must be one line of ours, a non-zero exit, and nothing left behind."""

from __future__ import annotations

import errno
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import (
    THREE_FACES,
    assert_one_line_error,
    fill,
    free_port,
    render_video,
    run_cli,
    video_codec,
    without_pyav,
)

FRAMES = 12
ENOSPC = os.strerror(errno.ENOSPC)
EROFS = os.strerror(errno.EROFS)
EFBIG = os.strerror(errno.EFBIG)
EACCES = os.strerror(errno.EACCES)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, three_faces: np.ndarray) -> Path:
    return render_video(
        tmp_path_factory.mktemp("clip") / "clip.mp4", three_faces, FRAMES, (320, 240)
    )


@pytest.fixture(scope="module")
def event_log(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Path:
    log = tmp_path_factory.mktemp("log") / "events.db"
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--events", str(log))
    assert proc.returncode == 0, proc.stderr
    return log


@pytest.fixture
def devices(tmp_path: Path) -> dict[str, Path]:
    """Our own null and full devices (the same as /dev/null and /dev/full) and an own link to
    this process's stdout (as /dev/stdout is), in a folder of their own: if a regression
    replaced them, the machine's /dev would be unharmed."""
    folder = tmp_path / "dev"
    folder.mkdir()
    try:
        for name, minor in (("null", 3), ("full", 7)):
            os.mknod(folder / name, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except OSError as exc:
        pytest.skip(f"cannot make device nodes here: {exc}")
    (folder / "stdout").symlink_to("/proc/self/fd/1")
    return {p.name: p for p in folder.iterdir()}


def assert_devices_intact(devices: dict[str, Path]) -> None:
    assert stat.S_ISCHR(os.stat(devices["null"]).st_mode)
    assert stat.S_ISCHR(os.stat(devices["full"]).st_mode)
    assert os.readlink(devices["stdout"]) == "/proc/self/fd/1"
    assert sorted(os.listdir(devices["null"].parent)) == ["full", "null", "stdout"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "maskwatch.cli", *args]


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI with bytes on stdout (for video and images written there)."""
    return subprocess.run(cli("-q", *args), capture_output=True, timeout=120)


def assert_failed_cleanly(
    proc: subprocess.CompletedProcess[str], folder: Path, message: str, keep: set[str]
) -> None:
    """One error line containing `message`, only our own lines on stderr (no OpenCV or FFmpeg
    noise, no "wrote"), and nothing in `folder` but the files in `keep`."""
    assert_one_line_error(proc, message)
    assert all(line.startswith("maskwatch: ") for line in proc.stderr.splitlines()), proc.stderr
    assert "wrote" not in proc.stderr
    assert set(os.listdir(folder)) == keep, "temporary or half-written files left behind"


def count_frames(data: bytes, folder: Path) -> int:
    copy = folder / "copy.avi"
    copy.write_bytes(data)
    capture = cv2.VideoCapture(str(copy))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    copy.unlink()
    return count


def read_only(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)


def test_devices_are_written_in_place_never_replaced(clip: Path, devices: dict[str, Path]) -> None:
    null = str(devices["null"])
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--json", null, "--save", null)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("detect", "--source", str(THREE_FACES), "--no-show", "--save", null)
    assert proc.returncode == 0, proc.stderr
    assert_devices_intact(devices)


def test_stdout_through_a_pipe(clip: Path, tmp_path: Path, devices: dict[str, Path]) -> None:
    stdout = str(devices["stdout"])
    proc = run("detect", "--source", str(clip), "--no-show", "--json", stdout)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["frame"] for line in proc.stdout.splitlines()] == list(range(FRAMES))

    proc = run("detect", "--source", str(clip), "--no-show", "--save", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout[:4] == b"RIFF", "a video to a pipe is an AVI (MJPG)"
    assert count_frames(proc.stdout, tmp_path) == FRAMES

    proc = run("detect", "--source", str(THREE_FACES), "--no-show", "--save", stdout)
    assert proc.returncode == 0, proc.stderr
    image = cv2.imdecode(np.frombuffer(proc.stdout, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (281, 660, 3)
    assert_devices_intact(devices)


def test_a_pipe_whose_reader_has_gone_ends_the_run_quietly(
    tmp_path: Path, devices: dict[str, Path]
) -> None:
    """`--json /dev/stdout | head -1` ends as `--json - | head -1` does: exit 0, no error."""
    for i in range(4):
        shutil.copy(THREE_FACES, tmp_path / f"{i}.jpg")
    for target in (str(devices["stdout"]), "-"):
        detect = subprocess.Popen(
            [sys.executable, "-m", "maskwatch.cli", "-q", "detect", "--source", str(tmp_path),
             "--no-show", "--json", target],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert detect.stdout is not None and detect.stderr is not None
        first = detect.stdout.readline()
        detect.stdout.close()  # the reader goes, as `head -1` does
        assert json.loads(first)["frame"] == 0
        assert detect.wait(timeout=120) == 0, target
        assert detect.stderr.read() == b"", target
    assert_devices_intact(devices)


def test_a_video_to_a_pipe_whose_reader_has_gone_ends_quietly(clip: Path) -> None:
    """`--save - | head -c 4` ends as `--json - | head -1` does: exit 0, no error."""
    detect = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "-q", "detect", "--source", str(clip),
         "--no-show", "--save", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert detect.stdout is not None and detect.stderr is not None
    assert detect.stdout.read(4) == b"RIFF"
    detect.stdout.close()  # the reader goes, as `head -c 4` does
    assert detect.wait(timeout=120) == 0
    assert detect.stderr.read() == b""


def _through_fifo(fifo: Path, command: Callable[[], subprocess.CompletedProcess[str]]) -> bytes:
    """Run `command` writing into `fifo` while a thread reads everything from it."""
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = command()
    reader.join(30)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced"
    return received[0]


def test_a_fifo_gets_json_lines_and_a_video(clip: Path, tmp_path: Path) -> None:
    def detect(*args: str) -> Callable[[], subprocess.CompletedProcess[str]]:
        return lambda: run_cli("detect", "--source", str(clip), "--no-show", *args)

    lines = _through_fifo(tmp_path / "lines", detect("--json", str(tmp_path / "lines")))
    assert len(lines.decode().splitlines()) == FRAMES
    video = _through_fifo(tmp_path / "video.avi", detect("--save", str(tmp_path / "video.avi")))
    assert count_frames(video, tmp_path) == FRAMES
    h264 = _through_fifo(tmp_path / "video.mp4", detect("--save", str(tmp_path / "video.mp4")))
    (tmp_path / "copy" / "h264.mp4").parent.mkdir()
    (tmp_path / "copy" / "h264.mp4").write_bytes(h264)
    assert video_codec(tmp_path / "copy" / "h264.mp4") == ("h264", FRAMES)
    assert sorted(os.listdir(tmp_path)) == ["copy", "lines", "video.avi", "video.mp4"]


def test_links_keep_pointing_where_they_did(
    clip: Path, event_log: Path, tmp_path: Path, devices: dict[str, Path]
) -> None:
    to_null = tmp_path / "null.jsonl"
    to_null.symlink_to(devices["null"])
    target = tmp_path / "real" / "frames.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    target.chmod(0o600)
    link = tmp_path / "frames.jsonl"
    link.symlink_to(target)
    chart_link = tmp_path / "chart.png"
    chart_link.symlink_to(devices["null"])
    for out in (to_null, link):
        proc = run_cli("detect", "--source", str(clip), "--no-show", "--json", str(out))
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("stats", str(event_log), "--plot", str(chart_link))
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(to_null) == os.readlink(chart_link) == str(devices["null"])
    assert_devices_intact(devices)
    assert os.readlink(link) == str(target), "the link itself must stay a link"
    assert len(target.read_text().splitlines()) == FRAMES, "its target gets the new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == [
        "chart.png",
        "dev",
        "frames.jsonl",
        "null.jsonl",
        "real",
    ]
    assert os.listdir(target.parent) == ["frames.jsonl"]


@pytest.mark.parametrize(
    ("option", "name", "message"),
    [
        ("--save", "out.mp4", "cannot write {}: " + ENOSPC),
        ("--save", "out.avi", "cannot write {}: " + ENOSPC),
        ("--json", "out.jsonl", "cannot write {}: " + ENOSPC),
        ("--events", "out.db", "cannot write event log {}: " + ENOSPC),
    ],
)
def test_a_disk_that_fills_up(
    clip: Path, tiny_disk: Path, option: str, name: str, message: str
) -> None:
    filler = fill(tiny_disk, leave=4096)  # one block: room to start, not to finish
    out = tiny_disk / name
    proc = run_cli("detect", "--source", str(clip), "--no-show", option, str(out))
    assert_failed_cleanly(proc, tiny_disk, message.format(out), {filler})


def test_a_full_disk_is_refused_up_front(clip: Path, tiny_disk: Path) -> None:
    filler = fill(tiny_disk, leave=0)
    for option, name in (("--json", "a.jsonl"), ("--save", "a.mp4"), ("--events", "a.db")):
        out = tiny_disk / name
        proc = run_cli("detect", "--source", str(clip), "--no-show", option, str(out))
        assert_failed_cleanly(proc, tiny_disk, f"{out}: {ENOSPC}", {filler})


def test_a_read_only_file_system(clip: Path, event_log: Path, tiny_disk: Path) -> None:
    shutil.copy(event_log, tiny_disk / "events.db")
    (tiny_disk / "empty.db").touch()
    read_only(tiny_disk)
    keep = {"events.db", "empty.db"}
    runs = [
        (("--source", str(THREE_FACES), "--save", "a.jpg"), "cannot write {}/a.jpg: "),
        (("--source", str(clip), "--save", "a.mp4"), "cannot write {}/a.mp4: "),
        (("--source", str(clip), "--save", "sub/a.avi"), "cannot write {}/sub/a.avi: "),
        (("--source", str(clip), "--json", "a.jsonl"), "cannot write {}/a.jsonl: "),
        (("--source", str(clip), "--events", "new.db"), "cannot write event log {}/new.db: "),
        (("--source", str(clip), "--events", "events.db"), "event log {}/events.db: "),
    ]
    for (source, path, option, name), message in runs:
        out = str(tiny_disk / name)
        proc = run_cli("detect", source, path, "--no-show", option, out)
        assert_failed_cleanly(proc, tiny_disk, message.format(tiny_disk) + EROFS, keep)
    proc = run_cli("stats", str(tiny_disk / "events.db"), "--plot", str(tiny_disk / "c.png"))
    assert "total" in proc.stdout, "the table is still printed"
    assert_failed_cleanly(proc, tiny_disk, f"cannot write {tiny_disk}/c.png: {EROFS}", keep)


def _sqlite_file(path: Path, schema: str) -> Path:
    """An SQLite database at `path` made by running `schema`."""
    import sqlite3

    db = sqlite3.connect(path)
    db.executescript(schema)
    db.close()
    return path


def test_another_programs_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """It was given maskwatch's tables and switched to WAL before the check failed (or, with no
    `events` table of its own, silently became a log)."""
    for name, schema in (
        ("other.db", "CREATE TABLE events(x); CREATE TABLE runs(y);"),
        ("notes.db", "CREATE TABLE notes(x);"),
        (
            "kv.db",
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES"
            " ('version', '7');",
        ),
        ("wide.db", "CREATE TABLE meta(k, v, w);"),
        ("view.db", "CREATE VIEW v AS SELECT 1;"),
    ):
        path = _sqlite_file(tmp_path / name, schema)
        before = path.read_bytes()
        proc = run_cli("detect", "--source", str(THREE_FACES), "--no-show", "--events", str(path))
        message = f"{path}: not a maskwatch event log (it holds another program's data); left as"
        assert_failed_cleanly(proc, tmp_path, message, {name})
        assert path.read_bytes() == before
        path.unlink()
    # An empty file, or the empty meta of a set-up that was cut short, becomes a log.
    for name, schema in (
        ("empty.db", ""),
        ("cut.db", "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"),
    ):
        path = _sqlite_file(tmp_path / name, schema)
        proc = run_cli("detect", "--source", str(THREE_FACES), "--no-show", "--events", str(path))
        assert proc.returncode == 0, proc.stderr


def test_stats_never_writes_into_a_file_that_is_not_a_log(tmp_path: Path) -> None:
    for name, content in (("empty.db", b""), ("notes.txt", b"not a log\n" * 50)):
        path = tmp_path / name
        path.write_bytes(content)
        proc = run_cli("stats", str(path))
        assert_failed_cleanly(proc, tmp_path, f"{path}: not a maskwatch event log", {name})
        assert path.read_bytes() == content
        path.unlink()


def test_a_full_device(clip: Path, event_log: Path, devices: dict[str, Path]) -> None:
    full = str(devices["full"])
    for args in (
        ("detect", "--source", str(clip), "--no-show", "--json", full),
        ("detect", "--source", str(clip), "--no-show", "--save", full),
        ("detect", "--source", str(THREE_FACES), "--no-show", "--save", full),
        ("stats", str(event_log), "--plot", full),
    ):
        proc = run_cli(*args)
        assert_one_line_error(proc, f"cannot write {full}: {ENOSPC}")
        assert "wrote" not in proc.stderr
    as_mp4 = devices["null"].parent.parent / "full.mp4"  # H.264, encoded, then copied in
    as_mp4.symlink_to(full)
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--save", str(as_mp4))
    assert_one_line_error(proc, f"cannot write {as_mp4}: {ENOSPC}")
    assert os.readlink(as_mp4) == full
    assert_devices_intact(devices)


def test_a_folder_is_not_replaced_by_a_file(clip: Path, event_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "folder"
    out.mkdir()
    for args in (
        ("detect", "--source", str(clip), "--no-show", "--json", str(out)),
        ("detect", "--source", str(clip), "--no-show", "--events", str(out)),
        ("stats", str(event_log), "--plot", str(out)),
    ):
        proc = run_cli(*args)
        assert_failed_cleanly(proc, tmp_path, f"{out}: Is a directory", {"folder"})
    assert os.listdir(out) == []


def test_not_a_regular_file_for_an_event_log(clip: Path, devices: dict[str, Path]) -> None:
    null = devices["null"]
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--events", str(null))
    assert_one_line_error(proc, f"cannot use {null} as an event log: not a regular file")
    assert_devices_intact(devices)


def _file_size_limit(limit: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize(
    ("option", "name", "message"),
    [
        ("--save", "out.mp4", "cannot write {}: " + EFBIG),
        ("--json", "out.jsonl", "cannot write {}: " + EFBIG),
        ("--events", "out.db", "cannot write event log {}: " + EFBIG),
    ],
)
def test_a_file_size_limit(
    clip: Path, tmp_path: Path, detector: object, option: str, name: str, message: str
) -> None:
    # `detector` fetched the face model into the cache first: the limit would stop that too.
    out = tmp_path / name
    proc = subprocess.run(
        cli("detect", "--source", str(clip), "--no-show", option, str(out)),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_file_size_limit(4096),
    )
    assert_failed_cleanly(proc, tmp_path, message.format(out), set())


def test_the_opencv_writer_without_pyav_fails_as_cleanly(
    clip: Path, tmp_path: Path, tiny_disk: Path, devices: dict[str, Path], detector: object
) -> None:
    """Where PyAV cannot be imported, .mp4 is OpenCV's mp4v: a disk that fills up, a file-size
    limit and a full device are still one line each and leave nothing behind."""
    env = without_pyav(tmp_path / "env")
    filler = fill(tiny_disk, leave=4096)
    out = tiny_disk / "out.mp4"
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--save", str(out), env=env)
    assert_failed_cleanly(proc, tiny_disk, f"cannot write {out}: {ENOSPC}", {filler})

    folder = tmp_path / "limited"
    folder.mkdir()
    out = folder / "out.mp4"
    proc = subprocess.run(
        cli("detect", "--source", str(clip), "--no-show", "--save", str(out)),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        preexec_fn=_file_size_limit(4096),
    )
    assert_failed_cleanly(proc, folder, f"cannot write {out}: {EFBIG}", set())

    full = tmp_path / "full.mp4"
    full.symlink_to(devices["full"])
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--save", str(full), env=env)
    assert_one_line_error(proc, f"cannot write {full}: {ENOSPC}")
    assert_devices_intact(devices)


def test_a_folder_without_write_permission(clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    # Root ignores permission bits unless it drops the capabilities that let it.
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if shutil.which("setpriv") is None or subprocess.run([*drop, "true"]).returncode != 0:
        pytest.skip("setpriv cannot drop CAP_DAC_OVERRIDE here")
    for option, name, message in (
        ("--save", "a.mp4", "cannot write {}: "),
        ("--json", "a.jsonl", "cannot write {}: "),
        ("--events", "a.db", "cannot write event log {}: "),
    ):
        out = folder / name
        proc = subprocess.run(
            [*drop, *cli("detect", "--source", str(clip), "--no-show", option, str(out))],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert_failed_cleanly(proc, folder, message.format(out) + EACCES, set())


def test_mqtt_events_that_never_reached_the_broker_fail_the_run(clip: Path, tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "events.db"
    proc = run_cli(
        "detect", "--source", str(clip), "--no-show", "--events", str(log),
        "--mqtt", f"mqtt://127.0.0.1:{port}/site/door",
    )  # fmt: skip
    assert_one_line_error(
        proc, "events were not sent to the MQTT broker", f"127.0.0.1:{port}", "never answered"
    )
    proc = run_cli("stats", str(log))
    assert proc.returncode == 0, proc.stderr
    assert "total" in proc.stdout, "the events were still logged locally"


def test_an_output_is_never_one_of_the_inputs(tmp_path: Path) -> None:
    """`--save in.jpg` once replaced the photo being read with its annotated copy."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = folder / "in.jpg"
    shutil.copy(THREE_FACES, photo)
    (folder / "sub").mkdir()
    shutil.copy(THREE_FACES, folder / "sub" / "b.jpg")
    (tmp_path / "alias.jpg").symlink_to(photo)
    original = photo.read_bytes()
    single = ("detect", "--source", str(photo), "--no-show")
    for args, message in (
        ((*single, "--save", str(photo)), f"--save {photo} is the input {photo}"),
        ((*single, "--json", str(photo)), f"--json {photo} is the input {photo}"),
        ((*single, "--events", str(photo)), f"--events {photo} is the input {photo}"),
        ((*single, "--save", str(tmp_path / "alias.jpg")), "alias.jpg is the input"),
        (
            ("detect", "--source", str(folder), "--no-show", "--save", str(folder)),
            f"--save {folder}: {photo} is one of the inputs (a folder being read holds it)",
        ),
        (
            ("detect", "--source", str(folder / "sub"), "--no-show", "--save", str(folder / "sub")),
            f"--save {folder / 'sub'}: {folder}/sub/b.jpg is one of the inputs (a folder being",
        ),
    ):
        proc = run_cli(*args)
        assert_one_line_error(proc, message, "writing there would destroy it")
        assert photo.read_bytes() == original
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "in.jpg",
        "sub",
        "sub/b.jpg",
    ]
    proc = run_cli("detect", "--source", str(folder), "--no-show", "--save", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["b.jpg", "in.jpg"]


def test_two_outputs_that_are_one_file_are_refused_before_the_work(tmp_path: Path) -> None:
    """`--json x --events x` once replaced the event log with JSON lines and exited 0."""
    out = tmp_path / "out.db"
    (tmp_path / "alias.jsonl").symlink_to(out)
    single = ("detect", "--source", str(THREE_FACES), "--no-show")
    for args, message in (
        (("--json", str(out), "--events", str(out)), "--json and --events are the same file"),
        (
            ("--save", str(out), "--json", str(tmp_path / ".." / tmp_path.name / "out.db")),
            "--save and --json",
        ),
        (("--events", str(out), "--json", str(tmp_path / "alias.jsonl")), "--json and --events"),
    ):
        proc = run_cli(*single, *args)
        assert_one_line_error(proc, message, "choose another name for one")
        assert sorted(os.listdir(tmp_path)) == ["alias.jsonl"], "refused before anything"
    out.write_bytes(b"")  # an existing file, named through the link as well
    proc = run_cli(*single, "--events", str(out), "--json", str(tmp_path / "alias.jsonl"))
    assert_one_line_error(proc, "--json and --events are the same file")
    proc = run_cli(*single, "--events", str(out), "--json", f"{out}-wal")  # SQLite's own file
    assert_one_line_error(proc, "--json and --events' -wal file are the same file")


def test_a_descriptor_path_to_a_regular_file_counts_as_that_file(tmp_path: Path) -> None:
    """`--json /dev/fd/3 --save o.jpg 3>o.jpg`: the JSON went into the file --save replaced."""
    photo = tmp_path / "o.jpg"
    with open(photo, "wb") as held:
        proc = subprocess.run(
            [sys.executable, "-m", "maskwatch.cli", "detect", "--source", str(THREE_FACES),
             "--no-show", "--json", f"/dev/fd/{held.fileno()}", "--save", str(photo)],
            pass_fds=(held.fileno(),), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert_one_line_error(proc, "--save and --json are the same file")
    with open(photo, "wb") as held:  # `--json - --save /dev/fd/3 > o.jpg 3>&1`
        proc = subprocess.run(
            [sys.executable, "-m", "maskwatch.cli", "detect", "--source", str(THREE_FACES),
             "--no-show", "--json", "-", "--save", f"/dev/fd/{held.fileno()}"],
            pass_fds=(held.fileno(),), stdout=held, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert_one_line_error(proc, "--save and --json are the same file")
    assert photo.stat().st_size == 0


def test_standard_output_redirected_to_an_input_or_a_saved_image_is_refused(
    tmp_path: Path,
) -> None:
    """`--json - >> photo.jpg` appended the JSON to the photo being read; `--json - --save sd >
    sd/photo.jpg` had the image's rename replace every JSON line, and exited 0."""
    photo = tmp_path / "photo.jpg"
    shutil.copy(THREE_FACES, photo)
    command = cli("detect", "--source", str(photo), "--no-show", "--json", "-")
    with open(photo, "ab") as appended:
        proc = subprocess.run(command, stdout=appended, stderr=subprocess.PIPE, text=True,
                              timeout=120)  # fmt: skip
    assert_one_line_error(proc, f"--json - (standard output) is the input {photo}")
    assert photo.read_bytes() == THREE_FACES.read_bytes()
    saved = tmp_path / "sd"
    saved.mkdir()
    with open(saved / photo.name, "wb") as redirected:
        proc = subprocess.run([*command, "--save", str(saved)], stdout=redirected,
                              stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    assert_one_line_error(proc, f"--save {saved}: {saved / photo.name} is the --json output")


def test_a_save_folder_does_not_write_over_another_output(tmp_path: Path) -> None:
    """`--save sf --json sf/photo.jpg`: the annotated photo replaced the JSON lines (or the
    other way round), and both were said to be written."""
    out = tmp_path / "sf"
    proc = run_cli(
        "detect", "--source", str(THREE_FACES), "--no-show", "--save", str(out),
        "--json", str(out / THREE_FACES.name),
    )  # fmt: skip
    assert_one_line_error(
        proc, f"--save {out}: {out / THREE_FACES.name} is the --json output", "another folder"
    )
    assert "wrote" not in proc.stderr


def test_a_loop_of_links_is_an_error_not_replaced(
    clip: Path, event_log: Path, tmp_path: Path
) -> None:
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(tmp_path / "back.jpg")
    (tmp_path / "back.jpg").symlink_to(loop)
    eloop = os.strerror(errno.ELOOP)
    for args in (
        ("detect", "--source", str(clip), "--no-show", "--json", str(loop)),
        ("detect", "--source", str(THREE_FACES), "--no-show", "--save", str(loop)),
        ("detect", "--source", str(clip), "--no-show", "--save", str(loop)),
        ("detect", "--source", str(clip), "--no-show", "--events", str(loop)),
        ("stats", str(event_log), "--plot", str(loop)),
    ):
        proc = run_cli(*args)
        assert_one_line_error(proc, f"cannot write {loop}: {eloop}")
        assert os.readlink(loop) == str(tmp_path / "back.jpg"), args
        assert sorted(os.listdir(tmp_path)) == ["back.jpg", "loop.jpg"], args


def test_folders_made_for_outputs_go_when_nothing_was_written(
    clip: Path, tmp_path: Path, tiny_disk: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).symlink_to(THREE_FACES)
    filler = fill(tiny_disk, leave=0)
    for source, option, out in (
        (photos, "--save", tiny_disk / "annotated"),
        (photos / "a.jpg", "--save", tiny_disk / "new" / "sub" / "a.jpg"),
        (clip, "--save", tiny_disk / "new" / "sub" / "a.mp4"),
        (clip, "--json", tiny_disk / "new" / "frames.jsonl"),
        (clip, "--events", tiny_disk / "new" / "events.db"),
    ):
        proc = run_cli("detect", "--source", str(source), "--no-show", option, str(out))
        assert_failed_cleanly(proc, tiny_disk, ENOSPC, {filler})


def test_an_event_log_we_may_not_open_says_permission_denied(
    clip: Path, event_log: Path, tmp_path: Path
) -> None:
    """SQLite says only "unable to open database file"."""
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if shutil.which("setpriv") is None or subprocess.run([*drop, "true"]).returncode != 0:
        pytest.skip("setpriv cannot drop CAP_DAC_OVERRIDE here")
    locked = tmp_path / "events.db"
    shutil.copy(event_log, locked)
    locked.chmod(0)
    for args, message in (
        (("stats", str(locked)), f"cannot read event log {locked}: {EACCES}"),
        (
            ("detect", "--source", str(clip), "--no-show", "--events", str(locked)),
            f"cannot write event log {locked}: {EACCES}",
        ),
    ):
        proc = subprocess.run([*drop, *cli(*args)], capture_output=True, text=True, timeout=120)
        assert_failed_cleanly(proc, tmp_path, message, {"events.db"})


def test_serve_refuses_a_recording_folder_it_cannot_write(clip: Path, tiny_disk: Path) -> None:
    full = tiny_disk / "full"
    full.mkdir()
    filler = fill(tiny_disk, leave=0)
    serve = ("serve", "--port", str(free_port()), "--source", str(clip), "--save", str(full))
    proc = run_cli(*serve, timeout=60)  # the old code served on, its camera failing
    assert_one_line_error(proc, f"--save {full}: cannot write there: {ENOSPC}")
    (tiny_disk / filler).unlink()
    read_only(tiny_disk)
    assert_one_line_error(
        run_cli(*serve, timeout=60), f"--save {full}: cannot write there: {EROFS}"
    )


def _save_args(source: Path, out: Path | str) -> tuple[str, ...]:
    return ("detect", "--source", str(source), "--no-show", "--save", str(out))


def _save(source: Path, out: Path | str) -> subprocess.CompletedProcess[str]:
    return run_cli(*_save_args(source, out))


def test_a_save_name_with_a_trailing_slash_is_a_folder_never_a_file(
    clip: Path, tmp_path: Path
) -> None:
    """`--save y.mp4/` once wrote the file y.mp4: a name that says both is refused."""
    for source, name in ((clip, "y.mp4/"), (THREE_FACES, "y.jpg/"), (THREE_FACES, "y.mkv/.")):
        proc = _save(source, f"{tmp_path}/{name}")
        stem = name.split("/")[0]
        assert_one_line_error(proc, f"{tmp_path}/{stem}/ names a folder, but {stem} is named like")
    assert os.listdir(tmp_path) == []
    proc = _save(THREE_FACES, f"{tmp_path}/out/")
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path / "out") == [THREE_FACES.name]


def test_a_json_or_event_log_name_with_a_trailing_slash_is_refused(tmp_path: Path) -> None:
    """`--json out/new.jsonl/` once wrote the file new.jsonl and exited 0."""
    for command, option, name in (
        (("detect", "--source", str(THREE_FACES), "--no-show"), "--json", "new.jsonl/"),
        (("detect", "--source", str(THREE_FACES), "--no-show"), "--events", "log.db/"),
        (("classify", str(THREE_FACES)), "--json", "x.jsonl/."),
    ):
        proc = run_cli(*command, option, f"{tmp_path}/{name}")
        assert_one_line_error(proc, f"{tmp_path}/{name} names a folder: give a file name")
    assert os.listdir(tmp_path) == []


def test_a_snapshots_folder_that_is_a_loop_or_a_dangling_link_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    """It failed at the first snapshot, mid-run."""
    (tmp_path / "loop").symlink_to(tmp_path / "back")
    (tmp_path / "back").symlink_to(tmp_path / "loop")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    for name, reason in (
        ("loop", "a loop of symbolic links"),
        ("gone", "a link to nothing"),
        ("loop/sub", f"{tmp_path / 'loop'} is a loop of symbolic links"),
        ("gone/sub", f"{tmp_path / 'gone'} is a link to nothing"),
    ):
        proc = run_cli(
            "detect", "--source", str(THREE_FACES), "--no-show",
            "--events", str(tmp_path / "log.db"), "--snapshots", str(tmp_path / name),
        )  # fmt: skip
        assert_one_line_error(proc, f"cannot write snapshots to {tmp_path / name}: {reason}")
    assert sorted(os.listdir(tmp_path)) == ["back", "gone", "loop"]


def test_a_link_named_for_another_format_is_refused_and_one_alike_is_written_through(
    clip: Path, tmp_path: Path
) -> None:
    """`--save link.mkv` to target.mp4 once wrote Matroska into target.mp4."""
    target = tmp_path / "target.mp4"
    target.write_bytes(b"old")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"old")
    for source, link, to in ((clip, "link.mkv", target), (THREE_FACES, "link.png", photo)):
        (tmp_path / link).symlink_to(to)
        proc = _save(source, tmp_path / link)
        theirs = to.suffix
        assert_one_line_error(
            proc,
            f"{tmp_path / link} is a link to {to}: a {Path(link).suffix} file would be written "
            f"into a {theirs} one; save to {to} or to a link that ends in {theirs}",
        )
        assert to.read_bytes() == b"old" and os.readlink(tmp_path / link) == str(to)
    for source, link, to in ((clip, "alike.MP4", target), (THREE_FACES, "alike.jpeg", photo)):
        (tmp_path / link).symlink_to(to)
        proc = _save(source, tmp_path / link)
        assert proc.returncode == 0, proc.stderr
        assert os.readlink(tmp_path / link) == str(to), "the link stays; its target is replaced"
    assert video_codec(target) == ("h264", FRAMES)
    assert cv2.imread(str(photo)) is not None
    assert sorted(os.listdir(tmp_path)) == [
        "alike.MP4", "alike.jpeg", "link.mkv", "link.png", "photo.jpg", "target.mp4"
    ]  # fmt: skip


def _staged_run(dest: Path, outputs: dict[str, bytes]) -> None:
    from maskwatch.atomic import staged_folder

    with staged_folder(dest, list(outputs)) as stage:
        for name, data in outputs.items():
            (stage / name).write_bytes(data)


def test_a_staged_output_folder_that_cannot_take_every_file_keeps_the_old_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third of four files cannot be put in place (a mount point, a file another user owns
    in a sticky folder): the two already moved go back and the old run's files stay as they
    were, with nothing else left."""
    from maskwatch.errors import OutputError

    out = tmp_path / "run"
    out.mkdir()
    old = {"a.onnx": b"old model", "b.json": b"old meta", "c.md": b"old report", "d.csv": b"x"}
    for name, data in old.items():
        (out / name).write_bytes(data)
    rename = os.rename

    def busy(src: str | Path, dst: str | Path) -> None:
        if str(src) == str(out / "c.md"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        rename(src, dst)

    monkeypatch.setattr(os, "rename", busy)
    new = {name: b"new " + data for name, data in old.items()}
    with pytest.raises(OutputError, match=f"cannot write {out / 'c.md'}: Device or resource busy"):
        _staged_run(out, new)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def test_a_stage_a_killed_run_left_is_removed_and_a_running_ones_kept(tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "run"
    abandoned, running = out / ".maskwatch-dead.part", out / ".maskwatch-live.part"
    for stage in (abandoned, running):
        stage.mkdir(parents=True)
        (stage / "mask_classifier.onnx").write_bytes(b"half a model")
    held = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        _staged_run(out, {"report.md": b"new"})
        assert sorted(p.name for p in out.iterdir()) == [running.name, "report.md"]
    finally:
        os.close(held)


def test_a_link_to_nothing_in_an_output_folders_path_is_one_line(tmp_path: Path) -> None:
    from maskwatch.errors import OutputError

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    for link in ("a", "gone", "gone/sub"):
        with pytest.raises(OutputError, match=r"is a link to nothing"):
            _staged_run(tmp_path / link, {"report.md": b"new"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "gone"]


def test_an_interrupted_or_failed_putting_back_loses_no_earlier_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C raised amid the renames undoes them all; a file that cannot be put back after a
    failure stays in the kept stage, which the next run into the folder puts back."""
    from maskwatch.errors import OutputError

    out = tmp_path / "run"
    out.mkdir()
    old = {"a.onnx": b"old model", "b.json": b"old meta", "c.md": b"old report"}
    for name, data in old.items():
        (out / name).write_bytes(data)
    new = {name: b"new " + data for name, data in old.items()}
    rename = os.rename

    def failing(at: str, error: BaseException, then: str | None = None) -> None:
        def fake(src: str | Path, dst: str | Path) -> None:
            if str(src) == str(out / at) or (then and str(dst) == str(out / then)):
                raise error
            rename(src, dst)

        monkeypatch.setattr(os, "rename", fake)

    failing("c.md", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _staged_run(out, new)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old

    failing("c.md", OSError(errno.EBUSY, "busy"), then="b.json")  # b.json cannot go back
    with pytest.raises(OutputError, match=r"b\.json could not be put back: the earlier"):
        _staged_run(out, new)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.onnx", "c.md"]
    _staged_run(out, {"d.csv": b"next run"})  # puts b.json back, then writes its own
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {**old, "d.csv": b"next run"}


def test_one_image_file_for_several_images_is_refused_before_the_run(tmp_path: Path) -> None:
    """`--save one.jpg` on a folder of photos wrote each over the last and said "wrote one.jpg"."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(THREE_FACES, photos / name)
    for source in (str(photos), f"{photos}/*.jpg"):
        proc = run_cli("detect", "--source", source, "--no-show", "--save", f"{tmp_path}/one.jpg")
        assert_one_line_error(proc, "one image file cannot hold the source's 2 files")
    assert not (tmp_path / "one.jpg").exists()
    proc = _save(photos / "a.jpg", tmp_path / "one.jpg")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "one.jpg").is_file()


def _two_photos(folder: Path) -> list[Path]:
    """Two different photos in `folder` (the second the first mirrored), in source order."""
    folder.mkdir()
    shutil.copy(THREE_FACES, folder / "a.jpg")
    cv2.imwrite(str(folder / "b.jpg"), cv2.flip(cv2.imread(str(THREE_FACES)), 1))
    return [folder / "a.jpg", folder / "b.jpg"]


def test_a_fifo_gets_every_image_as_one_stream(tmp_path: Path) -> None:
    """The images of a folder saved into a FIFO reach its reader, who reads to the end, as one
    stream. Each image opened the FIFO anew: the reader ended at the first one's end, and the
    second open waited for a reader for ever."""
    photos = _two_photos(tmp_path / "photos")
    proc = _save(tmp_path / "photos", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    expected = b"".join((tmp_path / "out" / p.name).read_bytes() for p in photos)
    fifo = tmp_path / "ff.jpg"
    received = _through_fifo(fifo, lambda: run_cli(*_save_args(photos[0].parent, fifo), timeout=60))
    assert len(received) == len(expected) and received == expected


def test_a_fifo_nobody_reads_is_one_line_at_once(clip: Path, tmp_path: Path) -> None:
    """`--save FIFO` (images or a video) and `--json FIFO` with no reader: one line and a failed
    run, not a run that waits for ever (and that SIGTERM could not end)."""
    photos = _two_photos(tmp_path / "photos")
    fifo = tmp_path / "ff.jpg"
    os.mkfifo(fifo)
    proc = run_cli(*_save_args(photos[0].parent, fifo), timeout=60)
    assert_one_line_error(proc, f"cannot write {fifo}: a pipe that nothing reads")
    proc = run_cli("detect", "--source", str(photos[0]), "--no-show", "--json", str(fifo),
                   timeout=60)  # fmt: skip
    assert_one_line_error(proc, f"cannot write {fifo}: a pipe that nothing reads")
    video = tmp_path / "ff.avi"
    os.mkfifo(video)
    proc = run_cli("detect", "--source", str(clip), "--no-show", "--save", str(video), timeout=60)
    assert_one_line_error(proc, f"cannot write {video}: a pipe that nothing reads")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISFIFO(os.stat(video).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["ff.avi", "ff.jpg", "photos"]


def test_several_images_into_a_device(tmp_path: Path, devices: dict[str, Path]) -> None:
    """A null device and stdout each take every image of a folder, in turn."""
    photos = _two_photos(tmp_path / "photos")
    proc = run_cli(*_save_args(photos[0].parent, devices["null"]))
    assert proc.returncode == 0, proc.stderr
    proc = _save(photos[0].parent, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    expected = b"".join((tmp_path / "out" / p.name).read_bytes() for p in photos)
    piped = run(*_save_args(photos[0].parent, devices["stdout"]))
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == expected
    assert_devices_intact(devices)


def _blocked_writing(pid: int, limit_s: float = 90) -> bool:
    """Wait until process `pid` waits in the kernel to write into a full pipe."""
    wchan = Path(f"/proc/{pid}/wchan")
    for _ in range(int(limit_s * 10)):
        if not wchan.exists():
            return False
        if "pipe_write" in wchan.read_text():
            return True
        threading.Event().wait(0.1)
    return False


def _stopped_on_a_stalled_pipe(fifo: Path, args: Sequence[str], signum: int) -> str:
    """The stderr of `maskwatch ARGS` writing into `fifo`, which a reader holds open and never
    reads, stopped by `signum` once it is blocked there."""
    os.mkfifo(fifo)
    done = threading.Event()

    def hold_unread() -> None:
        with open(fifo, "rb"):
            done.wait(120)

    threading.Thread(target=hold_unread, daemon=True).start()
    detect = subprocess.Popen(cli(*args), stderr=subprocess.PIPE, text=True)
    try:
        assert _blocked_writing(detect.pid), "the run never filled the pipe"
        detect.send_signal(signum)
        return detect.communicate(timeout=30)[1]
    finally:
        detect.kill()
        done.set()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_a_run_blocked_on_a_pipe_nobody_drains(
    tmp_path: Path, signum: int
) -> None:
    """A FIFO whose reader never reads fills up; SIGTERM or Ctrl-C then still ends the run. They
    were held until the write ended, which it never did."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        shutil.copy(THREE_FACES, photos / f"{i}.jpg")
    fifo = tmp_path / "ff.jpg"
    stderr = _stopped_on_a_stalled_pipe(fifo, _save_args(photos, fifo), signum)
    assert "Traceback" not in stderr
    assert "; finishing outputs" in stderr, stderr


def test_save_to_stdout_appended_to_a_file_adds_to_it(tmp_path: Path) -> None:
    """`--save /dev/stdout >> file`: the image was written over the file from its start."""
    out = tmp_path / "log.bin"
    out.write_bytes(b"earlier output\n")
    with open(out, "ab") as appended:
        proc = subprocess.run(
            [sys.executable, "-m", "maskwatch.cli", "-q", "detect", "--source", str(THREE_FACES),
             "--no-show", "--save", "/dev/stdout"],
            stdout=appended, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data.startswith(b"earlier output\n\xff\xd8")  # then the annotated JPEG, whole
    assert cv2.imdecode(np.frombuffer(data[15:], np.uint8), cv2.IMREAD_COLOR) is not None


def test_a_fifo_whose_reader_goes_away_mid_run_is_one_line_not_a_quiet_success(
    tmp_path: Path,
) -> None:
    """A reader that takes 100 bytes and leaves: the run exited 0 without a word, and the
    --json file asked for beside it was silently thrown away."""
    photos = _two_photos(tmp_path / "photos")
    fifo = tmp_path / "ff.jpg"
    os.mkfifo(fifo)

    def read_a_little() -> None:
        with open(fifo, "rb") as pipe:
            pipe.read(100)

    reader = threading.Thread(target=read_a_little, daemon=True)
    reader.start()
    proc = run_cli(*_save_args(photos[0].parent, fifo), "--json", str(tmp_path / "r.jsonl"),
                   timeout=60)  # fmt: skip
    reader.join(30)
    assert_one_line_error(proc, f"cannot write {fifo}: its reader went away before the end")
    assert not (tmp_path / "r.jsonl").exists()


def test_a_stop_signal_while_a_video_goes_into_a_stalled_pipe_closes_every_output(
    clip: Path, tmp_path: Path
) -> None:
    """The video is written into its pipe at the end; SIGTERM there escaped the closing of the
    other outputs: the --json file was left half-written under its temporary name."""
    fifo = tmp_path / "ff.avi"
    args = ("detect", "--source", str(clip), "--no-show", "--save", str(fifo),
            "--json", str(tmp_path / "r.jsonl"))  # fmt: skip
    stderr = _stopped_on_a_stalled_pipe(fifo, args, signal.SIGTERM)
    assert "Traceback" not in stderr and "terminated" in stderr, stderr
    assert sorted(os.listdir(tmp_path)) == ["ff.avi"], "a temporary file was left"


def test_json_to_a_closed_standard_output_says_so(tmp_path: Path) -> None:
    """`--json - >&-` said "-: written after close"."""
    command = shlex.join(cli("detect", "--source", str(THREE_FACES), "--no-show", "--json", "-"))
    proc = subprocess.run(f"{command} >&-", shell=True, capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, "--json -: standard output is closed")
