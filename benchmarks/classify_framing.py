"""What `classify` calls faces of each label, with reframing (the default) and without.

Two kinds of one-person images: tight face crops cut from Pascal VOC boxes exactly as annotated
(forehead to chin, no margin), and photos from class folders (face crops to whole people).
Prints, per set and true label, the share of images called each label both ways.

    python benchmarks/classify_framing.py --voc ../shared/datasets/ilc \
        --folders ../shared/datasets/kary --per-set 2000
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from machine import describe_machine
from maskwatch.classifier import MaskClassifier
from maskwatch.faces import YuNetDetector
from maskwatch.images import load_image
from maskwatch.labels import CANONICAL, UNCERTAIN
from maskwatch.pipeline import classify_photo
from maskwatch.train.data import load_class_folders, load_voc

OUTCOMES = (*CANONICAL, UNCERTAIN)


def tight_crops(
    root: Path, min_side: int, count: int, seed: int
) -> Iterator[tuple[str, np.ndarray]]:
    """Faces of at least `min_side` px cut exactly at their annotated boxes."""
    samples = [s for s in load_voc(root, root.name) if s.box is not None]
    samples = [s for s in samples if min(s.box[2] - s.box[0], s.box[3] - s.box[1]) >= min_side]  # type: ignore[index]
    random.Random(seed).shuffle(samples)
    for s in samples[:count]:
        x1, y1, x2, y2 = s.box  # type: ignore[misc]
        yield s.label, load_image(s.image)[max(0, y1) : y2, max(0, x1) : x2]


def folder_photos(root: Path, count: int, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    samples = load_class_folders(root, root.name)
    random.Random(seed).shuffle(samples)
    for s in samples[:count]:
        yield s.label, load_image(s.image)


def report(name: str, images: Iterator[tuple[str, np.ndarray]], classifier: MaskClassifier) -> None:
    detector = YuNetDetector()
    counts: dict[tuple[str, bool], Counter[str]] = {}
    framed: Counter[str] = Counter()
    for label, image in images:
        for reframe in (False, True):
            result = classify_photo(classifier, image, detector=detector if reframe else None)
            counts.setdefault((label, reframe), Counter())[result.label] += 1
            if reframe:
                framed[result.framed] += 1
    print(f"\n{name}: framed on a face {framed['face']}, whole image {framed['image']}")
    print(f"{'true label':<10} {'framing':<12} {'n':>5}  " + "  ".join(f"{o:>9}" for o in OUTCOMES))
    for (label, reframe), got in sorted(counts.items()):
        n = sum(got.values())
        shares = "  ".join(f"{got[o] / n:9.1%}" for o in OUTCOMES)
        print(f"{label:<10} {'reframed' if reframe else 'whole image':<12} {n:>5}  {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voc", type=Path, action="append", default=[], help="repeatable")
    parser.add_argument("--folders", type=Path, action="append", default=[], help="repeatable")
    parser.add_argument("--per-set", type=int, default=400, help="images per set (random)")
    parser.add_argument("--min-side", type=int, default=48, help="smallest VOC face, px")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    classifier = MaskClassifier(args.model)
    for root in args.voc:
        crops = tight_crops(root, args.min_side, args.per_set, args.seed)
        report(f"{root.name}: tight crops at the annotated box", crops, classifier)
    for root in args.folders:
        report(f"{root.name}: photos", folder_photos(root, args.per_set, args.seed), classifier)


if __name__ == "__main__":
    main()
