"""One watch loop for every front end: `detect`, a server camera and a browser session given
the same frames make the same events, and a watch closes every output whatever the others do."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from conftest import panning_frames, wait_for
from maskwatch.alerts import AlertSettings
from maskwatch.cli import main
from maskwatch.errors import OutputError
from maskwatch.events import Event, EventLog
from maskwatch.sinks import JsonLinesSink
from maskwatch.types import APPEAR, LEAVE, SETTLE, Frame, FrameResult, Mode
from maskwatch.watch import Callback, Watch, WatchSettings

Seen = list[tuple[str, int, str | None]]


@pytest.fixture(scope="module")
def lossless(tmp_path_factory: pytest.TempPathFactory, three_faces: np.ndarray) -> Path:
    """Three people for 24 frames, then an empty scene for 18 (they leave before the end),
    in FFV1: every reader gets exactly the pixels the browser session is sent."""
    out = tmp_path_factory.mktemp("watch") / "come_and_go.avi"
    frames = panning_frames(three_faces, 24) + [np.full((480, 640, 3), 90, np.uint8)] * 18
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"FFV1"), 15.0, (640, 480))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return out


def _video_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def _logged(db: Path, source: str) -> Seen:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT kind, track, label FROM events JOIN runs ON runs.id = events.run "
            "WHERE runs.source = ? ORDER BY events.id",
            (source,),
        ).fetchall()
    return [(kind, track, label) for kind, track, label in rows]


def _closed(seen: Seen) -> bool:
    kinds = [kind for kind, _, _ in seen]
    return bool(kinds) and kinds.count(APPEAR) == kinds.count(LEAVE)


def _alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_detect_a_server_camera_and_a_browser_session_make_the_same_events(
    lossless: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from maskwatch.web.app import ServeSettings, create_app

    alert_files = {name: tmp_path / f"{name}.jsonl" for name in ("detect", "camera")}
    command = "sh -c 'cat >> {}; echo >> {}'"
    detect_log = tmp_path / "detect.db"
    args = ["-q", "detect", "--source", str(lossless), "--no-show", "--events", str(detect_log)]
    path = alert_files["detect"]
    assert main([*args, "--alert-cmd", command.format(path, path)]) == 0
    by_detect = _logged(detect_log, str(lossless))

    serve_log = tmp_path / "serve.db"
    path = alert_files["camera"]
    settings = ServeSettings(
        sources=[str(lossless)],
        events=serve_log,
        watch=WatchSettings(alerts=AlertSettings(command=command.format(path, path))),
    )
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/ws/detect") as ws:
            for frame in _video_frames(lossless):
                ws.send_bytes(cv2.imencode(".png", frame)[1].tobytes())
                assert "faces" in json.loads(ws.receive_text())
        by_browser = wait_for(
            lambda: (seen := _logged(serve_log, "browser 1")) and _closed(seen) and seen,
            timeout=120,
            what="the browser session's events",
        )
        by_camera = wait_for(
            lambda: (seen := _logged(serve_log, "camera 1")) and _closed(seen) and seen,
            timeout=120,
            what="the server camera's events",
        )
        cameras = client.get("/api/v1/cameras").json()
        assert cameras[0]["frames"] == len(_video_frames(lossless)) and cameras[0]["error"] is None

    kinds = [kind for kind, _, _ in by_detect]
    assert kinds.count(APPEAR) == kinds.count(LEAVE) >= 3 and SETTLE in kinds
    assert by_camera == by_detect
    assert by_browser == by_detect
    # Alerts work for server cameras as for detect; only the camera's name tells them apart.
    from_detect = _alerts(alert_files["detect"])
    from_camera = wait_for(
        lambda: _alerts(alert_files["camera"]), timeout=120, what="the server camera's alert"
    )
    assert from_detect and "camera" not in from_detect[0]
    assert [{**a, "camera": None, "time": 0} for a in from_camera] == [
        {**a, "camera": None, "time": 0} for a in from_detect
    ]
    assert {a["camera"] for a in from_camera} == {"camera 1"}


class FailingOutput:
    """A frame output whose close fails (as a full disk would make it)."""

    def __init__(self) -> None:
        self.closed_ok: bool | None = None

    def write(self, result: FrameResult) -> None:
        pass

    def close(self, ok: bool = True) -> None:
        self.closed_ok = ok
        raise OutputError("cannot write out.mp4: No space left on device")


def test_a_watch_closes_every_output_and_raises_the_first_error(
    pipeline: Any, three_faces: np.ndarray, tmp_path: Path
) -> None:
    from maskwatch.pipeline import Pipeline
    from maskwatch.tracking import IoUTracker

    tracked = Pipeline(pipeline.detector, pipeline.classifier, IoUTracker(settle_frames=2))
    json_path, log_path = tmp_path / "r.jsonl", tmp_path / "events.db"
    seen: list[Event] = []
    closed: list[str] = []
    failing = FailingOutput()
    with pytest.raises(OutputError, match="No space left"), Watch(tracked, "door") as watch:
        watch.on_close(lambda: closed.append("source"))
        watch.add_events(EventLog(log_path, "door"))
        watch.add_events(Callback(seen.append))
        watch.add(JsonLinesSink(str(json_path)))
        watch.add(failing)  # closed first: the JSON lines after it are then discarded
        frames = panning_frames(three_faces, 4)
        watch.run(Frame(image, i, i / 15, "door") for i, image in enumerate(frames))
    assert failing.closed_ok is True
    assert not json_path.exists(), "a run that failed leaves no half-written output"
    assert closed == ["source"]
    kinds = [e.kind for e in seen]
    assert kinds.count(APPEAR) == kinds.count(LEAVE) >= 3, "open tracks leave at the end"
    assert {e.camera for e in seen} == {"door"}
    assert all(e.to_dict()["camera"] == "door" for e in seen)
    assert _logged(log_path, "door") == [(e.kind, e.track, e.label) for e in seen]


def test_blur_no_mask_hides_every_face_not_seen_wearing_a_mask(
    pipeline: Any, three_faces: np.ndarray
) -> None:
    from maskwatch.defaults import Blur
    from maskwatch.draw import blur_faces

    faces = pipeline.process(Frame(three_faces, 0, 0.0, "photo", Mode.PHOTO)).faces
    assert len(faces) == 3
    labels = ("mask", "uncertain", "no_mask")
    faces = faces.with_predictions(faces.probs, faces.classes, labels)
    blurred = blur_faces(three_faces, faces, Blur.NO_MASK)
    changed = [
        bool((blurred[y1:y2, x1:x2] != three_faces[y1:y2, x1:x2]).any())
        for x1, y1, x2, y2 in ((max(0, round(float(v))) for v in box) for box in faces.boxes)
    ]
    assert changed == [False, True, True]


def test_blur_modes_keep_their_command_line_strings(capsys: pytest.CaptureFixture[str]) -> None:
    from maskwatch.defaults import BLUR_CHOICES, Blur

    assert BLUR_CHOICES == ("none", "no_mask", "all") == tuple(Blur)
    assert WatchSettings(blur="no_mask").blur is Blur.NO_MASK  # type: ignore[arg-type]
    with pytest.raises(SystemExit):
        main(["detect", "x.jpg", "--blur", "faces"])
    assert "invalid choice: 'faces' (choose from 'none', 'no_mask', 'all')" in (
        capsys.readouterr().err
    )


def test_serve_takes_detects_watch_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--blur",
        "--settle-frames",
        "--alert-cmd",
        "--mqtt-publish",
        "--detect-video-side",
    ):
        assert option in text
    with pytest.raises(SystemExit) as refused:
        main(["serve", "--settle-frames", "0"])
    assert refused.value.code == 2
    assert "--settle-frames" in capsys.readouterr().err
