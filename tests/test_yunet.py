"""YuNet through ONNX Runtime gives what OpenCV's own cv2.FaceDetectorYN gives, on real photos;
the free-size copy of the model is made once and cached; a file that is not YuNet is one clear
error; and successive frames detected on several threads come back in order, unchanged."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from conftest import DATASETS, MIRROR, THREE_FACES, panning_frames
from maskwatch import hub
from maskwatch.ahead import ahead
from maskwatch.errors import ModelError
from maskwatch.faces import DetectorPool, YuNetDetector, parallel_frames, stream_detector
from maskwatch.pipeline import Pipeline
from maskwatch.tracking import IoUTracker
from maskwatch.types import Frame, FrameResult
from maskwatch.watch import Watch
from maskwatch.yunet import YuNetSession


def _photos(count: int) -> list[Path]:
    """The sample photos and a fixed draw of photos from every data set."""
    photos = sorted(MIRROR.glob("*.jpg"))
    everything = sorted(DATASETS.glob("*/**/*.jpg"))
    return photos + random.Random(7).sample(everything, count)


def _matched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of `a`, the row of `b` whose box overlaps it most (IoU), and that IoU."""
    from maskwatch.tracking import iou_matrix

    def corners(rows: np.ndarray) -> np.ndarray:
        return np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)

    if len(b) == 0:
        return np.zeros((len(a), 2))
    iou = iou_matrix(corners(a), corners(b))
    return np.stack([iou.argmax(axis=1), iou.max(axis=1)], axis=1)


def test_faces_match_opencvs_own_yunet_on_real_photos() -> None:
    """The same faces as cv2.FaceDetectorYN, boxes and landmarks within a pixel and scores
    within 0.02 (OpenCV's convolutions are Winograd's, a little less exact); a face near the
    score threshold may fall on either side of it."""
    if not hasattr(cv2, "FaceDetectorYN"):
        pytest.skip("this OpenCV has no FaceDetectorYN to compare with")
    path = hub.fetch(hub.YUNET.name)
    opencv = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.5, 0.3, 5000)
    ours = YuNetSession(path, threads=1)
    compared = 0
    for photo in _photos(60):
        image = cv2.imread(str(photo))
        scale = min(1.0, 640 / max(image.shape[:2]))
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        opencv.setInputSize((image.shape[1], image.shape[0]))
        found = opencv.detect(image)[1]
        theirs = np.zeros((0, 15), np.float32) if found is None else found
        got = ours.run(image, 0.5, 0.3)
        for a, b in ((got, theirs), (theirs, got)):
            clear = a[a[:, 14] >= 0.55]
            match = _matched(clear, b)
            assert (match[:, 1] >= 0.95).all(), photo
            other = b[match[:, 0].astype(int)] if len(clear) else b[:0]
            np.testing.assert_allclose(clear[:, :14], other[:, :14], atol=1.0)
            np.testing.assert_allclose(clear[:, 14], other[:, 14], atol=0.02)
            compared += len(clear)
    assert compared >= 120


def test_the_free_size_model_is_made_once_and_then_read_from_the_cache(tmp_path: Path) -> None:
    env_home = tmp_path / "home"
    script = (
        "import sys, numpy as np\n"
        "from maskwatch.faces import YuNetDetector\n"
        "if sys.argv[1] == 'cached': sys.modules['onnx'] = None  # importing it would fail\n"
        "print(len(YuNetDetector().detect(np.zeros((480, 640, 3), np.uint8))))\n"
    )
    env = {**_env(), "MASKWATCH_HOME": str(env_home)}
    first = subprocess.run([sys.executable, "-c", script, "new"], env=env, capture_output=True)
    assert first.returncode == 0, first.stderr
    cached = list((env_home / "derived").glob("face_detection_yunet_2023mar-any-size-v1-*.onnx"))
    assert len(cached) == 1
    again = subprocess.run([sys.executable, "-c", script, "cached"], env=env, capture_output=True)
    assert again.returncode == 0 and again.stdout.strip() == b"0", again.stderr


def test_a_damaged_cached_copy_is_made_again(tmp_path: Path) -> None:
    env = {**_env(), "MASKWATCH_HOME": str(tmp_path / "home")}
    detect = (
        "import cv2\nfrom maskwatch.faces import YuNetDetector\n"
        f"print(len(YuNetDetector().detect(cv2.imread({str(THREE_FACES)!r}))))"
    )
    first = subprocess.run([sys.executable, "-c", detect], env=env, capture_output=True)
    assert first.returncode == 0, first.stderr
    (cached,) = (tmp_path / "home" / "derived").iterdir()
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 2])  # cut short
    again = subprocess.run([sys.executable, "-c", detect], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and int(again.stdout) >= 3, again.stderr
    assert cached.read_bytes() == good


@pytest.mark.parametrize("planted", ["fifo", "huge", "fixed-size original", "tampered"])
def test_a_fifo_or_junk_where_the_cached_copy_goes_is_replaced_not_read(
    tmp_path: Path, planted: str
) -> None:
    home = tmp_path / "home"
    env = {**_env(), "MASKWATCH_HOME": str(home)}
    fetch = "from maskwatch import hub; hub.fetch(hub.YUNET.name)"
    subprocess.run([sys.executable, "-c", fetch], env=env, check=True)
    digest = hashlib.sha256((home / "face_detection_yunet_2023mar.onnx").read_bytes())
    cached = (
        home
        / "derived"
        / f"face_detection_yunet_2023mar-any-size-v1-{digest.hexdigest()[:16]}.onnx"
    )
    cached.parent.mkdir()
    original = (home / "face_detection_yunet_2023mar.onnx").read_bytes()
    if planted == "fifo":
        os.mkfifo(cached)
    elif planted == "huge":
        with open(cached, "wb") as junk:
            junk.truncate(100 << 20)  # sparse: 100 MB of zeros
    elif planted == "tampered":  # a free-size copy that loads, but not the pinned one
        import onnx

        from maskwatch.yunet import _any_size_bytes

        proto = onnx.load_from_string(_any_size_bytes(original))
        proto.doc_string = "changed"
        cached.write_bytes(proto.SerializeToString())
    else:  # loads and has YuNet's outputs, but takes only 640x640
        cached.write_bytes(original)
    detect = (
        "import cv2\nfrom maskwatch.faces import YuNetDetector\n"
        f"print(len(YuNetDetector().detect(cv2.imread({str(THREE_FACES)!r}))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", detect], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and int(proc.stdout) >= 3, proc.stderr
    assert cached.is_file() and cached.stat().st_size < 1 << 20
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == hub.ANY_SIZE_SHA256[hub.YUNET.sha256]


def test_a_folder_where_the_cached_copy_goes_is_left_alone_and_said_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**_env(), "MASKWATCH_HOME": str(home)}
    fetch = "from maskwatch import hub; hub.fetch(hub.YUNET.name)"
    subprocess.run([sys.executable, "-c", fetch], env=env, check=True)
    derived = home / "derived"
    folder = derived / f"face_detection_yunet_2023mar-any-size-v1-{hub.YUNET.sha256[:16]}.onnx"
    (folder / "mine").mkdir(parents=True)
    (folder / "mine" / "notes.txt").write_text("the user's")
    detect = (
        "import logging, cv2\nfrom maskwatch.faces import YuNetDetector\nlogging.basicConfig()\n"
        f"print(len(YuNetDetector().detect(cv2.imread({str(THREE_FACES)!r}))))\n"
        f"print(len(YuNetDetector().detect(cv2.imread({str(THREE_FACES)!r}))))"
    )
    proc = subprocess.run([sys.executable, "-c", detect], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and int(proc.stdout.split()[0]) >= 3, proc.stderr
    assert (folder / "mine" / "notes.txt").read_text() == "the user's"
    assert proc.stderr.count(f"{folder} is a folder, left alone") == 1, proc.stderr


def test_a_cache_that_cannot_be_written_costs_nothing_but_time(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**_env(), "MASKWATCH_HOME": str(home)}
    fetch = "from maskwatch import hub; hub.fetch(hub.YUNET.name)"
    subprocess.run([sys.executable, "-c", fetch], env=env, check=True)
    (home / "derived").write_text("a file where the folder would go")
    detect = (
        "import numpy as np, cv2\nfrom maskwatch.faces import YuNetDetector\n"
        f"print(len(YuNetDetector().detect(cv2.imread({str(THREE_FACES)!r}))))"
    )
    proc = subprocess.run([sys.executable, "-c", detect], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and int(proc.stdout) >= 3, proc.stderr


@pytest.mark.parametrize("content", ["classifier", "garbage", "empty"])
def test_a_model_that_is_not_yunet_is_one_clear_error(tmp_path: Path, content: str) -> None:
    from maskwatch.classifier import default_model_path

    path = tmp_path / "detector.onnx"
    if content == "classifier":
        path.write_bytes(default_model_path().read_bytes())
    else:
        path.write_bytes(b"" if content == "empty" else b"\x08\x07junk" * 5000)
    with pytest.raises(ModelError, match="detector") as raised:
        YuNetDetector(path)
    assert "\n" not in str(raised.value)


def test_work_on_several_threads_comes_back_in_order_with_errors_in_their_place() -> None:
    def slow_square(n: int) -> int:
        time.sleep(random.Random(n).uniform(0, 0.01))  # workers finish out of order
        if n == 37:
            raise ValueError("item 37")
        return n * n

    got = []
    with pytest.raises(ValueError, match="item 37"):
        for item, result in ahead(iter(range(100)), slow_square, workers=3):
            got.append((item, result))
    assert got == [(n, n * n) for n in range(37)]


@pytest.mark.parametrize(("workers", "depth"), [(2, 1), (2, 4)])
def test_stopping_early_reads_no_further_and_leaves_no_thread_behind(
    workers: int, depth: int
) -> None:
    before = threading.active_count()
    read = []

    def items() -> Iterator[int]:
        for n in range(1000):
            read.append(n)
            yield n

    stream = ahead(items(), lambda n: n, depth, workers)
    assert [next(stream)[0] for _ in range(5)] == [0, 1, 2, 3, 4]
    time.sleep(0.2)  # time to read ahead as far as it may
    stream.close()
    assert len(read) == 5 + workers + depth - 1  # the frames in flight, no more
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def test_an_image_smaller_than_the_last_of_its_padded_size_sees_no_trace_of_it(
    three_faces: np.ndarray,
) -> None:
    session = YuNetSession(hub.fetch(hub.YUNET.name), threads=1)
    small = cv2.resize(three_faces, (601, 385))  # padded to 608x416, as the next one
    fresh = YuNetSession(hub.fetch(hub.YUNET.name), threads=1).run(small, 0.5, 0.3)
    noise = np.random.default_rng(0).integers(0, 256, (416, 608, 3), np.uint8)
    session.run(noise, 0.5, 0.3)
    np.testing.assert_array_equal(session.run(small, 0.5, 0.3), fresh)
    blob = session._fill(small)  # what the network saw: black beyond the image
    assert not blob[0, :, 385:, :].any() and not blob[0, :, :, 601:].any()


def test_a_stream_detected_two_frames_at_once_gives_the_sequential_results(
    classifier: Any, three_faces: np.ndarray
) -> None:
    images = panning_frames(three_faces, 40, period=20)

    def watch(workers: int) -> list[dict[str, Any]]:
        detector = stream_detector(lambda threads: YuNetDetector(threads=threads), 2)
        assert parallel_frames(detector) == 2
        results: list[dict[str, Any]] = []

        class Keep:
            def write(self, result: FrameResult) -> None:
                results.append(result.to_dict())

            def close(self, ok: bool = True) -> None:
                pass

        with Watch(Pipeline(detector, classifier, IoUTracker()), "door") as w:
            w.add(Keep())
            w.run(
                (Frame(image, i, i / 15, "door") for i, image in enumerate(images)),
                overlap=workers > 0,
                workers=workers,
            )
        return results

    alone, two = watch(0), watch(2)
    assert [r["frame"] for r in two] == list(range(40))
    assert two == alone
    assert sum(len(r["faces"]) for r in two) >= 100


def test_a_pool_lends_each_detector_to_one_thread_at_a_time() -> None:
    busy: set[int] = set()
    overlaps = []

    class Probe:
        def detect(self, image: np.ndarray, thorough: bool = False) -> Any:
            if id(self) in busy:
                overlaps.append(id(self))
            busy.add(id(self))
            time.sleep(0.002)
            busy.discard(id(self))
            return None

    pool = DetectorPool(Probe, 2)
    threads = [
        threading.Thread(target=lambda: [pool.detect(np.zeros((1, 1, 3))) for _ in range(50)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MASKWATCH_HOME"}
