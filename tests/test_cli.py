"""The `maskwatch` command as users run it: real models, real photos, a rendered video."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from conftest import MIRROR, THREE_FACES, assert_one_line_error, run_cli, without_package
from maskwatch.cli import build_parser, main


def test_detect_json_lines_for_a_folder(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.jpg").symlink_to(THREE_FACES)
    (tmp_path / "b.jpg").symlink_to(MIRROR / "d898baff7259945cdc95d3b400c3af7b.jpg")
    assert main(["detect", "--source", str(tmp_path), "--no-show", "--json", "-"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(d["source"]).name for d in lines] == ["a.jpg", "b.jpg"]
    assert [d["frame"] for d in lines] == [0, 1]
    first = lines[0]
    assert set(first) == {"source", "frame", "time", "width", "height", "faces"}
    assert (first["width"], first["height"]) == (660, 281)
    assert len(first["faces"]) == 3
    for face in first["faces"]:
        assert set(face) == {
            "box",
            "score",
            "label",
            "confidence",
            "probs",
            "track",
            "settled",
            "classified",
        }
        assert face["settled"] is (face["label"] != "uncertain")  # a photo's label is final
        assert face["classified"] is True  # photos classify every face
        assert face["label"] in {"mask", "no_mask", "incorrect", "uncertain"}
        assert face["confidence"] == pytest.approx(max(face["probs"].values()), abs=1e-4)
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= 660 and 0 <= y1 < y2 <= 281


def test_detect_video_to_annotated_video_and_json_file(tmp_path: Path, video: Path) -> None:
    out, log = tmp_path / "out.mp4", tmp_path / "frames.jsonl"
    proc = run_cli(
        "detect", "--source", str(video), "--no-show", "--save", str(out), "--json", str(log)
    )
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(frames) == 30
    assert frames[-1]["time"] == pytest.approx(29 / 15, abs=0.01)
    assert sum(len(f["faces"]) for f in frames) >= 80  # three faces in (nearly) every frame
    # A new face is a person (gets a track id) once seen in 3 frames; until then "track": null.
    assert all(face["track"] is None for face in frames[0]["faces"])
    tracks = [face["track"] for f in frames[2:] for face in f["faces"]]
    people = [t for t in tracks if t is not None]
    assert all(isinstance(t, int) for t in people) and len(people) >= 0.9 * len(tracks)
    assert 3 <= len(set(people)) <= 6, "the same three people should keep their track ids"
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape == (480, 640, 3)
    assert not list(tmp_path.glob(".*part*")), "temporary files left behind"


def test_detect_saves_annotated_images_with_labelled_boxes(tmp_path: Path) -> None:
    out = tmp_path / "annotated"
    assert (
        main(["-q", "detect", "--source", str(THREE_FACES), "--no-show", "--save", str(out)]) == 0
    )
    written = cv2.imread(str(out / THREE_FACES.name))
    original = cv2.imread(str(THREE_FACES))
    assert written.shape == original.shape
    assert (cv2.absdiff(written, original).max(axis=2) > 60).sum() > 2000


@pytest.mark.parametrize(("blur", "blurred"), [("all", 3), ("no_mask", None), ("none", 0)])
def test_blur_hides_faces_in_saved_output(tmp_path: Path, blur: str, blurred: int | None) -> None:
    out, log = tmp_path / "out.png", tmp_path / "faces.jsonl"
    assert (
        main(
            [
                "-q",
                "detect",
                "--source",
                str(THREE_FACES),
                "--no-show",
                "--save",
                str(out),
                "--json",
                str(log),
                "--blur",
                blur,
            ]
        )
        == 0
    )
    faces = json.loads(log.read_text())["faces"]
    image = cv2.imread(str(out))
    pixelated = 0
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        inner = image[(y1 + y2) // 2 : y2 - 4, x1 + 4 : x2 - 4].reshape(-1, 3)  # below the label
        pixelated += len(np.unique(inner, axis=0)) <= 40
    if blurred is None:  # exactly the faces not labelled mask (uncertain ones too)
        blurred = sum(f["label"] != "mask" for f in faces)
        assert blurred >= 1
    assert pixelated == blurred


def test_classify_prints_json_per_crop(tmp_path: Path, three_faces, detector, capsys) -> None:  # type: ignore[no-untyped-def]
    from maskwatch.faces import crop_face

    faces = detector.detect(three_faces)
    (tmp_path / "nested").mkdir()
    for i, box in enumerate(faces.boxes):
        cv2.imwrite(str(tmp_path / "nested" / f"face{i}.png"), crop_face(three_faces, box, 160))
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    assert main(["classify", str(tmp_path)]) == 1  # the junk was skipped: not a clean run
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3
    assert err.splitlines()[-1].startswith("maskwatch: error: 1 of 4 files could not be read")
    assert all(set(r) == {"path", "label", "confidence", "probs", "framed", "box"} for r in rows)
    assert all(r["framed"] == "face" for r in rows)
    assert sorted(Path(r["path"]).name for r in rows) == ["face0.png", "face1.png", "face2.png"]
    assert all(r["confidence"] == max(r["probs"].values()) for r in rows)
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-3 for r in rows)
    assert "no_mask" in {r["label"] for r in rows}


def test_demo_writes_annotated_photos_and_a_contact_sheet(tmp_path: Path) -> None:
    proc = run_cli("demo", "--out", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stderr
    assert "total" in proc.stdout and "no_mask" in proc.stdout
    files = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert len(files) == 7 and "contact_sheet.jpg" in files
    sheet = cv2.imread(str(tmp_path / "demo" / "contact_sheet.jpg"))
    assert sheet is not None and sheet.shape[1] >= 960
    total = proc.stdout.strip().splitlines()[-3].split()
    assert total[0] == "total" and int(total[1]) >= 15


def test_models_lists_and_verifies_everything(tmp_path: Path) -> None:
    proc = run_cli("models", "--fetch")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("yunet", "mobilenet_v2", "mask_classifier", "sample-896a9f04"):
        assert name in proc.stdout
    assert "CORRUPT" not in proc.stdout and "not downloaded" not in proc.stdout


def test_models_lists_and_verifies_the_derived_detector_copy(tmp_path: Path) -> None:
    env = {**os.environ, "MASKWATCH_HOME": str(tmp_path)}
    copy = tmp_path / "derived" / "face_detection_yunet_2023mar-any-size-v1-8f2383e4dd3cfbb4.onnx"

    def derived_row(*args: str) -> tuple[int, str]:
        proc = run_cli("models", *args, env=env)
        rows = [line.split(maxsplit=3) for line in proc.stdout.splitlines()]
        [(_, kind, rest)] = [(r[0], r[1:3], r[3]) for r in rows if r[0] == "yunet-any-size-v1"]
        assert kind == ["detector", "(derived)"] and rest.endswith(f"  {copy}")
        return proc.returncode, rest.removesuffix(str(copy)).strip()

    assert derived_row() == (0, "waits for a verified yunet")
    made = derived_row("--fetch")
    size = round(copy.stat().st_size / 1024)
    assert made == derived_row() == (0, f"ok ({size} KB, from the verified yunet)")
    copy.write_bytes(b"junk")
    assert derived_row() == (1, "CORRUPT (not the conversion of the verified yunet)")
    assert derived_row("--fetch") == (0, f"ok ({size} KB, from the verified yunet)")
    copy.unlink()
    assert derived_row() == (0, "not made yet (made on first use)")
    copy.symlink_to(copy)  # a loop of links is a problem, not a copy still to make
    assert derived_row() == (1, "CORRUPT (not the conversion of the verified yunet)")
    assert derived_row("--fetch") == (0, f"ok ({size} KB, from the verified yunet)")
    shutil.rmtree(copy.parent)
    copy.parent.write_text("a file where the folder goes")
    assert derived_row() == (1, f"CORRUPT ({copy.parent} is not a folder)")
    failed = derived_row("--fetch")
    assert failed == (1, f"FAILED: cannot write {copy.parent}: File exists"), failed
    copy.parent.unlink()
    (copy / "mine").mkdir(parents=True)  # a folder in its place, with a user's files
    assert derived_row() == (1, "CORRUPT (a folder is in its place, left alone)")
    failed = derived_row("--fetch")
    assert failed == (1, f"FAILED: {copy} is a folder, left alone"), failed
    assert (copy / "mine").is_dir()


def test_detect_and_import_do_not_load_torch(tmp_path: Path) -> None:
    code = (
        "import sys, maskwatch.cli as c\n"
        f"rc = c.main(['-q', 'detect', '--source', {str(THREE_FACES)!r}, '--no-show', "
        f"'--json', {str(tmp_path / 'o.jsonl')!r}])\n"
        "assert rc == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


HEAVY_MODULES = ("cv2", "numpy", "onnxruntime", "torch", "fastapi", "matplotlib", "PIL")


def test_version_answers_without_heavy_imports() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("maskwatch ")
    code = (
        "import sys, maskwatch.cli as c\n"
        "try:\n    c.main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        f"print('heavy:', *(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "heavy:", f"--version imported {proc.stdout}"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["detect", "--source", "no/such/file.mp4", "--no-show", "--json", "-"],
            ["no/such/file.mp4"],
        ),
        (["detect", "--source", "98", "--no-show", "--json", "-"], ["cannot open camera 98"]),
        (["detect", "--source", str(THREE_FACES), "--no-show"], ["--no-show needs"]),
        (["classify", "no/such/crop.png"], ["no such file"]),
        (["evaluate", "--model", "missing.onnx", "x"], ["missing.onnx"]),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], needles: list[str]) -> None:
    assert_one_line_error(run_cli(*args), *needles)


def test_corrupt_or_wrong_models_are_one_clear_line(tmp_path: Path) -> None:
    from maskwatch.classifier import default_model_path, metadata_path

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01garbage" * 100)
    metadata_path(corrupt).write_text(metadata_path(default_model_path()).read_text())
    proc = run_cli(
        "detect", "--source", str(THREE_FACES), "--no-show", "--json", "-", "--model", str(corrupt)
    )
    assert_one_line_error(proc, "corrupt.onnx", "not a valid ONNX")

    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(default_model_path().read_bytes())
    meta = json.loads(metadata_path(default_model_path()).read_text())
    meta["input_size"] = 128
    metadata_path(wrong).write_text(json.dumps(meta))
    assert_one_line_error(run_cli("classify", str(THREE_FACES), "--model", str(wrong)), "3x128x128")

    orphan = tmp_path / "orphan.onnx"
    orphan.write_bytes(default_model_path().read_bytes())
    assert_one_line_error(
        run_cli("classify", str(THREE_FACES), "--model", str(orphan)), "metadata not found"
    )


def test_showing_without_a_display_is_one_clear_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY"}}
    proc = run_cli("detect", "--source", str(THREE_FACES), env=env)
    assert_one_line_error(proc, "no display", "--no-show")


def test_quiet_may_come_before_or_after_the_command(tmp_path: Path) -> None:
    args = ["detect", "--source", str(THREE_FACES), "--no-show", "--json", str(tmp_path / "x")]
    assert "faces" in run_cli(*args).stderr, "without -q it reports"
    for quiet in (["-q", *args], [*args, "-q"], [*args, "--quiet"]):
        proc = run_cli(*quiet)
        assert proc.returncode == 0 and proc.stderr == "", quiet


def test_every_command_and_sub_command_takes_q_and_says_what_it_does() -> None:
    def commands(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, Any]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, command in action.choices.items():
                    yield f"{path} {name}", command
                    yield from commands(command, f"{path} {name}")

    found = dict(commands(build_parser(), "maskwatch"))
    assert "maskwatch data audit" in found
    for name, command in found.items():
        assert command.description, name
        assert "-q, --quiet" in command.format_help(), name


@pytest.mark.parametrize("command", [["data", "audit"], ["train"]])
def test_a_missing_train_extra_names_the_command(command: list[str], tmp_path: Path) -> None:
    proc = run_cli(*command, str(MIRROR), env=without_package("torch", tmp_path))
    assert_one_line_error(proc, f"maskwatch {' '.join(command)} needs the train extra")


def test_a_folder_where_nothing_is_readable_fails(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"junk")
    (tmp_path / "b.png").write_bytes(b"junk")
    proc = run_cli("detect", "--source", str(tmp_path), "--no-show", "--json", "-")
    assert_one_line_error(proc, "nothing could be read")
    assert proc.stderr.count("skipping") == 2
    assert proc.stdout == ""


def test_failed_runs_leave_no_output_file(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"junk")
    target = tmp_path / "out.jsonl"
    proc = run_cli("detect", "--source", str(tmp_path / "in"), "--no-show", "--json", str(target))
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == [tmp_path / "in"]


@pytest.mark.parametrize(
    "args",
    [("detect", "--classify-every", "0"), ("serve", "--port", "http"), ("detect", "--source"), ()],
)
def test_a_bad_command_line_is_one_line_that_points_at_help(args: tuple[str, ...]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("maskwatch") and "error:" in line and "--help)" in line


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ("detect", "--jsn", "-"),
            "maskwatch detect: error: unrecognized arguments: --jsn -; "
            "did you mean --json? (see maskwatch detect --help)",
        ),
        (
            ("data", "audit", ".", "--limt", "3"),
            "maskwatch data audit: error: unrecognized "
            "arguments: --limt 3 (see maskwatch data audit",
        ),
        (
            ("stats", sys.executable, "--zzz"),
            "maskwatch stats: error: unrecognized arguments: --zzz",
        ),
        (("detcet",), "maskwatch: error: argument COMMAND: invalid choice: 'detcet' (choose"),
        (("stats", sys.executable, "--by", "hours"), "maskwatch stats: error: argument --by"),
    ],
)
def test_an_unknown_option_is_said_by_its_command_with_the_nearest_one(
    args: tuple[str, ...], said: str
) -> None:
    """They were said by `maskwatch` with a pointer to the top-level help."""
    proc = run_cli(*args)
    assert proc.returncode == 2 and proc.stderr.startswith(said), proc.stderr
    if "invalid choice" in proc.stderr:
        assert proc.stderr.count("did you mean") == 1, proc.stderr


def test_running_out_of_memory_anywhere_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A MemoryError deep in a library (onnxruntime's calibrator under a memory limit ended
    `export` in NumPy's _ArrayMemoryError traceback) is one error line and exit 1."""
    from maskwatch import stats

    def summarise(*args: object, **kwargs: object) -> object:
        return np.zeros(2**62, np.uint8)  # more than any machine: NumPy raises at once

    monkeypatch.setattr(stats, "summarise", summarise)
    (tmp_path / "events.db").touch()
    assert main(["stats", str(tmp_path / "events.db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("maskwatch: error: out of memory (Unable to allocate"), err
    assert len(err.splitlines()) == 1, err


def test_a_library_logging_an_exception_is_one_line_with_its_cause() -> None:
    """uvicorn's "Exception in ASGI application\\n" reached the terminal as that alone, a
    literal \\n and no word of what went wrong."""
    from maskwatch.cli import LineFormatter

    try:
        raise FileNotFoundError(2, "No such file or directory", "/x/static/favicon.svg\nforged")
    except FileNotFoundError:
        record = logging.getLogger("uvicorn.error").makeRecord(
            "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application\n",
            (), sys.exc_info(),
        )  # fmt: skip
    line = LineFormatter().format(record)
    assert line == (
        "maskwatch: warning: Exception in ASGI application: FileNotFoundError: [Errno 2] No such "
        "file or directory: '/x/static/favicon.svg\\nforged'"
    )


@pytest.mark.parametrize(
    "name", ["", "*", "*.", "a..b", "x" * 64 + ".org", "http://cams.org", "cams.org:443", "-a.org"]
)
def test_an_allow_host_that_is_no_host_name_is_refused(name: str) -> None:
    proc = run_cli("serve", f"--allow-host={name}", "--port", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "argument --allow-host" in proc.stderr and "give a host name" in proc.stderr
