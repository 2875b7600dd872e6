"""Speed without changing results: the watch detects the next frame on a worker thread while it
classifies the current one (same results, in order; errors still end the run as one line), and
`--realtime` plays a video at its own frame rate, dropping frames when processing falls behind."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import assert_one_line_error, panning_frames, render_video, run_cli
from maskwatch.errors import OutputError, SourceError
from maskwatch.events import Event
from maskwatch.pipeline import Pipeline
from maskwatch.sources import open_source
from maskwatch.tracking import IoUTracker
from maskwatch.types import Frame, FrameResult
from maskwatch.watch import Callback, Watch


class Recorder:
    """A frame output keeping each result's JSON; slow by `delay_s` a frame, failing at
    frame `fail_at`."""

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        self.results: list[dict[str, Any]] = []
        self.delay_s = delay_s
        self.fail_at = fail_at

    def write(self, result: FrameResult) -> None:
        if result.frame.index == self.fail_at:
            raise OutputError("cannot write out.jsonl: No space left on device")
        self.results.append(result.to_dict())
        time.sleep(self.delay_s)

    def close(self, ok: bool = True) -> None:
        pass


def _tracked(pipeline: Any) -> Pipeline:
    return Pipeline(pipeline.detector, pipeline.classifier, IoUTracker())


def _watch(pipeline: Pipeline, frames: Any, overlap: bool) -> tuple[list[Any], list[Event]]:
    recorder, events = Recorder(), []
    with Watch(pipeline, "door") as watch:
        watch.add(recorder)
        watch.add_events(Callback(events.append))
        watch.run(frames, overlap=overlap)
    return recorder.results, events


def test_overlapped_stages_give_the_sequential_results_in_order(pipeline: Any, video: Path) -> None:
    runs = [_watch(_tracked(pipeline), open_source(str(video)).frames(), o) for o in (False, True)]
    (alone, alone_events), (overlapped, overlapped_events) = runs
    assert [r["frame"] for r in overlapped] == list(range(30))
    assert overlapped == alone
    assert [e.to_dict() | {"time": 0} for e in overlapped_events] == [
        e.to_dict() | {"time": 0} for e in alone_events
    ]
    faces = [f for r in overlapped for f in r["faces"]]
    assert len(faces) >= 80
    assert any(f["classified"] for f in faces) and not all(f["classified"] for f in faces)


def test_an_error_reading_frames_ends_the_run_after_the_frames_before_it(
    pipeline: Any, three_faces: np.ndarray
) -> None:
    def frames() -> Iterator[Frame]:
        for i, image in enumerate(panning_frames(three_faces, 5)):
            yield Frame(image, i, i / 15, "door")
        raise SourceError("door dropped and did not come back after 5 attempts")

    recorder = Recorder()
    with pytest.raises(SourceError, match="did not come back"), Watch(_tracked(pipeline)) as w:
        w.add(recorder)
        w.run(frames())
    assert [r["frame"] for r in recorder.results] == [0, 1, 2, 3, 4]


def test_an_error_writing_a_result_stops_the_worker(pipeline: Any, video: Path) -> None:
    before = threading.active_count()
    recorder = Recorder(fail_at=3)
    with pytest.raises(OutputError, match="No space left"), Watch(_tracked(pipeline)) as watch:
        watch.add(recorder)
        watch.run(open_source(str(video)).frames())
    assert [r["frame"] for r in recorder.results] == [0, 1, 2]
    assert threading.active_count() == before


def test_a_video_that_cannot_be_read_is_one_line_from_the_worker(tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(b"not a video at all" * 100)
    proc = run_cli("detect", "--source", str(fake), "--no-show", "--json", "-")
    assert_one_line_error(proc, "clip.mp4", "not a readable video")


def test_realtime_plays_at_the_videos_frame_rate_and_says_when_it_ends(
    pipeline: Any, three_faces: np.ndarray, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 3 frames/s: a frame may come a third of a second late before it is dropped, which even
    # a loaded machine keeps to
    slow = render_video(tmp_path / "slow.mp4", three_faces, frames=6, fps=3.0)
    caplog.set_level(logging.INFO, logger="maskwatch")
    source = open_source(str(slow), realtime=True)
    start = time.monotonic()
    results, _ = _watch(_tracked(pipeline), source.frames(), overlap=True)
    assert time.monotonic() - start >= 5 / 3  # frame 5 is due 1.67 s after frame 0
    assert [r["frame"] for r in results] == list(range(6)) and source.dropped == 0
    assert f"{slow} ended after 6 frames" in caplog.text


def test_realtime_drops_frames_when_processing_falls_behind_and_says_so(
    pipeline: Any, three_faces: np.ndarray, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fast = render_video(tmp_path / "fast.mp4", three_faces, frames=30, fps=30.0)
    caplog.set_level(logging.INFO, logger="maskwatch")
    source = open_source(str(fast), realtime=True)
    recorder = Recorder(delay_s=0.1)  # 10 frames/s against the video's 30
    with Watch(_tracked(pipeline)) as watch:
        watch.add(recorder)
        watch.run(source.frames())
    shown = [r["frame"] for r in recorder.results]
    assert shown == sorted(shown) and shown[0] == 0 and len(shown) < 20
    assert source.dropped == 30 - len(shown)
    assert "dropping frames to keep up" in caplog.text
    assert f"({source.dropped} dropped to play in real time)" in caplog.text
    everything = open_source(str(fast))  # without --realtime every frame is processed
    assert len(_watch(_tracked(pipeline), everything.frames(), overlap=True)[0]) == 30


def test_ctrl_c_during_an_outputs_write_reaches_its_handler_after_the_write() -> None:
    import os
    import signal

    from maskwatch.atomic import interrupts_held

    before = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the signal has arrived; the write goes on
        done.append("written")
    assert done == ["written"]
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("realtime", [False, True])
def test_max_fps_spreads_a_videos_frames_over_its_own_time(
    three_faces: np.ndarray, tmp_path: Path, realtime: bool
) -> None:
    import json

    video = render_video(tmp_path / "v.mp4", three_faces, frames=12, fps=15.0)
    out = tmp_path / "out.jsonl"
    args = ["detect", "--source", str(video), "--no-show", "--json", str(out), "--max-fps", "5"]
    proc = run_cli(*args, *(["--realtime"] if realtime else []))
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line)["frame"] for line in out.read_text().splitlines()]
    assert frames == [0, 3, 6, 9]
