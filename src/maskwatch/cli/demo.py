"""`maskwatch demo`: the pipeline on the bundled sample photos, no camera needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from maskwatch.cli.args import Subparsers, detector_args, given_path, model_arg, watch_settings


def cmd_demo(args: argparse.Namespace) -> int:
    from maskwatch.classifier import MaskClassifier
    from maskwatch.demo import run_demo, summary_table

    pipeline = watch_settings(args).pipeline(MaskClassifier(args.model), tracked=False)
    result = run_demo(pipeline, args.out)
    print(summary_table(result.results))
    print(f"\nannotated photos and contact sheet written to {args.out}/ (open {result.sheet})")
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="run the pipeline on six sample photos (no camera needed)")
    p.add_argument(
        "--out",
        type=given_path,
        default=Path("maskwatch-demo"),
        help="folder for annotated photos and the contact sheet (default: %(default)s)",
    )
    model_arg(p)
    detector_args(p)
    p.set_defaults(func=cmd_demo)
