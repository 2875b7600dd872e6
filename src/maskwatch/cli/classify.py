"""`maskwatch classify`: label the one person of each photo or face crop."""

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
    from maskwatch.faces import YuNetDetector
    from maskwatch.images import load_image
    from maskwatch.pipeline import classify_photo
    from maskwatch.sinks import JsonLinesSink
    from maskwatch.sources import scan_images, shortfall

    classifier = MaskClassifier(args.model)
    detector = None if args.no_reframe else YuNetDetector()
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
            out.write_object(classify_photo(classifier, image, str(path), detector).to_dict())
            done += 1
    if done == 0:
        raise MaskwatchError("no image could be read from " + ", ".join(map(str, args.paths)))
    missed = shortfall(len(paths), len(paths) - done, folders_missed)
    if missed:
        raise MaskwatchError(partial(missed))
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "classify",
        help="label the one person of each photo or face crop",
        description="Label the one person of each photo or face crop: its largest face is "
        "found and framed as detect frames faces; an image without a face is classified whole. "
        "One JSON object per image.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        type=existing_path,
        metavar="PATH",
        help="image or folder of images (searched recursively)",
    )
    model_arg(p)
    p.add_argument(
        "--no-reframe",
        action="store_true",
        help="classify every image whole, as it is, without looking for a face",
    )
    p.add_argument(
        "--json",
        type=output_target,
        default="-",
        metavar="OUT",
        help="where to write JSON lines (default: '-', stdout)",
    )
    max_pixels_arg(p)
    p.set_defaults(func=cmd_classify)
