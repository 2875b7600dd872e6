"""The live window, for real, on a virtual X display (Xvfb): a labelled box shows, q quits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import render_video
from maskwatch.labels import COLOURS

pytestmark = pytest.mark.skipif(
    not (shutil.which("Xvfb") and shutil.which("xdotool") and shutil.which("import")),
    reason="needs Xvfb, xdotool and ImageMagick's import (installed by scripts/test)",
)


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        name = f":{f.readline().strip()}"
    deadline = time.monotonic() + 20
    while (
        subprocess.run(
            ["xdotool", "getdisplaygeometry"],
            env={**os.environ, "DISPLAY": name},
            capture_output=True,
        ).returncode
        != 0
    ):
        assert time.monotonic() < deadline and server.poll() is None, "Xvfb did not start"
        time.sleep(0.2)
    try:
        yield name
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for_window(env: dict[str, str], proc: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", "^maskwatch$"],
            env=env,
            capture_output=True,
            text=True,
        )
        if found.stdout.strip():
            return found.stdout.split()[0]
        time.sleep(0.2)
    raise AssertionError(
        f"no maskwatch window appeared: {proc.stderr.read() if proc.stderr else ''}"
    )


def test_window_shows_labelled_boxes_and_quits_on_q(
    display: str, tmp_path: Path, three_faces
) -> None:  # type: ignore[no-untyped-def]
    video = render_video(tmp_path / "long.mp4", three_faces, frames=600)
    env = {**os.environ, "DISPLAY": display}
    log = tmp_path / "frames.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "maskwatch.cli",
            "detect",
            "--source",
            str(video),
            "--json",
            str(log),
        ],
        env=env,
        text=True,
        stderr=subprocess.PIPE,
    )
    try:
        window = _wait_for_window(env, proc, timeout=60)
        time.sleep(2.0)
        shot = tmp_path / "screen.png"
        subprocess.run(["import", "-window", "root", str(shot)], env=env, check=True, timeout=30)
        subprocess.run(["xdotool", "key", "--window", window, "q"], env=env, check=True)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    screen = cv2.imread(str(shot))
    assert screen is not None
    label_pixels = sum(int(np.all(screen == colour, axis=2).sum()) for colour in COLOURS.values())
    assert label_pixels > 1500, "no labelled box visible in the window"
    frames = log.read_text().splitlines()
    assert 0 < len(frames) < 600, "q did not stop the run before the end of the video"
    assert json.loads(frames[-1])["faces"]
    keep = os.environ.get("MASKWATCH_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
