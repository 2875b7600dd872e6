"""Argument types and option groups shared by several commands: checked numeric ranges, paths
that must exist, and the options of a watch (detect and serve --source)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from maskwatch.defaults import (
    ALERT_GLOBAL_INTERVAL,
    ALERT_INTERVAL_RANGE,
    ALERT_LABELS,
    ALERT_TRACK_INTERVAL,
    BLUR_CHOICES,
    CLASSIFY_EVERY,
    CLASSIFY_EVERY_RANGE,
    DETECT_MAX_SIDE,
    DETECT_MIN_SIDE,
    DETECT_MIN_SIDE_RANGE,
    DETECT_SCORE_THRESHOLD,
    DETECT_SIDE_RANGE,
    DETECT_VIDEO_SIDE,
    DISCOVERY_PREFIX,
    MAX_IMAGE_MEGAPIXELS,
    MAX_IMAGE_MEGAPIXELS_RANGE,
    MAX_IMAGE_PIXELS,
    SCORE_THRESHOLD_RANGE,
    SETTLE_FRAMES,
    SETTLE_FRAMES_RANGE,
    Range,
)
from maskwatch.errors import SettingError
from maskwatch.paths import expand_home, missing

if TYPE_CHECKING:
    from maskwatch.postgres import DatabaseUrl
    from maskwatch.watch import WatchSettings

Number = TypeVar("Number", int, float)
Options = argparse.ArgumentParser | argparse._ArgumentGroup  # where add_argument is
Handler = Callable[[argparse.Namespace], int]
Subparsers = argparse._SubParsersAction  # what add_subparsers returns

# The command line's detector keeps its default largest side, above which video is not searched.
VIDEO_SIDE_RANGE = Range(DETECT_SIDE_RANGE.low, DETECT_MAX_SIDE)


def within(kind: Callable[[str], Number], allowed: Range) -> Callable[[str], Number]:
    """An argparse type: a number of `kind` in `allowed` (a range from maskwatch.defaults)."""
    noun = "whole number" if kind is int else "number"

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {noun}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite {noun}")
        if value not in allowed:
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: must be {allowed.describe()}"
            )
        return value

    parse.__name__ = getattr(kind, "__name__", "number")
    return parse


def ranged_arg(
    parser: Options,
    flag: str,
    kind: Callable[[str], Number],
    allowed: Range,
    default: Number,
    text: str,
    metavar: str | None = None,
    shown: str = "s",
) -> None:
    """A numeric option checked against `allowed`, its help ending in the range and default
    (`shown` is the %-format of the default: s, or g to drop a trailing .0)."""
    parser.add_argument(
        flag,
        type=within(kind, allowed),
        default=default,
        metavar=metavar,
        help=f"{text} ({allowed.describe()}; default: %(default){shown})",
    )


def source_spec(text: str) -> str:
    """A --source that names something: an empty one would otherwise mean this folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty source names no file, folder, camera or stream")
    return text


def allowed_host(text: str) -> str:
    """An --allow-host name: a host name or IPv4 address, `*.` first for every subdomain."""
    from maskwatch.access import HOST_NAME

    if not HOST_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a host name without scheme, port or path, e.g. cams.example.org "
            "or *.example.org"
        )
    return text.lower()


def megapixels(text: str) -> int:
    """--max-pixels in megapixels, as the pixel count the library takes."""
    return round(within(float, MAX_IMAGE_MEGAPIXELS_RANGE)(text) * 1e6)


def max_pixels_arg(
    parser: argparse.ArgumentParser,
    refused: str = "larger images are refused (skipped with a warning in a folder or glob)",
) -> None:
    parser.add_argument(
        "--max-pixels",
        type=megapixels,
        default=MAX_IMAGE_PIXELS,
        metavar="MP",
        help="largest image to decode, in megapixels, checked from its header before decoding; "
        f"{refused} "
        f"({MAX_IMAGE_MEGAPIXELS_RANGE.describe()}; default: {MAX_IMAGE_MEGAPIXELS:g})",
    )


def given_path(text: str) -> Path:
    """A path option as a person wrote it: not empty (that would mean this folder), and a
    leading ~ or ~user expanded."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no file or folder")
    try:
        return expand_home(text)
    except SettingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def file_path(text: str) -> Path:
    """A path option naming a file to write: `given_path`, and no trailing slash (which asks
    for a folder; the file was written under the name without it)."""
    path = given_path(text)
    if os.path.basename(text) in ("", "."):
        raise argparse.ArgumentTypeError(f"{text} names a folder: give a file name")
    return path


def existing_path(text: str) -> Path:
    path = given_path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: {missing(path)}")
    return path


def given_folder(text: str) -> str:
    """A folder option kept as text (a training config stores it so), ~ expanded."""
    return str(given_path(text))


def data_spec(text: str) -> str:
    """DATA or DATA:LABEL, the folder part (~ expanded) checked at parse time."""
    from maskwatch.train.data import parse_data_spec

    try:
        path, _ = parse_data_spec(text)
    except SettingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: no such folder")
    return text


def model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=existing_path,
        default=None,
        help="ONNX classifier with its .json beside it (default: the bundled model)",
    )


def watch_settings(args: argparse.Namespace, **more: Any) -> WatchSettings:
    """The detector options of any command that has them, with `more` of WatchSettings."""
    from maskwatch.watch import WatchSettings

    return WatchSettings(
        score_threshold=args.score_threshold,
        detect_min_side=args.detect_min_side,
        detect_video_side=args.detect_video_side,
        **more,
    )


def watching(args: argparse.Namespace, mqtt: str | None) -> WatchSettings:
    """Everything `watch_args` added, for detect and serve alike."""
    from maskwatch.alerts import AlertSettings, parse_labels

    alerts = AlertSettings(
        command=args.alert_cmd,
        webhook=args.alert_webhook,
        labels=parse_labels(args.alert_labels),
        track_interval=args.alert_interval,
        global_interval=args.alert_global_interval,
    )
    if mqtt is not None:
        from maskwatch.mqtt import parse_mqtt_url

        parse_mqtt_url(mqtt)
    if args.mqtt_discovery is not None:
        from maskwatch.hass import check_prefix

        if mqtt is None:
            raise SettingError(
                "--mqtt-discovery needs the MQTT URL events are published to "
                "(detect --mqtt, serve --mqtt-publish)"
            )
        check_prefix(args.mqtt_discovery)
    return watch_settings(
        args,
        settle_frames=args.settle_frames,
        classify_every=args.classify_every,
        blur=args.blur,
        alerts=alerts if alerts.command or alerts.webhook else None,
        mqtt=mqtt,
        mqtt_discovery=args.mqtt_discovery,
    )


def detector_args(parser: Options) -> None:
    parser.add_argument(
        "--score-threshold",
        type=within(float, SCORE_THRESHOLD_RANGE),
        default=DETECT_SCORE_THRESHOLD,
        help=f"minimum face detector score, {SCORE_THRESHOLD_RANGE.describe()} "
        "(default: %(default)s)",
    )
    ranged_arg(
        parser,
        "--detect-min-side",
        int,
        DETECT_MIN_SIDE_RANGE,
        DETECT_MIN_SIDE,
        "photos whose long side is shorter are also searched upscaled to it, so small faces "
        "are found; 0: never upscale",
    )
    ranged_arg(
        parser,
        "--detect-video-side",
        int,
        VIDEO_SIDE_RANGE,
        DETECT_VIDEO_SIDE,
        "video frames whose long side is longer are scaled down to it for detection, for speed; "
        "raise it to find smaller faces in large frames",
    )


def watch_args(parser: Options, publish: str) -> None:
    """The options of a watch, one definition for `detect` and `serve --source`: blur, settle
    frames, MQTT publishing (as `publish`), alerts and the detector's settings."""
    parser.add_argument(
        "--blur",
        choices=BLUR_CHOICES,
        default="none",
        help="pixelate faces in shown, saved and streamed output: every face not seen wearing "
        "a mask (no_mask: faces labelled no_mask, incorrect or uncertain), or all "
        "(default: %(default)s)",
    )
    ranged_arg(
        parser,
        "--settle-frames",
        int,
        SETTLE_FRAMES_RANGE,
        SETTLE_FRAMES,
        "frames a person's smoothed label must hold before it settles",
    )
    ranged_arg(
        parser,
        "--classify-every",
        int,
        CLASSIFY_EVERY_RANGE,
        CLASSIFY_EVERY,
        "classify a person whose label has settled every N of their frames, or sooner when "
        "their box moves or changes size; frames between carry their label; 1: every face of "
        "every frame",
        metavar="N",
    )
    parser.add_argument(
        publish,
        default=None,
        metavar="URL",
        help="publish events as JSON (QoS 1) to mqtt://host[:port]/topic, e.g. "
        "mqtt://broker:1883/site/door-1 (needs the mqtt extra); with several server cameras "
        "(serve --source), camera N publishes to topic/N",
    )
    parser.add_argument(
        "--mqtt-discovery",
        nargs="?",
        const=DISCOVERY_PREFIX,
        default=None,
        metavar="PREFIX",
        help="also announce the camera to Home Assistant by MQTT discovery (retained configs "
        f"under PREFIX, default {DISCOVERY_PREFIX}): sensors of people in view by label, people "
        "seen and the last event, with availability",
    )
    parser.add_argument(
        "--alert-cmd",
        default=None,
        metavar="CMD",
        help="run CMD (no shell; event JSON on stdin and in $MASKWATCH_EVENT) when an "
        "alerting label settles",
    )
    parser.add_argument(
        "--alert-webhook",
        default=None,
        metavar="URL",
        help="POST the event as JSON to URL when an alerting label settles",
    )
    parser.add_argument(
        "--alert-labels",
        default=",".join(ALERT_LABELS),
        help="labels that alert, comma-separated (default: %(default)s)",
    )
    for flag, default, whom in (
        ("--alert-interval", ALERT_TRACK_INTERVAL, "per person"),
        ("--alert-global-interval", ALERT_GLOBAL_INTERVAL, "in all"),
    ):
        ranged_arg(
            parser,
            flag,
            float,
            ALERT_INTERVAL_RANGE,
            default,
            f"at most one alert {whom} every S seconds",
            metavar="S",
        )
    detector_args(parser)


def access_args(parser: Options, clients: str) -> None:
    """--token and --no-auth, one definition for `serve` and `detect --metrics-port` (the rule
    is maskwatch.access's: a token, or --no-auth, off loopback)."""
    parser.add_argument(
        "--token",
        default=None,
        help=f"required from {clients}, as 'Authorization: Bearer TOKEN' or ?token=TOKEN "
        "(default: $MASKWATCH_TOKEN)",
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without a token even on a non-loopback address",
    )


def partial(shortfall: str) -> str:
    """The last line of a run that processed what it could: outputs are complete, but the exit
    status must not say that every input was read."""
    return f"{shortfall} (see the warnings above); the rest was processed and written"


def save_path(text: str) -> Path:
    """--save: an output path, refused at once when it cannot be saved to (see
    `save_name_problem`; a trailing slash asks for a folder)."""
    from maskwatch.sinks import save_name_problem

    path = given_path(text)
    problem = save_name_problem(path, folder=os.path.basename(text) in ("", "."))
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return path


def event_target(text: str) -> Path | DatabaseUrl:
    """--events: an SQLite file, or a postgresql:// URL (its password masked in any error)."""
    from maskwatch.errors import MaskwatchError
    from maskwatch.postgres import DatabaseUrl, as_event_target

    try:
        target = as_event_target(text)
    except MaskwatchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return target if isinstance(target, DatabaseUrl) else file_path(text)


def event_source(text: str) -> Path | DatabaseUrl:
    """The event log `stats` reads: an existing SQLite file, or a postgresql:// URL."""
    from maskwatch.postgres import DatabaseUrl

    target = event_target(text)
    return target if isinstance(target, DatabaseUrl) else existing_path(text)


def output_target(text: str) -> str:
    """An output file's path or '-' (stdout), never empty."""
    return str(file_path(text)) if text != "-" else text
