"""What a training run is told: the string options as enums, each recipe's defaults, and
`TrainConfig`, saved resolved as config.json.

Light enough for the command-line parser to import (no NumPy, no torch), so `--help` states
the choices and the recipe defaults from here. The enums are `StrEnum`s: argparse, JSON and
config files keep the same strings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from maskwatch.defaults import (
    BATCH_RANGE,
    DEFAULT_INPUT_SIZE,
    EPOCHS_RANGE,
    FINETUNE_EPOCHS_RANGE,
    FRACTION,
    INPUT_SIZE_RANGE,
    LEARNING_RATE_RANGE,
    LIMIT_RANGE,
    MAX_SETTINGS_BYTES,
    PATIENCE_RANGE,
    SEED_RANGE,
    VAL_FRACTION_RANGE,
    VIEWS_RANGE,
    Range,
)
from maskwatch.errors import DatasetError, SettingError, SourceError
from maskwatch.jsontext import parse_json

log = logging.getLogger("maskwatch")


class Recipe(StrEnum):
    """seed: the original project's (frozen backbone, head only); real: for real photos (richer
    augmentation, balanced classes, fine-tuning, validation)."""

    SEED = "seed"
    REAL = "real"


class Split(StrEnum):
    """group: groups and near-copies on one side; random: per image, as the seed did (leaks)."""

    GROUP = "group"
    RANDOM = "random"


class Framing(StrEnum):
    """detector: VOC faces cropped at the matched detection, like `detect`; annotation: as drawn."""

    DETECTOR = "detector"
    ANNOTATION = "annotation"


class Augment(StrEnum):
    """Which augmentation makes the cached training views (see train/augment.py)."""

    SEED = "seed"
    REAL = "real"
    NEGATIVES = "negatives"  # real, plus hard negatives on bare faces
    NONE = "none"


class HardMining(StrEnum):
    """How the training loss treats hard views: none (each counts alike); ohem (online hard
    example mining: only the hardest OHEM_KEPT of each batch counts); focal (focal loss: each
    view's loss scaled by (1 - p)^FOCAL_GAMMA, p the probability of its right class);
    ohem-head (OHEM while the head is trained, plain cross-entropy while fine-tuning)."""

    NONE = "none"
    OHEM = "ohem"
    OHEM_HEAD = "ohem-head"
    FOCAL = "focal"

    def in_stage(self, fine_tuning: bool) -> HardMining:
        """The loss this choice means while the head is trained or while fine-tuning."""
        if self is HardMining.OHEM_HEAD:
            return HardMining.NONE if fine_tuning else HardMining.OHEM
        return self


OHEM_KEPT = 0.5  # share of each batch, its hardest views, whose loss counts with OHEM
FOCAL_GAMMA = 2.0  # focal loss's focusing parameter (Lin et al. 2017)


# Sources whose masks are pasted on (see the datasets' README): not "real" in headline figures.
SYNTHETIC_SOURCES = ("observations",)

Option = TypeVar("Option", bound=StrEnum)


def choices(kind: type[StrEnum]) -> list[str]:
    """An option's values as plain strings, for argparse (which would print members' reprs)."""
    return [member.value for member in kind]


def _member(kind: type[Option], value: Any, name: str) -> Option:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(choices(kind))
        raise DatasetError(f"unknown {name} {value!r}; choose from {allowed}") from None


@dataclass(frozen=True)
class Numeric:
    """A numeric option of `train`: whole or not, and its allowed range (the command line's
    option and TrainConfig check the same)."""

    kind: type[int] | type[float]
    allowed: Range


NUMERIC_OPTIONS: dict[str, Numeric] = {
    "epochs": Numeric(int, EPOCHS_RANGE),
    "finetune_epochs": Numeric(int, FINETUNE_EPOCHS_RANGE),
    "learning_rate": Numeric(float, LEARNING_RATE_RANGE),
    "finetune_learning_rate": Numeric(float, LEARNING_RATE_RANGE),
    "patience": Numeric(int, PATIENCE_RANGE),
    "views": Numeric(int, VIEWS_RANGE),
    "val_fraction": Numeric(float, VAL_FRACTION_RANGE),
    "batch_size": Numeric(int, BATCH_RANGE),
    "test_fraction": Numeric(float, FRACTION),
    "seed": Numeric(int, SEED_RANGE),
    "input_size": Numeric(int, INPUT_SIZE_RANGE),
    "limit_per_class": Numeric(int, LIMIT_RANGE),
}
FLAGS = ("balance_classes", "framing_jitter", "align")  # true or false (or unset: null)
TEXT_LISTS = ("data", "synthetic_sources", "command")


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SettingError(f"{name} must be a non-empty string, not {value!r}")


def _check_data_folders(data: list[str], path: Path) -> None:
    """The DATA folders a config file names, found from here: a relative one is read from the
    folder train runs in, which may not be the one the config was written in."""
    from maskwatch.train.data import parse_data_spec

    for spec in data:
        if not parse_data_spec(spec)[0].is_dir():
            raise DatasetError(
                f"training configuration {path}: its data folder {spec} is not a folder seen from "
                f"{Path.cwd()} (run train where the config was written, or give DATA)"
            )


@dataclass(frozen=True)
class RecipeDefaults:
    """The options whose defaults differ by recipe."""

    epochs: int
    learning_rate: float
    views: int
    augment: Augment
    finetune_epochs: int
    finetune_learning_rate: float
    val_fraction: float
    balance_classes: bool
    patience: int
    framing_jitter: bool
    hard_mining: HardMining


RECIPES: dict[Recipe, RecipeDefaults] = {
    Recipe.SEED: RecipeDefaults(
        epochs=40,
        learning_rate=1e-4,
        views=8,
        augment=Augment.SEED,
        finetune_epochs=0,
        finetune_learning_rate=1e-4,
        val_fraction=0.0,
        balance_classes=False,
        patience=0,
        framing_jitter=False,
        hard_mining=HardMining.NONE,
    ),
    Recipe.REAL: RecipeDefaults(
        epochs=30,
        learning_rate=1e-3,
        views=8,
        augment=Augment.REAL,
        finetune_epochs=15,
        finetune_learning_rate=1e-4,
        val_fraction=0.15,
        balance_classes=True,
        patience=4,
        framing_jitter=False,
        hard_mining=HardMining.NONE,
    ),
}


@dataclass
class TrainConfig:
    """Everything that determines a training run. Options left None take their recipe's
    default in `resolved()`; string options become enums here, so a bad value in a config file
    is refused by name."""

    data: list[str]
    out: str = "runs/train"
    recipe: Recipe = Recipe.SEED
    epochs: int | None = None
    batch_size: int = 32
    learning_rate: float | None = None
    views: int | None = None
    augment: Augment | None = None
    finetune_epochs: int | None = None
    finetune_learning_rate: float | None = None
    patience: int | None = None
    test_fraction: float = 0.3
    val_fraction: float | None = None
    split: Split = Split.GROUP
    framing: Framing = Framing.DETECTOR
    seed: int = 0
    input_size: int = DEFAULT_INPUT_SIZE
    limit_per_class: int | None = None
    balance_classes: bool | None = None
    framing_jitter: bool | None = None
    hard_mining: HardMining | None = None
    feature_cache: str | None = None  # folder of cached feature maps shared between runs
    align: bool = False  # crops aligned by landmarks (cross-source comparisons only)
    synthetic_sources: list[str] = field(default_factory=lambda: list(SYNTHETIC_SOURCES))
    command: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._check_values()
        self.recipe = _member(Recipe, self.recipe, "recipe")
        self.split = _member(Split, self.split, "split")
        self.framing = _member(Framing, self.framing, "framing")
        if self.augment is not None:
            self.augment = _member(Augment, self.augment, "augment")
        if self.hard_mining is not None:
            self.hard_mining = _member(HardMining, self.hard_mining, "hard mining")

    def _check_values(self) -> None:
        """SettingError naming the first field of a wrong type or out of its range (values
        from a config file reach here unchecked)."""
        for name, numeric in NUMERIC_OPTIONS.items():
            value = getattr(self, name)
            if value is not None:
                numeric.allowed.check(name, value, whole=numeric.kind is int)
        for name in FLAGS:
            if not isinstance(getattr(self, name), bool | None):
                raise SettingError(f"{name} must be true or false, not {getattr(self, name)!r}")
        for name in TEXT_LISTS:
            items = getattr(self, name)
            if not isinstance(items, list):
                raise SettingError(f"{name} must be a list of strings, not {items!r}")
            for item in items:
                _check_text(f"each of {name}", item)
        if not self.data:
            raise SettingError("data must list at least one DATA folder")
        _check_text("out", self.out)
        if self.feature_cache is not None:
            _check_text("feature_cache", self.feature_cache)

    def resolved(self) -> TrainConfig:
        """Recipe defaults filled in wherever no value was given; checks the fractions."""
        defaults = asdict(RECIPES[self.recipe])
        config = replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
        if (
            not 0 < config.test_fraction < 1
            or not 0 <= (config.val_fraction or 0) < 1 - config.test_fraction
        ):
            raise DatasetError(
                "test and validation fractions must lie between 0 and 1 and leave data to train on"
            )
        return config

    @classmethod
    def from_file(cls, path: Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """A config.json written by an earlier run (unknown keys are ignored, with a warning),
        its values replaced by `overrides` (options given beside it). A new recipe brings its
        own defaults for what it sets, unless they are overridden too. Every value is checked:
        one SettingError or DatasetError naming the file and field."""
        from maskwatch.images import read_file

        try:
            text = read_file(path, MAX_SETTINGS_BYTES, "a training configuration")
            data = parse_json(text.decode("utf-8"))
        except SourceError as exc:
            raise DatasetError(f"cannot read training configuration {exc}") from exc
        except ValueError as exc:  # not UTF-8 (UnicodeDecodeError is one) or not JSON
            raise DatasetError(f"cannot read training configuration {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise DatasetError(f"cannot read training configuration {path}: not a JSON object")
        given = dict(overrides or {})
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if unknown := sorted(set(data) - known):
            log.warning("training configuration %s: ignoring %s", path, ", ".join(unknown))
        if "recipe" in given:
            for name in {f.name for f in fields(RecipeDefaults)} - given.keys():
                values.pop(name, None)
        values.update(given)
        if "data" not in values:
            raise DatasetError(
                f"training configuration {path} has no data (the DATA folders to train on)"
            )
        try:
            config = cls(**values)
            config.resolved()  # the fractions are checked together once the recipe's are known
        except (SettingError, DatasetError) as exc:
            raise type(exc)(f"training configuration {path}: {exc}") from exc
        if "data" not in given:
            _check_data_folders(config.data, path)
        return config

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"
