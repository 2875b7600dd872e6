"""`maskwatch train`, `evaluate`, `export` and `data audit`: the commands that need the train
extra (torch), imported only when one of them runs."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from maskwatch.cli.args import (
    Subparsers,
    data_spec,
    existing_path,
    given_folder,
    given_path,
    model_arg,
    ranged_arg,
    within,
)
from maskwatch.defaults import CALIBRATION_RANGE, FRACTION, SEED_RANGE
from maskwatch.errors import MaskwatchError, MissingExtraError
from maskwatch.train.config import (
    FOCAL_GAMMA,
    NUMERIC_OPTIONS,
    OHEM_KEPT,
    RECIPES,
    Augment,
    Framing,
    HardMining,
    Recipe,
    Split,
    TrainConfig,
    choices,
)

# TrainConfig's fields that are options of `train` (DATA is positional; the rest are set by it).
TRAIN_OPTIONS = tuple(
    f.name
    for f in dataclasses.fields(TrainConfig)
    if f.name not in ("data", "synthetic_sources", "command")
)


def _by_recipe(option: str) -> str:
    """An option's default per recipe, for --help: 'default: 40 with --recipe seed, 30 with
    --recipe real'."""
    return "default: " + ", ".join(
        f"{getattr(values, option)} with --recipe {name}" for name, values in RECIPES.items()
    )


def _numeric_arg(parser: argparse.ArgumentParser, option: str, text: str) -> None:
    """A numeric option of `train`, checked as its config field is; `text` is its help, where
    {range} stands for the allowed values."""
    numeric = NUMERIC_OPTIONS[option]
    parser.add_argument(
        "--" + option.replace("_", "-"),
        type=within(numeric.kind, numeric.allowed),
        default=None,
        help=text.format(range=numeric.allowed.describe()),
    )


def _require_training(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(command, "train") from exc


def _print_headline(report: dict[str, Any]) -> None:
    from maskwatch.train.report import headline_table

    print("\n".join(headline_table(report)))


def cmd_train(args: argparse.Namespace) -> int:
    _require_training("maskwatch train")
    from maskwatch.train.report import REPORT_MD
    from maskwatch.train.run import command_line, train

    given = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    if args.data:
        given["data"] = list(args.data)
    if args.config is not None:
        config = TrainConfig.from_file(args.config, given)
    elif not args.data:
        raise MaskwatchError("give at least one DATA folder (or --config FILE)")
    else:
        config = TrainConfig(**given)
    config = dataclasses.replace(config, command=command_line())
    if args.cross_source:
        from maskwatch.train.crosssource import PR_IMAGE, cross_source, markdown_table

        payload = cross_source(config)
        print("\n".join(markdown_table(payload)))
        out = Path(config.out)
        print(f"\ntable: {out / 'cross_source.md'} (and .json); curves: {out / PR_IMAGE}")
        return 0
    result = train(config)
    _print_headline(result.report)
    report = Path(config.out) / REPORT_MD
    print(f"\nmodel: {result.model}\nreport: {report} ({result.seconds:.0f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _require_training("maskwatch evaluate")
    from maskwatch.train.report import REPORT_MD
    from maskwatch.train.run import evaluate

    if not args.data and args.faces is None:
        raise MaskwatchError("give DATA folders or --faces test_faces.csv")
    report = evaluate(args.model, list(args.data), args.out, faces=args.faces)
    _print_headline(report)
    if args.out is not None:
        print(f"\nreport: {Path(args.out) / REPORT_MD}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _require_training("maskwatch export")
    from maskwatch.atomic import refuse_inputs
    from maskwatch.classifier import MaskClassifier, default_model_path, metadata_path
    from maskwatch.train.quantize import calibration_crops, quantize_int8

    if not args.int8:
        raise MaskwatchError("export makes int8 models for now: add --int8")
    model = args.model or default_model_path()
    inputs = [model, metadata_path(model), *([args.exclude_faces] if args.exclude_faces else [])]
    refuse_inputs(inputs, {"--out": args.out, "--out's metadata": metadata_path(args.out)})
    meta = MaskClassifier(model).meta
    crops = calibration_crops(
        list(args.calibrate), meta.input_size, meta.crop_margin, args.faces, args.exclude_faces
    )
    result = quantize_int8(model, args.out, crops)
    if args.exclude_faces is not None:
        from maskwatch.train.quantize import record_held_out

        _print_headline(record_held_out(args.out, args.exclude_faces))
    print(
        f"wrote {args.out}: int8, calibrated on {result['calibration_faces']} faces; agrees with "
        f"{model.name} on {result['agreement']:.1%} of them"
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    _require_training("maskwatch data audit")
    from maskwatch.train.audit import audit

    print(audit(list(args.data), test_fraction=args.test_fraction, seed=args.seed))
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("train", help="train a mask classifier (needs the train extra)")
    p.add_argument(
        "data",
        nargs="*",
        type=data_spec,
        metavar="DATA",
        help="folder with one sub-folder per class, folder of photos with Pascal VOC "
        "XML, or FOLDER:LABEL when the subject of every photo in it (its largest clear face) "
        "has LABEL (e.g. rmfd:mask)",
    )
    p.add_argument(
        "--config",
        type=existing_path,
        default=None,
        help="repeat a run from its config.json; DATA and options given beside it replace its "
        "values (e.g. --out NEW to repeat the run into a new folder; --recipe also brings that "
        "recipe's defaults)",
    )
    p.add_argument(
        "--out", type=given_folder, default=None, help=f"output folder (default: {TrainConfig.out})"
    )
    p.add_argument(
        "--recipe",
        choices=choices(Recipe),
        default=None,
        help="seed (default): frozen MobileNetV2 and the original project's head and "
        "augmentation; real: richer augmentation with synthetic masks, balanced "
        "classes, validation split, fine-tuning of the top blocks",
    )
    for option, text in (
        ("epochs", "head epochs"),
        ("finetune_epochs", "fine-tuning epochs of the top blocks"),
        ("learning_rate", "Adam, head stage"),
        ("finetune_learning_rate", "Adam, fine-tuning"),
        ("patience", "early stopping on validation loss, 0 = off"),
        ("views", "augmented views per training face whose features are cached"),
        ("val_fraction", "validation share of all faces"),
    ):
        _numeric_arg(p, option, f"{text} ({{range}}; {_by_recipe(option)})")
    _numeric_arg(p, "batch_size", f"{{range}}; default: {TrainConfig.batch_size}")
    p.add_argument(
        "--augment",
        choices=choices(Augment),
        default=None,
        help="augmentation: seed (the original project's), real (synthetic masks, colour, blur, "
        "low resolution, erasing), negatives (real, plus bare faces given neckwear below the jaw "
        f"or an object at the mouth, still no_mask) or none; {_by_recipe('augment')}",
    )
    _numeric_arg(p, "test_fraction", f"{{range}}; default: {TrainConfig.test_fraction}")
    p.add_argument(
        "--split",
        choices=choices(Split),
        default=None,
        help="group: keep groups and near-copies on one side (default); random: per "
        "image, as the seed did (leaks; for comparison only)",
    )
    p.add_argument(
        "--framing",
        choices=choices(Framing),
        default=None,
        help="crop VOC faces at the matched detector box like detect does (default) "
        "or exactly as annotated (for comparison)",
    )
    _numeric_arg(p, "seed", f"{{range}}; default: {TrainConfig.seed}")
    _numeric_arg(p, "input_size", f"{{range}}; default: {TrainConfig.input_size}")
    _numeric_arg(
        p,
        "limit_per_class",
        "use at most this many photos or boxes per class and dataset (quick runs; {range})",
    )
    p.add_argument(
        "--balance-classes",
        action="store_const",
        const=True,
        default=None,
        help=f"weight the loss by inverse class frequency ({_by_recipe('balance_classes')})",
    )
    p.add_argument(
        "--framing-jitter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="crop each training view again from its photo, from the face box alone to a "
        f"40%% looser window than detect's, and off-centre ({_by_recipe('framing_jitter')})",
    )
    p.add_argument(
        "--hard-mining",
        choices=choices(HardMining),
        default=None,
        help=f"ohem: only the hardest {OHEM_KEPT * 100:g}%% of each batch's views count in the "
        f"loss; ohem-head: the same while the head is trained, the plain loss while the top "
        f"blocks are fine-tuned; focal: focal "
        f"loss, gamma {FOCAL_GAMMA:g} (class weights apply to all; "
        f"{_by_recipe('hard_mining')})",
    )
    p.add_argument(
        "--feature-cache",
        type=given_folder,
        default=None,
        metavar="DIR",
        help="keep the frozen backbone's feature maps here and reuse them in later runs on "
        "the same faces (default: not kept)",
    )
    p.add_argument(
        "--align",
        action="store_const",
        const=True,
        default=None,
        help="with --cross-source: frame faces by their five landmarks onto a canonical face "
        "(eyes level) instead of the square window detect uses; faces without landmarks keep "
        "the square window",
    )
    p.add_argument(
        "--cross-source",
        action="store_true",
        help="instead of one model: for each real source, train without it and test on all "
        "of it; writes cross_source.md, .json, _incorrect_pr.png and _faces.csv into --out, "
        "all four or none",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="the training report's figures for any model and data (needs the train extra)",
    )
    p.add_argument("--model", type=existing_path, required=True, help="ONNX classifier")
    p.add_argument(
        "data", nargs="*", type=data_spec, metavar="DATA", help="labelled data, as for train"
    )
    p.add_argument(
        "--faces",
        type=existing_path,
        default=None,
        help="evaluate exactly the faces of a training run's test_faces.csv",
    )
    p.add_argument("--out", type=given_path, default=None, help="also write a report folder here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="a faster int8 copy of a classifier (needs the train extra)")
    model_arg(p)
    p.add_argument(
        "--out", type=given_path, required=True, help="the new .onnx (its .json beside it)"
    )
    p.add_argument("--int8", action="store_true", help="static int8 quantisation (QDQ)")
    p.add_argument(
        "--calibrate",
        nargs="+",
        type=data_spec,
        required=True,
        metavar="DATA",
        help="datasets to take calibration faces from (as for train)",
    )
    p.add_argument(
        "--exclude-faces",
        type=existing_path,
        default=None,
        metavar="CSV",
        help="a training run's test_faces.csv: never calibrate on those photos",
    )
    ranged_arg(p, "--faces", int, CALIBRATION_RANGE, 300, "calibration faces")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("data", help="inspect datasets (needs the train extra)")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    a = data_sub.add_parser("audit", help="classes, sources, duplicates, faces found, leakage")
    a.add_argument("data", nargs="+", type=data_spec, metavar="DATA", help="datasets, as for train")
    a.add_argument(
        "--test-fraction",
        type=within(float, FRACTION),
        default=TrainConfig.test_fraction,
        help="fraction of the proposed split checked for leakage (default: %(default)s)",
    )
    a.add_argument(
        "--seed",
        type=within(int, SEED_RANGE),
        default=TrainConfig.seed,
        help="seed of the proposed split (default: %(default)s)",
    )
    a.set_defaults(func=cmd_audit)
