"""What the speed work changed: the int8 export, detection of large video frames at a reduced
size, and the soak benchmark's real MJPEG stream with an outage."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli, voc_subset
from maskwatch.classifier import BUNDLED_MODELS, MaskClassifier, bundled_model_path
from maskwatch.tracking import iou_matrix
from maskwatch.train.run import read_faces_csv

ROOT = Path(__file__).resolve().parents[1]


def test_video_frames_are_detected_at_a_reduced_size_and_photos_are_not(
    detector, three_faces: np.ndarray
) -> None:  # type: ignore[no-untyped-def]
    assert detector.scales(1280, 720, thorough=False) == [640 / 1280]
    assert detector.scales(640, 480, thorough=False) == [1.0]
    assert detector.scales(1280, 720, thorough=True) == [1.0]
    big = cv2.resize(three_faces, None, fx=2, fy=2)
    fast = detector.detect(big)
    full = detector.detect(big, thorough=True)
    assert len(fast) >= 3
    # Boxes found on the reduced frame come back in the frame's own pixels.
    # (a wrongly scaled box would hardly overlap; the profile face differs most, IoU ~0.5)
    assert (iou_matrix(fast.boxes, full.boxes).max(axis=1) > 0.4).all()


def test_the_bundled_int8_model_is_the_default_and_agrees_with_the_float_one(
    three_faces: np.ndarray, detector
) -> None:  # type: ignore[no-untyped-def]
    int8, floating = (MaskClassifier(bundled_model_path(n)) for n in BUNDLED_MODELS)
    assert MaskClassifier().path == int8.path
    meta = json.loads(int8.path.with_suffix(".json").read_text())
    assert meta["training"]["quantized"]["from"] == floating.path.name
    assert meta["metrics"]["held_out"]["real, >= 24 px"]["n"] > 1000
    from maskwatch.faces import crop_faces

    crops = crop_faces(three_faces, detector.detect(three_faces, thorough=True).boxes, 224)
    a, b = int8.predict(crops), floating.predict(crops)
    assert (a.argmax(1) == b.argmax(1)).all()
    assert np.abs(a - b).max() < 0.15


@pytest.mark.slow
def test_export_int8_calibrates_on_faces_outside_the_test_list(tmp_path: Path) -> None:
    voc = voc_subset(tmp_path / "voc", 30)
    held_out = voc_subset(tmp_path / "held", 3, start=30)
    test_faces = tmp_path / "test_faces.csv"
    with open(test_faces, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["photo", "x1", "y1", "x2", "y2", "label", "source", "group"])
        from maskwatch.train.data import load_dataset

        for s in load_dataset(held_out):
            writer.writerow([s.image, *s.box, s.label, s.source, s.group])  # type: ignore[misc]
    out = tmp_path / "int8" / "model.onnx"
    proc = run_cli(
        "export",
        "--model",
        str(bundled_model_path(BUNDLED_MODELS[1])),
        "--int8",
        "--calibrate",
        str(voc),
        str(held_out),
        "--exclude-faces",
        str(test_faces),
        "--faces",
        "40",
        "--out",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "calibrated on 40 faces" in proc.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["training"]["quantized"]["calibration_faces"] == 40
    assert meta["metrics"]["held_out"]["all"]["n"] == len(read_faces_csv(test_faces))
    assert MaskClassifier(out).predict(np.zeros((2, 224, 224, 3), np.uint8)).shape == (2, 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.json", "model.onnx"]
    assert_one_line_error(run_cli("export", "--out", str(out), "--calibrate", str(voc)), "--int8")


@pytest.mark.slow
def test_soak_benchmark_survives_an_outage_of_a_real_stream() -> None:
    proc = subprocess.run(
        [sys.executable, "bench_soak.py", "--seconds", "14", "--outage", "2"],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "reconnects: 1" in proc.stdout
    assert "reconnecting" in proc.stderr and "reconnected" in proc.stderr
    processed = int(proc.stdout.split("processed ")[1].split(",")[0])
    assert processed > 50
