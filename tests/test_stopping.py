"""How the real command stops and what it refuses before it starts: SIGTERM (systemd, docker
stop) ends a run as Ctrl-C does, and a path starting with the home of a user who does not exist
is one line, never a traceback."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    DATASETS,
    assert_one_line_error,
    free_port,
    listening,
    render_video,
    run_cli,
    video_codec,
    wait_for,
)

NO_USER = "maskwatch-no-such-user"
CLIP_FRAMES = 300  # 20 s at 15 fps: far more than a run gets through before it is stopped


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, three_faces: np.ndarray) -> Path:
    folder = tmp_path_factory.mktemp("clip")
    return render_video(folder / "clip.mp4", three_faces, frames=CLIP_FRAMES, size=(320, 240))


def test_the_user_named_here_does_not_exist() -> None:
    with pytest.raises(KeyError):
        pwd.getpwnam(NO_USER)


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("detect", "--save"),
        ("detect", "--json"),
        ("detect", "--events"),
        ("detect", "--snapshots"),
        ("detect", "--source"),
        ("classify", "--json"),
        ("stats", "LOG"),
        ("demo", "--out"),
        ("train", "--out"),
        ("train", "--feature-cache"),
        ("train", "DATA"),
        ("evaluate", "DATA"),
    ],
)  # fmt: skip
def test_a_path_in_the_home_of_no_user_is_one_line(
    command: str, option: str, clip: Path, tmp_path: Path
) -> None:
    path = f"~{NO_USER}/out.jsonl"
    given = {
        "detect": ["--source", str(clip), "--no-show", "--json", str(tmp_path / "o.jsonl")],
        "classify": [str(clip.parent)],
        "stats": [],
        "demo": [],
        "train": [] if option == "DATA" else [str(DATASETS / "observations")],
        "evaluate": [],
    }[command]
    args = [path] if option in ("LOG", "DATA") else [option, path]
    proc = run_cli(command, *given, *args)
    assert_one_line_error(proc, f"{path}: no user {NO_USER} to find the home of")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("variable", ["MASKWATCH_HOME", "XDG_CACHE_HOME"])
def test_a_cache_in_the_home_of_no_user_is_one_line_naming_its_variable(variable: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MASKWATCH_HOME"}
    proc = run_cli("models", env={**env, variable: f"~{NO_USER}/cache"})
    assert_one_line_error(proc, f"${variable}=~{NO_USER}/cache: no user {NO_USER}")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stopped_run_completes_its_outputs_and_leaves_no_temporaries(
    stop: signal.Signals, clip: Path, tmp_path: Path
) -> None:
    json_out, saved = tmp_path / "o.jsonl", tmp_path / "o.mp4"
    detect = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "detect", "--source", str(clip), "--no-show",
         "--json", str(json_out), "--save", str(saved)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def writing() -> bool:
        parts = [p for p in tmp_path.iterdir() if ".part" in p.name]
        return any(p.suffix == ".jsonl" and p.stat().st_size > 0 for p in parts)

    try:
        wait_for(writing, 120, "the first frames written")
        detect.send_signal(stop)
        _, err = detect.communicate(timeout=120)
    finally:
        detect.kill()
    assert detect.returncode == 0, err
    assert "Traceback" not in err
    said = "terminated" if stop == signal.SIGTERM else "interrupted"
    assert f"{said}; finishing outputs" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl", "o.mp4"]
    frames = [json.loads(line)["frame"] for line in json_out.read_text().splitlines()]
    assert 0 < len(frames) < CLIP_FRAMES  # stopped mid-run, every line whole
    assert video_codec(saved)[1] == len(frames)


def _healthy(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _serve(port: int) -> subprocess.Popen[str]:
    """`maskwatch serve` on `port`, its error output kept for the test."""
    return subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("stop", "status", "line"),
    [
        (signal.SIGINT, 130, "maskwatch: interrupted"),
        (signal.SIGTERM, -signal.SIGTERM, "maskwatch: terminated"),  # ended by it, as before
    ],
    ids=["SIGINT", "SIGTERM"],
)
@pytest.mark.parametrize("when", ["starting", "serving", "serving, then Ctrl-C again"])
def test_serve_stops_with_one_line(when: str, stop: signal.Signals, status: int, line: str) -> None:
    """Loading its models (it listens first: a native module's import may be what is stopped)
    or serving (uvicorn's graceful shutdown): our line, no traceback, and the status of Ctrl-C,
    or of a process SIGTERM ended (which systemd counts as a clean stop). Ctrl-C again within a
    moment: the shutdown goes on, with a line saying so, instead of uvicorn's forced exit and
    Starlette's traceback."""
    pytest.importorskip("uvicorn")
    port = free_port()
    serve = _serve(port)
    ready = (lambda: listening(port)) if when == "starting" else (lambda: _healthy(port))
    try:
        wait_for(ready, 90, f"the server {when}")
        serve.send_signal(stop)
        if when.endswith("again"):
            time.sleep(0.05)
            serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=60)
    finally:
        serve.kill()
    assert serve.returncode == status, err
    assert "Traceback" not in err and "CancelledError" not in err
    again = "already stopping: open connections get at most 5 s" in err
    assert again == when.endswith("again"), err
    assert err.splitlines()[-1] == line, err


def test_uvicorns_own_lines_are_maskwatchs_one_line_form() -> None:
    """A request that is not HTTP made uvicorn print `WARNING:  Invalid HTTP request received.`
    in its own format."""
    import socket

    port = free_port()
    serve = _serve(port)
    try:
        wait_for(lambda: _healthy(port), 90, "the server serving")
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            client.recv(1024)
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=60)
    finally:
        serve.kill()
    assert "maskwatch: warning: Invalid HTTP request received." in err, err
    assert all(line.startswith("maskwatch: ") for line in err.splitlines()), err


@pytest.mark.parametrize("signals", [1, 3], ids=["once", "three times"])
def test_an_upload_still_arriving_when_serve_stops_gets_a_503(signals: int) -> None:
    """A photo dribbling in past the shutdown's 5 s grace (or when a third SIGTERM, all that
    systemd and docker send, stops the server at once): its client gets a JSON 503 and the
    server says so in one line, where uvicorn answered a plain 500 and printed a traceback."""
    import httpx

    port = free_port()
    serve = _serve(port)
    answers: list[httpx.Response] = []

    def dribble() -> Iterator[bytes]:
        head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        yield head
        for _ in range(200):
            time.sleep(0.1)
            yield b"\xff" * 100

    def upload() -> None:
        answers.append(httpx.post(
            f"http://127.0.0.1:{port}/api/v1/detect", content=dribble(), timeout=60,
            headers={"content-type": "multipart/form-data; boundary=b"},
        ))  # fmt: skip

    sender = threading.Thread(target=upload)
    try:
        wait_for(lambda: _healthy(port), 90, "the server serving")
        sender.start()
        time.sleep(1)
        for _ in range(signals):
            serve.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        _, err = serve.communicate(timeout=60)
        sender.join(timeout=60)
    finally:
        serve.kill()
    assert serve.returncode == -signal.SIGTERM, err
    assert "Traceback" not in err and "CancelledError" not in err, err
    assert "a request still running when the server stopped was cut off" in err
    assert answers[0].status_code == 503
    assert answers[0].json() == {"error": "the server is stopping"}
