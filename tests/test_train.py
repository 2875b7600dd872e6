"""Training for real on small subsets of ../shared/datasets, and the honesty machinery."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import (
    DATASETS,
    assert_one_line_error,
    class_subset,
    run_cli,
    voc_subset,
    wait_for,
)
from maskwatch import hub
from maskwatch.classifier import MaskClassifier, default_model_path
from maskwatch.errors import DatasetError
from maskwatch.train.config import Augment, HardMining, Recipe, Split, TrainConfig
from maskwatch.train.data import faces_csv, load_dataset, load_datasets, read_faces_csv
from maskwatch.train.dedup import HASH_DISTANCE, near_duplicate_pairs, photo_hashes
from maskwatch.train.report import REPORT_FILES
from maskwatch.train.run import TRAIN_FILES
from maskwatch.train.split import grouped, leakage, merge_groups, split_groups, split_random


def test_class_folders_read_labels_and_groups(tmp_path: Path) -> None:
    samples = load_dataset(class_subset(tmp_path / "obs", 5))
    assert {s.label for s in samples} == {"mask", "no_mask"}
    assert all(s.box is None and s.source == "obs" for s in samples)
    groups = {s.group for s in samples}
    assert all(g.startswith("obs:") for g in groups) and len(groups) <= 10


def test_voc_reads_boxes_in_three_classes(tmp_path: Path) -> None:
    samples = load_dataset(voc_subset(tmp_path / "voc", 40))
    assert {s.label for s in samples} == {"mask", "no_mask", "incorrect"}
    assert all(s.box is not None and s.box[2] > s.box[0] for s in samples)
    # All faces of a photo share its group.
    by_image: dict[Path, set[str]] = {}
    for s in samples:
        by_image.setdefault(s.image, set()).add(s.group)
    assert all(len(g) == 1 for g in by_image.values())


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("empty", "expected one sub-folder per class"),
        ("one_class", "only one class"),
        ("no_images", "no labelled images"),
    ],
)
def test_unusable_datasets_are_refused(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / layout
    root.mkdir()
    if layout == "one_class":
        class_subset(root, 3, names=("with_mask",))
    if layout == "no_images":
        (root / "with_mask").mkdir()
        (root / "without_mask").mkdir()
    with pytest.raises(DatasetError, match=message):
        load_datasets([root])


def test_group_split_keeps_every_group_on_one_side() -> None:
    samples = load_dataset(DATASETS / "observations")
    groups = [s.group for s in samples]
    labels = [s.label for s in samples]
    test = split_groups(groups, labels, 0.3, seed=0)
    assert 0.25 < test.mean() < 0.35
    for label in ("mask", "no_mask"):
        share = np.mean([t for t, lbl in zip(test, labels, strict=True) if lbl == label])
        assert 0.22 < share < 0.38
    sides: dict[str, set[bool]] = {}
    for g, t in zip(groups, test, strict=True):
        sides.setdefault(g, set()).add(bool(t))
    assert all(len(s) == 1 for s in sides.values())
    # The seed's random split, for contrast, splits most multi-image groups.
    random_test = split_random(len(labels), labels, 0.3, seed=0)
    split_groups_count = sum(
        len({bool(random_test[i]) for i, g2 in enumerate(groups) if g2 == g}) == 2
        for g in {g for g in groups if groups.count(g) > 1}
    )
    assert split_groups_count > 100


def test_config_options_are_enums_that_read_and_write_as_the_same_strings(
    tmp_path: Path,
) -> None:
    config = TrainConfig(data=[str(tmp_path)], recipe="real", split="random")  # type: ignore[arg-type]
    assert config.recipe is Recipe.REAL and config.split is Split.RANDOM
    resolved = config.resolved()
    assert resolved.augment is Augment.REAL and resolved.epochs == 30  # the real recipe's
    assert TrainConfig(data=["d"], epochs=3).resolved().epochs == 3
    assert resolved.hard_mining is HardMining.NONE  # off until it is measured better
    mined = TrainConfig(data=["d"], hard_mining="focal")  # type: ignore[arg-type]
    assert mined.hard_mining is HardMining.FOCAL
    head_only = TrainConfig(data=["d"], hard_mining="ohem-head", augment="negatives")  # type: ignore[arg-type]
    assert head_only.hard_mining is HardMining.OHEM_HEAD and head_only.augment is Augment.NEGATIVES
    saved = json.loads(resolved.to_json())
    assert saved["recipe"] == "real" and saved["augment"] == "real" and saved["split"] == "random"
    path = tmp_path / "config.json"
    path.write_text(resolved.to_json())
    assert TrainConfig.from_file(path) == resolved
    path.write_text(json.dumps({**saved, "hard_mining": "hardest"}))
    with pytest.raises(DatasetError, match="unknown hard mining 'hardest'; choose from none, ohem"):
        TrainConfig.from_file(path)
    path.write_text(json.dumps({**saved, "framing": "bogus"}))
    with pytest.raises(
        DatasetError, match="unknown framing 'bogus'; choose from detector, annotation"
    ):
        TrainConfig.from_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="cannot read training configuration"):
        TrainConfig.from_file(path)


def test_hard_mining_weights_the_hardest_views_and_keeps_class_weights() -> None:
    import torch

    from maskwatch.train.loop import training_loss

    # Eight views, two classes: the first four are sure and right, the last four are wrong.
    logits = torch.tensor([[4.0, 0.0]] * 2 + [[0.0, 4.0]] * 2 + [[0.0, 1.0]] * 2 + [[2.0, 0.0]] * 2)
    targets = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    weights = torch.tensor([1.0, 3.0])
    per_view = torch.nn.functional.cross_entropy(logits, targets, reduction="none")

    plain = training_loss(logits, targets, weights, HardMining.NONE)
    assert torch.isclose(plain, torch.nn.CrossEntropyLoss(weight=weights)(logits, targets))
    hardest = torch.tensor([4, 5, 6, 7])
    weighted = weights[targets[hardest]]
    ohem = training_loss(logits, targets, weights, HardMining.OHEM)
    assert torch.isclose(ohem, (per_view[hardest] * weighted).sum() / weighted.sum())
    assert ohem > plain * 1.5
    assert not torch.isclose(ohem, training_loss(logits, targets, None, HardMining.OHEM))
    focal = training_loss(logits, targets, weights, HardMining.FOCAL)
    assert focal < plain

    for mining in (HardMining.OHEM, HardMining.FOCAL):  # sure, right views barely teach
        x = logits.clone().requires_grad_(True)
        training_loss(x, targets, weights, mining).backward()
        assert x.grad is not None
        easy, hard = x.grad[:4].abs().sum(), x.grad[4:].abs().sum()
        assert easy < hard * (0.0 if mining is HardMining.OHEM else 0.01) + 1e-12, mining


def test_train_refuses_bad_choices_by_their_names(tmp_path: Path) -> None:
    proc = run_cli("train", str(tmp_path), "--recipe", "bogus")
    assert_one_line_error(proc, "invalid choice: 'bogus' (choose from 'seed', 'real')")
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"data": [str(tmp_path)], "augment": "heavy"}))
    proc = run_cli("train", "--config", str(bad))
    assert_one_line_error(proc, "unknown augment 'heavy'; choose from seed, real, negatives, none")


def test_the_face_list_reads_back_as_written(tmp_path: Path) -> None:
    samples = [s for s in load_dataset(voc_subset(tmp_path / "voc", 3)) if s.box is not None]
    path = tmp_path / "test_faces.csv"
    path.write_text(faces_csv(samples), newline="")
    assert path.read_text().splitlines()[0] == "photo,x1,y1,x2,y2,label,source,group"
    back = read_faces_csv(path)
    assert [(s.image, s.box, s.label, s.source, s.group) for s in back] == [
        (s.image, s.box, s.label, s.source, s.group) for s in samples
    ]
    for text, said in (
        ("photo,label\nx.jpg,mask\n", "no x1, y1, x2, y2, source, group column"),  # KeyError 'x1'
        ("", "no photo, x1"),
        (b"photo,x1\n\xff\n", "not UTF-8 text (byte 9)"),  # Python's codec text
        ("photo,x1,y1,x2,y2,label,source,group\nx.jpg,1,2,three,4,mask,s,g\n", "'three'"),
    ):
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        with pytest.raises(
            DatasetError, match=re.escape(f"face list {path}: ") + ".*" + re.escape(said)
        ):
            read_faces_csv(path)


def test_near_duplicates_survive_reencoding_resizing_and_mirroring(three_faces) -> None:  # type: ignore[no-untyped-def]
    _, jpeg = cv2.imencode(".jpg", three_faces, [cv2.IMWRITE_JPEG_QUALITY, 40])
    variants = [
        cv2.imdecode(jpeg, cv2.IMREAD_COLOR),
        cv2.resize(three_faces, None, fx=0.5, fy=0.5),
        three_faces[:, ::-1],
        three_faces[20:-20, 50:-50],
    ]
    other = cv2.imread(str(DATASETS / "ilc" / "images" / "0003a6c46855ffe528311a672d95a0c7.jpg"))
    images = [three_faces, *variants, other]
    both = [photo_hashes(i) for i in images]
    hashes = np.array([b[0] for b in both], np.uint64)
    mirrored = np.array([b[1] for b in both], np.uint64)
    pairs = near_duplicate_pairs(hashes, mirrored, HASH_DISTANCE)
    assert {(0, 1), (0, 2), (0, 3), (0, 4)} <= set(pairs)
    assert not any(5 in p for p in pairs)
    assert merge_groups(["a", "b", "c", "d", "e", "f"], pairs)[:5] == ["a"] * 5


def test_training_for_real_on_a_small_subset(tmp_path: Path) -> None:
    obs = class_subset(tmp_path / "obs", 14)
    voc = voc_subset(tmp_path / "voc", 25)
    out = tmp_path / "run"
    proc = run_cli(
        "train",
        str(obs),
        str(voc),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--views",
        "2",
        "--balance-classes",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 3/3" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(TRAIN_FILES)
    classifier = MaskClassifier(out / "mask_classifier.onnx")
    assert classifier.classes == ["mask", "no_mask", "incorrect"]
    meta = json.loads((out / "mask_classifier.json").read_text())
    held_out = meta["metrics"]["held_out"]["all"]
    assert held_out["n"] > 10 and 0.0 <= held_out["accuracy"] <= 1.0
    assert "real, >= 24 px" in meta["metrics"]["held_out"]  # "obs" is not a synthetic source
    assert set(meta["metrics"]["by_source"]) == {"obs", "voc"}
    assert meta["metrics"]["onnx_vs_torch_max_diff"] < 1e-4
    assert meta["training"]["split"] == "group"
    assert len((out / "history.csv").read_text().splitlines()) == 4
    assert meta["uncertain_below"] == 0.0  # the seed recipe has no validation to choose it on
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 3 and config["command"][:2] == ["maskwatch", "train"]

    # The same report for any labelled data, from the exported model.
    report = tmp_path / "eval"
    proc = run_cli(
        "evaluate", "--model", str(out / "mask_classifier.onnx"), str(voc), "--out", str(report)
    )
    assert proc.returncode == 0, proc.stderr
    assert "balanced" in proc.stdout
    assert sorted(p.name for p in report.iterdir()) == sorted(REPORT_FILES)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_an_output_folder_that_cannot_be_made_is_refused_before_the_work(
    command: str, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")
    model = ["--model", str(default_model_path())] if command == "evaluate" else []
    obs = str(DATASETS / "observations")
    proc = run_cli(command, *model, obs, "--out", str(tmp_path / "file" / "run"))
    assert_one_line_error(proc, "cannot write", "Not a directory")
    assert "faces" not in proc.stderr, "refused before the data is read"

    in_the_way = tmp_path / "run" / "report.md"
    (in_the_way / "notes").mkdir(parents=True)
    proc = run_cli(command, *model, obs, "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, f"cannot write {in_the_way}: a folder is in its place")
    assert "faces" not in proc.stderr, "refused before the data is read"
    assert os.listdir(tmp_path / "run") == ["report.md"]


def test_a_file_size_limit_is_one_line_and_leaves_no_output(tmp_path: Path) -> None:
    """The model (9 MB) over `ulimit -f`: one line naming it, nothing left; the frozen layers'
    ONNX is made in memory, so the limit cannot stop training half way in a temporary file."""
    hub.fetch(hub.YUNET.name)  # fetched first: the limit would stop that too
    hub.fetch(hub.MOBILENET_V2.name)
    obs = class_subset(tmp_path / "obs", 8)
    out = tmp_path / "run"
    limit = 2 * 2**20
    proc = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "train", str(obs), "--out", str(out),
         "--epochs", "1", "--views", "1"],
        capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )  # fmt: skip
    assert_one_line_error(proc, f"cannot write {out / 'mask_classifier.onnx'}: File too large")
    assert not out.exists()


def test_a_stopped_training_leaves_the_output_folder_as_it_was(tmp_path: Path) -> None:
    """SIGTERM while the features are computed: the previous run's outputs stay as they were,
    no half of the new run's is beside them, and no temporary folder is left."""
    obs = class_subset(tmp_path / "obs", 14)
    out = tmp_path / "run"
    out.mkdir()
    (out / "mask_classifier.onnx").write_bytes(b"the previous model")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        training = subprocess.Popen(
            [sys.executable, "-m", "maskwatch.cli", "train", str(obs), "--out", str(out),
             "--epochs", "50", "--views", "8"],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
        try:
            wait_for(lambda: "features: view" in log.read_text(), 300, "features computed")
            training.send_signal(signal.SIGTERM)
            training.wait(timeout=120)
        finally:
            training.kill()
    assert training.returncode == -signal.SIGTERM, log.read_text()  # ended as SIGTERM ends
    assert "Traceback" not in log.read_text()
    assert [p.name for p in out.iterdir()] == ["mask_classifier.onnx"]
    assert (out / "mask_classifier.onnx").read_bytes() == b"the previous model"


def test_random_split_warns_about_leakage(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from maskwatch.faces import YuNetDetector
    from maskwatch.train.framing import frame_samples

    samples = load_dataset(class_subset(tmp_path / "obs", 40))
    framed = frame_samples(samples, YuNetDetector(), 64, 0.15)
    groups, pairs = grouped(framed)
    labels = [s.label for s in framed.samples]
    leaked, _ = leakage(framed, groups, split_random(len(labels), labels, 0.3, seed=1), pairs)
    assert leaked > 0
    assert leakage(framed, groups, split_groups(groups, labels, 0.3, seed=1), pairs)[0] == 0


def test_train_refuses_a_one_class_dataset(tmp_path: Path) -> None:
    root = class_subset(tmp_path / "one", 3, names=("without_mask",))
    assert_one_line_error(
        run_cli("train", str(root), "--out", str(tmp_path / "o")), "only one class"
    )
    assert not (tmp_path / "o").exists()


def test_framing_uses_the_detector_box_like_detect_does(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from maskwatch.faces import YuNetDetector
    from maskwatch.train.framing import frame_samples

    samples = load_dataset(voc_subset(tmp_path / "voc", 10))
    with caplog.at_level(logging.WARNING):
        framed = frame_samples(samples, YuNetDetector(), 96, 0.15)
    assert framed.crops.shape == (len(samples), 96, 96, 3)
    assert framed.framing["matched detection"] > framed.framing["annotated box"]
    assert len(framed.photos) == 10


def test_one_label_folders_take_the_subject_of_each_photo(tmp_path: Path) -> None:
    from maskwatch.faces import YuNetDetector
    from maskwatch.train.data import parse_data_spec
    from maskwatch.train.framing import frame_samples

    folder = DATASETS / "rmfd" / "RWMFD_part_1" / "0001"
    assert parse_data_spec(f"{folder}:with_mask") == (folder, "mask")
    assert parse_data_spec(str(folder)) == (folder, None)
    (tmp_path / "few").mkdir()
    for image in sorted(folder.iterdir())[:6]:
        (tmp_path / "few" / image.name).symlink_to(image)
    samples = load_dataset(f"{tmp_path / 'few'}:mask")
    assert len(samples) == 6 and {s.label for s in samples} == {"mask"}
    framed = frame_samples(samples, YuNetDetector(), 64, 0.15)
    assert 5 <= len(framed.samples) <= 6
    assert len(set(framed.photo_of)) == len(framed.samples), "one face per photo"
    assert (framed.face_sizes >= 24).all()
    assert np.isfinite(framed.landmarks).all()


def test_real_recipe_fine_tunes_chooses_a_threshold_and_lists_its_test_faces(
    tmp_path: Path,
) -> None:
    obs = class_subset(tmp_path / "obs", 16)
    voc = voc_subset(tmp_path / "voc", 40, start=100)
    out = tmp_path / "run"
    proc = run_cli(
        "train",
        str(obs),
        str(voc),
        "--recipe",
        "real",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--finetune-epochs",
        "2",
        "--views",
        "2",
        "--hard-mining",
        "ohem",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fine-tune epoch 2/2" in proc.stderr or "no improvement" in proc.stderr
    assert "head: hard mining by ohem" in proc.stderr
    assert "fine-tune: hard mining by ohem" in proc.stderr
    meta = json.loads((out / "mask_classifier.json").read_text())
    assert meta["training"]["hard_mining"] == "ohem"
    assert json.loads((out / "config.json").read_text())["hard_mining"] == "ohem"
    assert meta["training"]["finetuning"].startswith(("kept", "discarded"))
    assert 0.34 <= meta["uncertain_below"] < 1.0
    assert meta["temperature"] > 0
    ece = meta["metrics"]["validation_ece"]
    assert 0 <= ece["after_calibration"] <= 1 and 0 <= ece["before_calibration"] <= 1
    faces = (out / "test_faces.csv").read_text().splitlines()
    assert faces[0] == "photo,x1,y1,x2,y2,label,source,group"
    for name in ("curves.png", "calibration.png", "mistakes.jpg", "training_curves.png"):
        assert (out / name).is_file(), name

    # Any model can be evaluated on exactly these held-out faces.
    proc = run_cli(
        "evaluate",
        "--model",
        str(out / "mask_classifier.onnx"),
        "--faces",
        str(out / "test_faces.csv"),
    )
    assert proc.returncode == 0, proc.stderr
    held_out = meta["metrics"]["held_out"]["all"]
    assert f"| n | {held_out['n']} |" in proc.stdout


def test_audit_reports_classes_duplicates_and_leakage(tmp_path: Path) -> None:
    obs = class_subset(tmp_path / "obs", 40)
    voc = voc_subset(tmp_path / "voc", 8)
    proc = run_cli("data", "audit", str(obs), str(voc))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "faces per class and source" in out and "obs" in out and "voc" in out
    assert "group split: clean" in out
    assert "random split: LEAKS" in out
    assert "near-duplicate photos" in out and "exact duplicates" in out


def _with_unreadable_photos(root: Path) -> Path:
    """A FIFO, a 5 GB sparse file and a symbolic-link loop, all named like photos."""
    os.mkfifo(root / "with_mask" / "pipe.jpg")  # reading it would wait for a writer forever
    with open(root / "with_mask" / "huge.jpg", "wb") as huge:
        huge.truncate(5 * 2**30)
    (root / "without_mask" / "l1.jpg").symlink_to("l2.jpg")
    (root / "without_mask" / "l2.jpg").symlink_to("l1.jpg")
    return root


@pytest.mark.parametrize("command", ["audit", "train"])
def test_photos_that_cannot_be_read_are_skipped_with_one_warning_each(
    tmp_path: Path, command: str
) -> None:
    obs = _with_unreadable_photos(class_subset(tmp_path / "obs", 3))
    args = ["data", "audit", str(obs)]
    if command == "train":
        args = ["train", str(obs), "--out", str(tmp_path / "o"), "--epochs", "1", "--views", "1"]
    limit = 4 * 2**30  # reading the 5 GB file whole would fail
    proc = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", *args],
        capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if "warning: skipping" in line]
    assert len(skipped) == 4, proc.stderr
    assert f"{obs / 'with_mask' / 'pipe.jpg'}: not a regular file" in proc.stderr
    assert f"{obs / 'with_mask' / 'huge.jpg'}: the file is 5120 MiB" in proc.stderr
    assert f"{obs / 'without_mask' / 'l1.jpg'}: a loop of symbolic links" in proc.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"junk\nrow\n", "no path or group column"),
        (b"path,label\nwith_mask/a.jpg,mask\n", "no group column"),
        (b"path,group\nwith_mask/\xff\xfe.jpg,1\n", "not UTF-8 text"),
        (b"path,group\nwith_mask/a.jpg\n", "line 2 has too few fields"),
    ],
)
def test_a_broken_groups_csv_is_one_line_naming_it(
    tmp_path: Path, content: bytes, message: str
) -> None:
    obs = class_subset(tmp_path / "obs", 2)
    (obs / "groups.csv").write_bytes(content)
    assert_one_line_error(run_cli("data", "audit", str(obs)), f"{obs / 'groups.csv'}: {message}")
    out = tmp_path / "o"
    assert_one_line_error(run_cli("train", str(obs), "--out", str(out)), message)
    assert not out.exists()


def test_a_groups_csv_that_is_a_pipe_or_too_large_is_one_line_unread(tmp_path: Path) -> None:
    """A FIFO was ignored without a word, and a huge file would have been read whole."""
    obs = class_subset(tmp_path / "obs", 2)
    groups = obs / "groups.csv"
    groups.unlink(missing_ok=True)
    os.mkfifo(groups)
    proc = run_cli("data", "audit", str(obs), timeout=60)
    assert_one_line_error(proc, f"{groups}: not a regular file")
    groups.unlink()
    with open(groups, "wb") as sparse:
        sparse.truncate(5 * 2**30)
    proc = run_cli("data", "audit", str(obs), timeout=60)
    assert_one_line_error(proc, f"{groups}: the file is 5120 MiB, more than the limit of 16 MiB")


def _edit_voc(xml: Path, pattern: str, new: str) -> None:
    """The first match of `pattern` in an annotation replaced by `new`."""
    text, n = re.subn(pattern, new, xml.read_text(), count=1, flags=re.DOTALL)
    assert n == 1
    xml.unlink()  # a link into the shared data set: write a copy
    xml.write_text(text)


def test_hostile_voc_annotations_are_skipped_with_warnings(tmp_path: Path) -> None:
    voc = voc_subset(tmp_path / "voc", 5)
    first, second, third, fourth, fifth = sorted((voc / "annotations").glob("*.xml"))
    _edit_voc(first, r"<xmin>\d+</xmin>", "<xmin>1e400</xmin>")
    _edit_voc(second, r"<xmax>\d+</xmax>", "<xmax>inf</xmax>")
    _edit_voc(third, r"<bndbox>.*?</bndbox>", "")
    _edit_voc(fourth, r"<xmin>\d+</xmin>", "<xmin>90000</xmin>")
    _edit_voc(fourth, r"<xmax>\d+</xmax>", "<xmax>99000</xmax>")
    (tmp_path / "outside.jpg").symlink_to((voc / "images" / f"{fifth.stem}.jpg").resolve())
    _edit_voc(fifth, r"<filename>[^<]*</filename>", "<filename>../../outside.jpg</filename>")
    os.mkfifo(voc / "annotations" / "pipe.xml")  # reading it would wait for a writer forever
    proc = run_cli("data", "audit", str(voc), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    err = proc.stderr
    assert "pipe.xml: not a regular file" in err
    assert "voc: skipped 2 boxes with coordinates that are not finite numbers" in err
    assert "voc: skipped 1 boxes with no <bndbox>" in err and "unknown class" not in err
    assert "skipped 1 annotated boxes entirely outside their photo" in err
    assert f"skipping {fifth}: its <filename> '../../outside.jpg' is outside the dataset" in err
