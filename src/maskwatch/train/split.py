"""Splitting without leakage: groups, near-copies merged into them, train / validation / test
by group, and how much a split leaks anyway.

A *group* is a set of faces that must stay on one side of every split (the faces of one photo,
a `groups.csv` group, byte-identical files; see data.py). Photos that are near-duplicates of
each other (dedup.py) join their groups. `plan_split` does it all for a training run and
refuses a split that leaves a class out of a side; `train` and `data audit` report leakage
with the same `leakage`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from maskwatch.errors import DatasetError
from maskwatch.train.config import Split, TrainConfig
from maskwatch.train.dedup import near_duplicate_pairs
from maskwatch.train.framing import FramedSet

log = logging.getLogger("maskwatch")


def merge_groups(groups: list[str], pairs: list[tuple[int, int]]) -> list[str]:
    """Groups joined wherever a pair links them (union-find); returns a group key per item."""
    parent: dict[str, str] = {g: g for g in groups}

    def root(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for i, j in pairs:
        a, b = root(groups[i]), root(groups[j])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(g) for g in groups]


def grouped(framed: FramedSet) -> tuple[list[str], list[tuple[int, int]]]:
    """Face groups merged wherever two photos are near-duplicates; and those photo pairs."""
    groups = [s.group for s in framed.samples]
    first_face: dict[int, int] = {}
    for i, p in enumerate(framed.photo_of):
        first_face.setdefault(int(p), i)
    pairs = [
        (a, b)
        for a, b in near_duplicate_pairs(framed.hashes, framed.mirrored)
        if a in first_face and b in first_face
    ]
    return merge_groups(groups, [(first_face[a], first_face[b]) for a, b in pairs]), pairs


def split_groups(
    groups: list[str], labels: list[str], test_fraction: float, seed: int
) -> np.ndarray:
    """Boolean mask of test samples; whole groups go to one side, classes stay near `test_fraction`.

    Groups are visited in a seeded random order and go to test while the test share of their
    majority class is below the target.
    """
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    class_total = Counter(labels)
    class_test: Counter[str] = Counter()
    test = np.zeros(len(groups), bool)
    keys = list(by_group)
    for k in rng.permutation(len(keys)):
        members = by_group[keys[int(k)]]
        majority = Counter(labels[i] for i in members).most_common(1)[0][0]
        if class_test[majority] + len(members) / 2 <= test_fraction * class_total[majority]:
            test[members] = True
            class_test.update(labels[i] for i in members)
    return test


def split_random(n: int, labels: list[str], test_fraction: float, seed: int) -> np.ndarray:
    """Per-image stratified random split: the seed's way, which leaks near-copies into test."""
    rng = np.random.default_rng(seed)
    test = np.zeros(n, bool)
    for label in sorted(set(labels)):
        idx = np.array([i for i in range(n) if labels[i] == label])
        chosen = rng.choice(idx, size=round(test_fraction * len(idx)), replace=False)
        test[chosen] = True
    return test


def leakage(
    framed: FramedSet, groups: list[str], test: np.ndarray, pairs: list[tuple[int, int]]
) -> tuple[int, int]:
    """(held-out faces with a group-mate, the same photo or a near-copy photo in training,
    near-copy photo pairs crossing the split)."""
    train_groups = {g for g, t in zip(groups, test, strict=True) if not t}
    leaked = np.array([t and g in train_groups for g, t in zip(groups, test, strict=True)])
    photo_test = np.zeros(len(framed.photos), bool)
    photo_train = np.zeros(len(framed.photos), bool)
    np.logical_or.at(photo_test, framed.photo_of, test)
    np.logical_or.at(photo_train, framed.photo_of, ~test)
    crossing = [
        (i, j)
        for i, j in pairs
        if (photo_test[i] and photo_train[j]) or (photo_train[i] and photo_test[j])
    ]
    near_copy_photos = [i for p in crossing for i in p]
    leaked |= test & photo_train[framed.photo_of]
    leaked |= test & np.isin(framed.photo_of, near_copy_photos)
    return int(leaked.sum()), len(crossing)


@dataclass
class SplitPlan:
    """Which faces train, validate and test, and how much the test side leaks."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    leaked: int
    crossing: int

    @property
    def leaked_fraction(self) -> float:
        """Share of held-out faces with a near-copy, the same photo or a group-mate in
        training."""
        return self.leaked / max(1, int(self.test.sum()))

    def faces(self, framed: FramedSet) -> dict[str, dict[str, int]]:
        """Faces per `source/label` on each side, as the model's metadata records them."""
        return {
            side: dict(
                Counter(
                    f"{s.source}/{s.label}" for s, m in zip(framed.samples, mask, strict=True) if m
                )
            )
            for side, mask in (("train", self.train), ("validation", self.val), ("test", self.test))
        }


def _test_and_validation(
    config: TrainConfig, groups: list[str], labels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(test mask, validation mask); validation is carved out of what is not test, by group."""
    n = len(labels)
    if config.split == Split.GROUP:
        test = split_groups(groups, labels, config.test_fraction, config.seed)
    else:
        test = split_random(n, labels, config.test_fraction, config.seed)
    val = np.zeros(n, bool)
    if config.val_fraction:
        rest = np.flatnonzero(~test)
        share = config.val_fraction / (1 - config.test_fraction)
        chosen = split_groups(
            [groups[i] for i in rest], [labels[i] for i in rest], share, config.seed + 1
        )
        val[rest[chosen]] = True
    return test, val


def plan_split(config: TrainConfig, framed: FramedSet, classes: list[str]) -> SplitPlan:
    """Split by group, warn about leakage, and refuse a split that lacks a class on a side."""
    labels = [s.label for s in framed.samples]
    groups, pairs = grouped(framed)
    test, val = _test_and_validation(config, groups, labels)
    leaked, crossing = leakage(framed, groups, test, pairs)
    plan = SplitPlan(~test & ~val, val, test, leaked, crossing)
    if leaked:
        log.warning(
            "%d of %d held-out faces (%.0f%%) have a near-copy, the same photo or a "
            "group-mate in training (%d near-copy pairs cross the split); accuracy "
            "measured on them is inflated",
            leaked,
            int(test.sum()),
            100 * plan.leaked_fraction,
            crossing,
        )
    sides = [("training", plan.train), ("held-out", test)] + (
        [("validation", val)] if val.any() else []
    )
    for side, mask in sides:
        missing = set(classes) - {labels[i] for i in np.flatnonzero(mask)}
        if missing:
            raise DatasetError(
                f"the {side} split has no {', '.join(sorted(missing))} faces; "
                "add data or change the split fractions"
            )
    return plan
