"""`maskwatch classify`: label face crops as they are, without detection."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from maskwatch.cli.args import (
    Subparsers,
    existing_path,
    max_pixels_arg,
    model_arg,
    output_target,
    partial,
)
from maskwatch.errors import MaskwatchError

log = logging.getLogger("maskwatch")


def cmd_classify(args: argparse.Namespace) -> int:
    from maskwatch.atomic import refuse_inputs
    from maskwatch.classifier import MaskClassifier
    from maskwatch.errors import SourceError
    from maskwatch.images import load_image
    from maskwatch.pipeline import classify_crop
    from maskwatch.sinks import JsonLinesSink
    from maskwatch.sources import scan_images, shortfall
    from maskwatch.types import CropResult

    classifier = MaskClassifier(args.model)
    paths: list[Path] = []
    folders_missed = 0
    for arg in args.paths:
        if arg.is_dir():
            found, unreadable = scan_images(arg)
            paths += found
            folders_missed += unreadable
        else:
            paths.append(arg)
    refuse_inputs(paths, {"--json": args.json})
    done = 0
    with JsonLinesSink(args.json) as out:
        for path in paths:
            try:
                image = load_image(path, args.max_pixels)
            except SourceError as exc:
                if len(paths) == 1:
                    raise
                log.warning("skipping %s", exc)
                continue
            label, probs = classify_crop(classifier, image)
            out.write_object(CropResult.of(path, label, classifier.classes, probs).to_json())
            done += 1
    if done == 0:
        raise MaskwatchError("no image could be read from " + ", ".join(map(str, args.paths)))
    missed = shortfall(len(paths), len(paths) - done, folders_missed)
    if missed:
        raise MaskwatchError(partial(missed))
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("classify", help="classify face crops (no detection)")
    p.add_argument(
        "paths",
        nargs="+",
        type=existing_path,
        metavar="PATH",
        help="image or folder of images (searched recursively)",
    )
    model_arg(p)
    p.add_argument(
        "--json",
        type=output_target,
        default="-",
        metavar="OUT",
        help="where to write JSON lines (default: '-', stdout)",
    )
    max_pixels_arg(p)
    p.set_defaults(func=cmd_classify)
