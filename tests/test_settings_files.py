"""Settings read from files: a training --config and a model's metadata JSON. Every bad field
is one error line naming the file and the field, before any work; options given beside
--config replace the file's values."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    DATASETS,
    THREE_FACES,
    assert_one_line_error,
    class_subset,
    free_port,
    run_cli,
)
from maskwatch.classifier import BUNDLED_MODELS, bundled_model_path, load_metadata, metadata_path
from maskwatch.train.config import RECIPES, Recipe, TrainConfig

OBSERVATIONS = str(DATASETS / "observations")
NON_UTF8 = b'{"data": ["\xff\xfe"]}'


@pytest.mark.parametrize(
    ("fields", "needles"),
    [
        ({"epochs": "lots"}, ["epochs must be a whole number, not 'lots'"]),
        ({"epochs": 2.5}, ["epochs must be a whole number"]),
        ({"batch_size": 0}, ["batch_size must be from 1 to 4096, not 0"]),
        ({"input_size": 99999}, ["input_size must be from 32 to 1024, not 99999"]),
        ({"test_fraction": "0.3"}, ["test_fraction must be a number, not '0.3'"]),
        ({"test_fraction": 0.9, "val_fraction": 0.5}, ["fractions must lie between"]),
        ({"views": -5}, ["views must be from 1 to 64, not -5"]),
        ({"views": True}, ["views must be a whole number, not True"]),
        ({"seed": "x"}, ["seed must be a whole number, not 'x'"]),
        ({"seed": 10**30}, ["seed must be from 0 to 4294967295"]),
        ({"learning_rate": 0}, ["learning_rate must be more than 0 and at most 1"]),
        ({"data": 5}, ["data must be a list of strings, not 5"]),
        ({"data": []}, ["data must list at least one DATA folder"]),
        ({"data": [""]}, ["each of data must be a non-empty string"]),
        ({"out": None}, ["out must be a non-empty string, not None"]),
        ({"align": "yes"}, ["align must be true or false, not 'yes'"]),
        ({"recipe": "fast"}, ["unknown recipe 'fast'"]),
        ({"data": None, "omit": "data"}, ["has no data"]),
    ],
)
def test_a_bad_config_field_is_one_line_naming_file_and_field(
    tmp_path: Path, fields: dict[str, Any], needles: list[str]
) -> None:
    values: dict[str, Any] = {"data": [OBSERVATIONS], "out": str(tmp_path / "run"), **fields}
    values.pop(values.pop("omit", "none"), None)
    config = tmp_path / "bad.json"
    config.write_text(json.dumps(values))
    proc = run_cli("train", "--config", str(config))
    assert_one_line_error(proc, str(config), *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b'{"data": ', "cannot read training configuration"),
        (NON_UTF8, "can't decode"),
    ],
)
def test_an_unreadable_config_is_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    config = tmp_path / "bad.json"
    config.write_bytes(content)
    assert_one_line_error(run_cli("train", "--config", str(config)), str(config), needle)


def test_options_given_with_a_config_replace_its_values(tmp_path: Path) -> None:
    saved = TrainConfig(data=[str(tmp_path)], out="old", epochs=5).resolved()
    path = tmp_path / "config.json"
    path.write_text(saved.to_json())
    repeated = TrainConfig.from_file(path, {"out": "new", "data": ["d"]})
    assert (repeated.out, repeated.data, repeated.epochs) == ("new", ["d"], 5)
    assert repeated.views == saved.views == RECIPES[Recipe.SEED].views
    # A new recipe brings its own defaults for what the saved, resolved run had filled in.
    real = TrainConfig.from_file(path, {"recipe": "real", "patience": 2}).resolved()
    assert real.recipe is Recipe.REAL and real.patience == 2
    assert real.epochs == RECIPES[Recipe.REAL].epochs
    assert real.finetune_epochs == RECIPES[Recipe.REAL].finetune_epochs
    path.write_text(json.dumps({"epochs": 3}))  # no data in the file, given beside it
    assert TrainConfig.from_file(path, {"data": ["d"]}).data == ["d"]


def test_a_configs_data_folder_not_found_from_here_names_the_config(tmp_path: Path) -> None:
    """A config written elsewhere holds `"data": ["data"]`, read from where train runs: the
    loader's bare "data: not a folder" named neither the file nor the field."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data": ["data-from-elsewhere"], "epochs": 1}))
    proc = run_cli("train", "--config", str(path))
    assert_one_line_error(
        proc, f"training configuration {path}: its data folder data-from-elsewhere is not a folder"
    )


def test_unknown_keys_of_a_config_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data": [str(tmp_path)], "epoch": 3, "views": 2}))
    with caplog.at_level(logging.WARNING, logger="maskwatch"):
        config = TrainConfig.from_file(path)
    assert config.views == 2 and config.epochs is None
    assert f"training configuration {path}: ignoring epoch" in caplog.text


def test_train_with_a_config_obeys_the_options_given_beside_it(tmp_path: Path) -> None:
    data = class_subset(tmp_path / "obs", 8)
    old, new = tmp_path / "old", tmp_path / "new"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": [str(data)], "out": str(old), "epochs": 40}))
    proc = run_cli(
        "train", "--config", str(config), "--epochs", "1", "--views", "1", "--out", str(new),
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not old.exists()
    written = json.loads((new / "config.json").read_text())
    assert (written["epochs"], written["views"], written["out"]) == (1, 1, str(new))
    assert written["data"] == [str(data)]
    assert (new / "mask_classifier.onnx").is_file()


def test_train_help_says_options_replace_the_configs() -> None:
    proc = run_cli("train", "--help")
    assert "replace its values" in " ".join(proc.stdout.split())


def test_the_bundled_models_metadata_loads() -> None:
    for name in BUNDLED_MODELS:
        assert load_metadata(bundled_model_path(name)).classes == ["mask", "no_mask", "incorrect"]


def _model_with(folder: Path, edit: Any) -> Path:
    """A copy of the bundled model whose metadata `edit` (a function of the JSON) changed."""
    model = folder / "model.onnx"
    shutil.copyfile(bundled_model_path(BUNDLED_MODELS[0]), model)
    meta = json.loads(metadata_path(bundled_model_path(BUNDLED_MODELS[0])).read_text())
    metadata_path(model).write_text(json.dumps(edit(meta)))
    return model


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("std", [0, 0, 0], "each of std must be from 0.01 to 1, not 0"),
        ("std", [1e-300, 1, 1], "each of std must be from 0.01 to 1, not 1e-300"),
        ("mean", [0], "mean must list 3 numbers (R, G, B), not [0]"),
        ("mean", [0.5, "x", 0.5], "each of mean must be a number, not 'x'"),
        ("color", "XYZ", "color must be RGB or BGR, not 'XYZ'"),
        ("crop_margin", -5, "crop_margin must be from 0 to 1, not -5"),
        ("uncertain_below", float("nan"), "uncertain_below must be from 0 to 1, not nan"),
        ("input_size", "224", "input_size must be a whole number, not '224'"),
        ("input_size", 0, "input_size must be from 32 to 1024, not 0"),
        ("temperature", 0, "temperature must be from 0.01 to 100, not 0"),
        ("temperature", 1e-320, "temperature must be from 0.01 to 100, not 1e-320"),
        ("format", "maskwatch-classifier/2", "format must be maskwatch-classifier/1, not"),
        ("classes", ["mask", "mask"], "classes must list two or three of"),
        ("classes", "mask", "classes must list two or three of"),
        ("training", [], "training must be a JSON object, not []"),
    ],
)
def test_a_bad_metadata_field_is_one_line_naming_file_and_field(
    tmp_path: Path, field: str, value: Any, needle: str
) -> None:
    model = _model_with(tmp_path, lambda meta: {**meta, field: value})
    proc = run_cli("classify", str(THREE_FACES), "--model", str(model))
    assert_one_line_error(proc, str(metadata_path(model)), needle)


@pytest.mark.parametrize(
    "args",
    [
        ["classify", str(THREE_FACES)],
        ["detect", "--source", str(THREE_FACES), "--no-show", "--json", "-"],
        ["serve", "--port", str(free_port())],
    ],
)
def test_unreadable_metadata_is_one_line_in_every_command(tmp_path: Path, args: list[str]) -> None:
    model = _model_with(tmp_path, lambda meta: [meta])
    assert_one_line_error(run_cli(*args, "--model", str(model)), "must hold a JSON object")
    metadata_path(model).write_bytes(b'{"classes": ["\xff"]}')
    proc = run_cli(*args, "--model", str(model), timeout=60)
    assert_one_line_error(proc, str(metadata_path(model)), "can't decode")
    metadata_path(model).unlink()
    os.mkfifo(metadata_path(model))  # would be waited on
    proc = run_cli(*args, "--model", str(model), timeout=60)
    assert_one_line_error(proc, f"{metadata_path(model)}: not a regular file")


def test_a_config_that_is_a_pipe_or_too_large_is_one_line_without_reading_it(
    tmp_path: Path,
) -> None:
    pipe, huge = tmp_path / "pipe.json", tmp_path / "huge.json"
    os.mkfifo(pipe)
    with open(huge, "wb") as sparse:
        sparse.truncate(5 * 2**30)
    for config, reason in ((pipe, "not a regular file"), (huge, "the file is 5120 MiB, more")):
        proc = run_cli("train", "--config", str(config), timeout=60)
        assert_one_line_error(proc, f"cannot read training configuration {config}: {reason}")


def test_json_nested_deeper_than_python_parses_is_one_line(tmp_path: Path) -> None:
    """Nested 100,000 deep, a config or model metadata ended in a RecursionError traceback."""
    deep = '{"a":' * 100_000
    config = tmp_path / "deep.json"
    config.write_text(deep)
    proc = run_cli("train", "--config", str(config))
    assert_one_line_error(proc, f"cannot read training configuration {config}: nested too deeply")
    model = _model_with(tmp_path, lambda meta: meta)
    metadata_path(model).write_text(deep)
    proc = run_cli("classify", str(THREE_FACES), "--model", str(model))
    assert_one_line_error(proc, f"model metadata {metadata_path(model)} is not valid JSON: nested")


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_a_face_list_that_is_a_pipe_or_too_large_is_one_line_without_reading_it(
    tmp_path: Path, command: str
) -> None:
    """`evaluate --faces` and `export --exclude-faces` waited for ever on a FIFO."""
    pipe, huge = tmp_path / "pipe.csv", tmp_path / "huge.csv"
    os.mkfifo(pipe)
    with open(huge, "wb") as sparse:
        sparse.truncate(5 * 2**30)
    model = str(bundled_model_path(BUNDLED_MODELS[0]))
    for faces, reason in ((pipe, "not a regular file"), (huge, "the file is 5120 MiB, more")):
        if command == "evaluate":
            args = ["evaluate", "--model", model, "--faces", str(faces)]
        else:
            out = str(tmp_path / "int8.onnx")
            args = ["export", "--int8", "--calibrate", OBSERVATIONS, "--exclude-faces", str(faces)]
            args += ["--model", model, "--out", out]
        proc = run_cli(*args, timeout=60)
        assert_one_line_error(proc, f"cannot read the face list {faces}: {reason}")
    assert not (tmp_path / "int8.onnx").exists()


def test_export_refuses_to_write_over_its_own_model_before_calibrating(tmp_path: Path) -> None:
    model = _model_with(tmp_path, lambda meta: meta)
    before = model.read_bytes(), metadata_path(model).read_text()
    for out in (model, model.with_suffix(".bin")):  # the second's metadata is the model's
        args = ["export", "--int8", "--calibrate", OBSERVATIONS, "--model", str(model)]
        proc = run_cli(*args, "--out", str(out), timeout=60)
        assert_one_line_error(proc, "is the input", "choose another name")
    assert (model.read_bytes(), metadata_path(model).read_text()) == before
