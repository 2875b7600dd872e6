"""Cross-source evaluation, the new kary data, framing jitter and calibrated confidence: on
small subsets of the real datasets and the real models."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import stat
import subprocess
import threading
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import (
    DATASETS,
    THREE_FACES,
    assert_one_line_error,
    fill,
    run_cli,
    without_package,
)
from maskwatch.classifier import MaskClassifier, bundled_model_path, with_temperature
from maskwatch.defaults import CROP_MARGIN, LOOSE_MARGIN, TIGHT_MARGIN
from maskwatch.faces import (
    YuNetDetector,
    align_face,
    alignment,
    crop_face,
    crop_faces,
    face_template,
    largest_face,
    transform_points,
)
from maskwatch.train.calibration import expected_calibration_error, fit_temperature
from maskwatch.train.crosssource import (
    FACES_CSV,
    FRAMINGS,
    OUTPUTS,
    PR_AXES,
    PR_COLOURS,
    PR_DPI,
    PR_FIGURE_INCHES,
    PR_IMAGE,
    PR_LIMITS,
)
from maskwatch.train.data import load_dataset, read_faces_csv
from maskwatch.train.featurecache import faces_key
from maskwatch.train.framing import frame_face, frame_samples, jittered_framing, reframe
from maskwatch.train.metrics import HEADLINE_MIN_FACE


def test_kary_loads_its_three_classes_from_its_folders() -> None:
    samples = load_dataset(DATASETS / "kary")
    assert Counter(s.label for s in samples) == {"mask": 774, "incorrect": 331, "no_mask": 248}
    assert {s.source for s in samples} == {"kary"}
    assert len({s.group for s in samples}) == len(samples)


def test_temperature_fitted_on_overconfident_scores_lowers_calibration_error() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(3, size=2000)
    logits = rng.normal(size=(2000, 3))
    logits[np.arange(2000), y] += 1.5  # right about 70% of the time...
    logits *= 4  # ...but sure of itself nearly always
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    temperature = fit_temperature(probs, y)
    assert temperature > 2
    calibrated = with_temperature(probs, temperature)
    assert (calibrated.argmax(1) == probs.argmax(1)).all()
    before, after = expected_calibration_error(probs, y), expected_calibration_error(calibrated, y)
    assert after < 0.05 < before


def test_the_model_json_temperature_is_applied_at_inference(tmp_path: Path, three_faces) -> None:  # type: ignore[no-untyped-def]
    for suffix in (".onnx", ".json"):
        shutil.copyfile(bundled_model_path("mask_classifier" + suffix), tmp_path / ("m" + suffix))
    crops = crop_faces(three_faces, YuNetDetector().detect(three_faces).boxes, 224)
    assert len(crops) == 3
    plain = MaskClassifier(tmp_path / "m.onnx").predict(crops)
    meta = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, "temperature": 3.0}))
    softened = MaskClassifier(tmp_path / "m.onnx").predict(crops)
    assert (softened.argmax(1) == plain.argmax(1)).all()
    assert (softened.max(1) < plain.max(1)).all()
    assert np.allclose(softened.sum(1), 1, atol=1e-5)

    for bad in (0, float("inf"), True):  # infinity would make every face uncertain
        (tmp_path / "m.json").write_text(json.dumps({**meta, "temperature": bad}))
        proc = run_cli("classify", str(THREE_FACES), "--model", str(tmp_path / "m.onnx"))
        assert_one_line_error(proc, "temperature")


def test_framing_jitter_crops_tight_detector_and_loose_faces() -> None:
    samples = [s for s in load_dataset(DATASETS / "kary") if s.label == "no_mask"][:4]
    framed = frame_samples(samples, YuNetDetector(), 224, CROP_MARGIN)
    found = np.isfinite(framed.landmarks).all(axis=(1, 2))
    assert found.sum() >= 2
    n = len(framed.samples)
    spans = {}
    for name, margin in (
        ("tight", TIGHT_MARGIN),
        ("detector", CROP_MARGIN),
        ("loose", LOOSE_MARGIN),
    ):
        crops, landmarks = reframe(framed, np.full(n, margin))
        assert crops.shape == framed.crops.shape
        # Eye distance in crop pixels: larger the tighter the framing.
        spans[name] = np.linalg.norm(landmarks[found, 0] - landmarks[found, 1], axis=1)
        if name == "detector":  # the same framing, up to the box rounded to whole pixels
            assert np.abs(crops.astype(int) - framed.crops.astype(int)).mean() < 10
            assert np.allclose(landmarks[found], framed.landmarks[found], atol=4)
    assert (spans["tight"] > spans["detector"] * 1.2).all()
    assert (spans["detector"] > spans["loose"] * 1.2).all()
    margins, offsets = jittered_framing(1000, np.random.default_rng(0))
    assert margins.min() < 0.05 and margins.max() > LOOSE_MARGIN - 0.05
    assert (margins >= TIGHT_MARGIN).all() and (margins <= LOOSE_MARGIN).all()
    assert np.abs(offsets).max() <= 0.1
    moved, _ = reframe(framed, np.full(n, CROP_MARGIN), np.full((n, 2), 0.1))
    assert not np.array_equal(moved, framed.crops)


@pytest.fixture(scope="module")
def cross_source_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The protocol on a few faces per class and source (the output folder, the run)."""
    tmp_path = tmp_path_factory.mktemp("xs")
    out = tmp_path / "xs"
    proc = run_cli(
        "train",
        str(DATASETS / "observations"),
        str(DATASETS / "ilc"),
        str(DATASETS / "rmfd") + ":mask",
        str(DATASETS / "kary"),
        "--cross-source",
        "--recipe",
        "real",
        "--limit-per-class",
        "5",
        "--views",
        "1",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--framing-jitter",
        "--feature-cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_cross_source_protocol_writes_its_table(
    cross_source_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, proc = cross_source_run
    table = json.loads((out / "cross_source.json").read_text())
    assert set(table["sources"]) == {"ilc", "rmfd", "kary"}
    for source, f in table["sources"].items():
        assert f["n"] > 0, source
        assert set(f["accuracy_by_framing"]) == {"tight", "detector", "loose"}
        assert f["temperature"] > 0 and f["ece"] is not None
        assert f["trained_on_faces"] > 0
    assert table["sources"]["kary"]["incorrect"]["n"] > 0
    assert len(table["sources"]["ilc"]["incorrect"]["curve"]["recall"]) > 1
    assert "rmfd" in (out / "cross_source.md").read_text()
    assert "| kary |" in proc.stdout
    assert any((out.parent / "cache").glob("*.npy"))


def test_cross_source_lists_every_tested_face_and_its_figures_by_face_size(
    cross_source_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = cross_source_run
    sources = json.loads((out / "cross_source.json").read_text())["sources"]
    with open(out / FACES_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(read_faces_csv(out / FACES_CSV)) == len(rows)  # evaluate --faces reads it
    classes = ["incorrect", "mask", "no_mask"]
    for source, figures in sources.items():
        mine = [r for r in rows if r["source"] == source]
        assert len(mine) == figures["n"], source
        sizes = np.array([float(r["face_size"]) for r in mine])
        assert sizes.min() >= HEADLINE_MIN_FACE
        for framing in FRAMINGS:
            probs = np.array([[float(r[f"{framing}:{c}"]) for c in classes] for r in mine])
            np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-3)
            right = np.array(classes)[probs.argmax(axis=1)] == [r["label"] for r in mine]
            assert round(float(right.mean()), 4) == figures["accuracy_by_framing"][framing]
        bands = figures["by_face_size"]
        assert list(bands) == ["24-48", "48-96", "96+"]
        assert sum(b["n"] for b in bands.values()) == figures["n"]
        big = sizes >= 96
        assert bands["96+"]["n"] == int(big.sum())
        if big.any():
            probs = np.array([[float(r[f"detector:{c}"]) for c in classes] for r in mine])
            truth = np.array([r["label"] for r in mine])
            right = np.array(classes)[probs[big].argmax(axis=1)] == truth[big]
            assert round(float(right.mean()), 4) == bands["96+"]["accuracy"]
    assert "By face size" in (out / "cross_source.md").read_text()


def _drawn_in(image: np.ndarray, colours: list[str], points: list[tuple[float, float]]) -> int:
    """How many (recall, precision) points of the curve image have one of `colours`
    (#rrggbb) within 2 px of where they lie."""
    height, width = image.shape[:2]
    bgr = np.array([[int(c[i : i + 2], 16) for i in (5, 3, 1)] for c in colours])
    left, bottom, w, h = PR_AXES
    low, high = PR_LIMITS
    hits = 0
    for x, y in points:
        column = round((left + w * (x - low) / (high - low)) * width)
        row = round(height - (bottom + h * (y - low) / (high - low)) * height)
        near = image[row - 2 : row + 3, column - 2 : column + 3].astype(int)
        hits += bool((np.abs(near[:, :, None] - bgr).sum(axis=3) < 60).any())
    return hits


def test_cross_source_draws_incorrect_precision_recall_from_its_json(
    cross_source_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, proc = cross_source_run
    png = (out / PR_IMAGE).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape[1::-1] == tuple(round(v * PR_DPI) for v in PR_FIGURE_INCHES)
    assert PR_IMAGE in proc.stdout
    sources = json.loads((out / "cross_source.json").read_text())["sources"]
    drawn = [(s, f["incorrect"]["curve"]) for s, f in sources.items() if "incorrect" in f]
    assert {s for s, _ in drawn} == {"ilc", "kary"}  # rmfd has no incorrect faces
    colours = list(PR_COLOURS[: len(drawn)])
    for k, (source, curve) in enumerate(drawn):
        points = list(zip(curve["recall"], curve["precision"], strict=True))
        # Every point is on its curve, or on a later source's drawn over it...
        assert _drawn_in(image, colours[k:], points) >= 0.95 * len(points), source
        # ...and its own curve shows at a good share of them.
        assert _drawn_in(image, colours[k : k + 1], points) >= 0.25 * len(points), source
    anywhere = [tuple(xy) for xy in np.random.default_rng(0).uniform(0, 1, (200, 2))]
    assert _drawn_in(image, colours, anywhere) < 0.2 * len(anywhere)


def _cross_source_of_one_real_source(
    out: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`train --cross-source` on observations and kary (one real source) into `out`."""
    data = [str(DATASETS / "observations"), str(DATASETS / "kary")]
    return run_cli("train", *data, "--cross-source", *options, "--out", str(out), env=env)


def test_cross_source_without_matplotlib_is_one_clear_line(tmp_path: Path) -> None:
    env = without_package("matplotlib", tmp_path)
    proc = _cross_source_of_one_real_source(tmp_path / "xs", env=env)
    assert_one_line_error(proc, "--cross-source needs the train extra")
    assert not (tmp_path / "xs").exists()


def test_cross_source_needs_two_real_sources(tmp_path: Path) -> None:
    proc = _cross_source_of_one_real_source(tmp_path / "xs", "--limit-per-class", "2")
    assert_one_line_error(proc, "two real")


def _tiny_cross_source(out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`train --cross-source` on observations, kary and ilc (two real sources), one view and
    epoch, into `out`."""
    data = [str(DATASETS / name) for name in ("observations", "kary", "ilc")]
    quick = ["--views", "1", "--epochs", "1", "--finetune-epochs", "1"]
    return run_cli(
        "train", *data, "--cross-source", *quick, *options, "--out", str(out), timeout=300
    )


# Five faces per class: enough for the real recipe's validation faces of every class.
REAL_AND_TINY = ("--recipe", "real", "--limit-per-class", "5")


def _immutable(folder: Path) -> None:
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder immutable here (chattr +i)")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("folder", f"{FACES_CSV}: {os.strerror(errno.EISDIR)}"),
        ("pipe", "cross_source.md: a pipe that nothing reads"),
        ("file", "is not a folder"),
        ("immutable", f"cross_source.json: {os.strerror(errno.EPERM)}"),
    ],
)
def test_cross_source_refuses_outputs_it_cannot_write_before_any_training(
    tmp_path: Path, case: str, message: str
) -> None:
    out = tmp_path / "xs"
    if case == "file":
        out.write_text("a file")
    else:
        out.mkdir()
    if case == "folder":
        (out / FACES_CSV).mkdir()
    elif case == "pipe":
        os.mkfifo(out / "cross_source.md")
    elif case == "immutable":
        _immutable(out)
    try:
        proc = _tiny_cross_source(out, *REAL_AND_TINY, "--feature-cache", str(tmp_path / "cache"))
    finally:
        subprocess.run(["chattr", "-i", str(out)], capture_output=True)
    assert_one_line_error(proc, message)
    assert "leaving" not in proc.stderr  # no source was left out: nothing trained
    assert not (tmp_path / "cache").exists()  # no face framed, no map extracted
    if out.is_dir():
        planted = {"folder": {FACES_CSV}, "pipe": {"cross_source.md"}}.get(case, set())
        assert set(os.listdir(out)) == planted  # nothing written, no temporary file


def test_cross_source_writes_its_four_files_together_or_none(tiny_disk: Path) -> None:
    # Room for the JSON and the table, not for the curves' PNG: the disk fills at the end.
    filler = fill(tiny_disk, 16 * 1024)
    proc = _tiny_cross_source(tiny_disk / "xs", *REAL_AND_TINY)
    assert_one_line_error(proc, f"{PR_IMAGE}: {os.strerror(errno.ENOSPC)}")
    assert "leaving" in proc.stderr  # it did train
    assert sorted(os.listdir(tiny_disk)) == [filler], "a half set or temporary files left"


def test_cross_source_of_a_recipe_without_validation(tmp_path: Path) -> None:
    out = tmp_path / "xs"
    proc = _tiny_cross_source(out, "--limit-per-class", "3")  # the seed recipe: val_fraction 0
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)
    table = json.loads((out / "cross_source.json").read_text())
    assert "no validation faces" in table["protocol"]
    assert set(table["sources"]) == {"kary", "ilc"}
    for source, f in table["sources"].items():
        assert f["validation_faces"] == 0, source
        assert (f["temperature"], f["uncertain_below"], f["finetuning"]) == (1.0, 0.0, "not run")
        assert f["ece"] == f["ece_before_calibration"], source
        assert f["n"] > 0, source
    assert "no validation faces" in (out / "cross_source.md").read_text()


def test_cross_source_writes_through_pipes_devices_and_links_as_every_output(
    tmp_path: Path,
) -> None:
    out = tmp_path / "xs"
    out.mkdir()
    os.mkfifo(out / FACES_CSV)
    try:
        os.mknod(out / PR_IMAGE, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # our own null device
    except OSError as exc:
        pytest.skip(f"cannot make device nodes here: {exc}")
    (tmp_path / "table.md").write_text("old")
    (out / "cross_source.md").symlink_to(tmp_path / "table.md")
    received: list[bytes] = []
    reader = threading.Thread(
        target=lambda: received.append((out / FACES_CSV).read_bytes()), daemon=True
    )
    reader.start()
    proc = _tiny_cross_source(out, "--limit-per-class", "3")
    reader.join(30)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.stat(out / FACES_CSV).st_mode)
    assert stat.S_ISCHR(os.stat(out / PR_IMAGE).st_mode)
    assert os.readlink(out / "cross_source.md") == str(tmp_path / "table.md")
    assert "Cross-source accuracy" in (tmp_path / "table.md").read_text()
    assert received[0].decode().startswith("photo,")
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)


def _largest(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box and landmarks of the largest face YuNet finds in `image`."""
    faces = YuNetDetector().detect(image, thorough=True)
    k = largest_face(faces)
    assert k is not None
    return faces.boxes[k], faces.landmarks[k]


def test_a_similarity_moved_template_is_aligned_back_onto_it() -> None:
    angle, scale, shift = np.deg2rad(25), 2.5, np.array([310.0, 140.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    photo_points = face_template(224) @ rotation.T + shift
    matrix = alignment(photo_points, 224)
    assert matrix is not None
    assert np.abs(transform_points(matrix, photo_points) - face_template(224)).max() < 1


def test_aligned_crops_of_a_real_face_are_level_whatever_its_roll(three_faces) -> None:  # type: ignore[no-untyped-def]
    box, marks = _largest(three_faces)
    crop, crop_marks, aligned = frame_face(three_faces, box, marks, 224, CROP_MARGIN, align=True)
    assert aligned and crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert abs(crop_marks[0, 1] - crop_marks[1, 1]) < 1.5  # eyes level
    # A similarity cannot put a real face's five points exactly on the template's.
    assert np.abs(crop_marks - face_template(224)).max() < 10
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    turn = cv2.getRotationMatrix2D(centre, 20, 1.0)
    h, w = three_faces.shape[:2]
    turned = cv2.warpAffine(three_faces, turn, (w, h))
    turned_marks = transform_points(turn, marks)
    again, again_marks, _ = frame_face(turned, box, turned_marks, 224, CROP_MARGIN, align=True)
    assert np.abs(again_marks - crop_marks).max() < 0.5
    square, turned_square = crop_face(three_faces, box, 224), crop_face(turned, box, 224)
    middle = np.s_[56:168, 56:168]

    def apart(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a[middle].astype(int) - b[middle]).mean())

    assert apart(crop, again) < 0.3 * apart(square, turned_square)


@pytest.mark.parametrize("size", [224, 48])
def test_align_face_reads_only_the_window_it_needs(three_faces, size: int) -> None:  # type: ignore[no-untyped-def]
    _, marks = _largest(three_faces)
    matrix = alignment(marks, size)
    assert matrix is not None
    smooth = cv2.GaussianBlur(three_faces, (0, 0), 6)  # where shrinking first cannot alias
    whole = cv2.warpAffine(smooth, matrix, (size, size), flags=cv2.INTER_LINEAR)
    assert np.abs(align_face(smooth, matrix, size).astype(int) - whole).mean() < 1


def test_faces_without_usable_landmarks_keep_the_square_crop(three_faces) -> None:  # type: ignore[no-untyped-def]
    box, marks = _largest(three_faces)
    square = crop_face(three_faces, box, 224)
    for bad in (
        np.full((5, 2), np.nan, np.float32),
        np.full((5, 2), 150.0, np.float32),  # all points equal
        np.where(np.arange(10).reshape(5, 2) == 3, np.inf, marks).astype(np.float32),
    ):
        assert alignment(bad, 224) is None
        crop, _, aligned = frame_face(three_faces, box, bad, 224, CROP_MARGIN, align=True)
        assert not aligned and np.array_equal(crop, square)
    samples = [s for s in load_dataset(DATASETS / "ilc") if s.box is not None][:12]
    framed = frame_samples(samples, YuNetDetector(), 224, CROP_MARGIN, align=True)
    square_set = frame_samples(samples, YuNetDetector(), 224, CROP_MARGIN)
    found = np.isfinite(framed.photo_landmarks).all(axis=(1, 2))
    assert framed.aligned.any() and np.array_equal(framed.aligned, found)
    assert np.array_equal(framed.crops[~found], square_set.crops[~found])
    assert faces_key(framed) != faces_key(square_set)
    crops, _ = reframe(framed, np.full(len(found), CROP_MARGIN))
    assert np.abs(crops.astype(int) - framed.crops).mean() < 3


def test_plain_training_refuses_aligned_crops(tmp_path: Path) -> None:
    proc = run_cli("train", str(DATASETS / "kary"), "--align", "--out", str(tmp_path / "m"))
    assert_one_line_error(proc, "--align is for --cross-source")
