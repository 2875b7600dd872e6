"""The `maskwatch` command: parses arguments, calls the library, and turns project errors into
one-line messages. No logic of its own."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from maskwatch import __version__
from maskwatch.defaults import (
    ALERT_GLOBAL_INTERVAL,
    ALERT_INTERVAL_RANGE,
    ALERT_LABELS,
    ALERT_TRACK_INTERVAL,
    BLUR_CHOICES,
    DETECT_MAX_SIDE,
    DETECT_MIN_SIDE,
    DETECT_MIN_SIDE_RANGE,
    DETECT_SCORE_THRESHOLD,
    DETECT_SIDE_RANGE,
    DETECT_VIDEO_SIDE,
    MAX_FPS_RANGE,
    MAX_IMAGE_MEGAPIXELS,
    MAX_IMAGE_MEGAPIXELS_RANGE,
    MAX_IMAGE_PIXELS,
    RECONNECT_ATTEMPTS,
    RECONNECT_RANGE,
    SCORE_THRESHOLD_RANGE,
    SERVE_IDLE_TIMEOUT,
    SERVE_MAX_SESSIONS,
    SERVE_MAX_UPLOAD_MB,
    SERVE_REQUEST_TIMEOUT,
    SERVE_SESSION_IDLE_TIMEOUT,
    SERVE_SHUTDOWN_TIMEOUT,
    SETTLE_FRAMES,
    SETTLE_FRAMES_RANGE,
    STATS_PERIODS,
    Range,
)
from maskwatch.errors import MaskwatchError
from maskwatch.train.config import RECIPES, Augment, Framing, Recipe, Split, choices

if TYPE_CHECKING:
    from maskwatch.watch import WatchSettings

log = logging.getLogger("maskwatch")
Number = TypeVar("Number", int, float)
Options = argparse.ArgumentParser | argparse._ArgumentGroup  # where add_argument is

TRAIN_OPTIONS = (
    "out",
    "recipe",
    "epochs",
    "finetune_epochs",
    "batch_size",
    "learning_rate",
    "finetune_learning_rate",
    "patience",
    "views",
    "augment",
    "test_fraction",
    "val_fraction",
    "split",
    "framing",
    "seed",
    "input_size",
    "limit_per_class",
    "balance_classes",
)
DESCRIPTION = (
    "Real-time face-mask detection: finds every face in a webcam, video, stream or photos and "
    "labels it mask, no mask or mask worn incorrectly."
)
TRAIN_EXTRA_HINT = "training needs the train extra: pip install 'maskwatch[train]'"
# The command line's detector keeps its default largest side, above which video is not searched.
VIDEO_SIDE_RANGE = Range(DETECT_SIDE_RANGE.low, DETECT_MAX_SIDE)
FRACTION = Range(0, 1, low_open=True, high_open=True)
SEED_RANGE = Range(0, 2**32 - 1)


def _by_recipe(option: str) -> str:
    """An option's default per recipe, for --help: 'seed 40, real 30'."""
    return ", ".join(f"{name} {getattr(values, option)}" for name, values in RECIPES.items())


def bounded(
    kind: Callable[[str], Number],
    low: Number | None = None,
    high: Number | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], Number]:
    """An argparse type: a number of `kind` (int or float) within [low, high] (an open end
    excludes its bound), else one clear error naming the allowed range. NaN and infinities
    are refused."""
    return within(kind, Range(low, high, low_open, high_open))


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


def _source_spec(text: str) -> str:
    """A --source that names something: an empty one would otherwise mean this folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty source names no file, folder, camera or stream")
    return text


def _megapixels(text: str) -> int:
    """--max-pixels in megapixels, as the pixel count the library takes."""
    return round(within(float, MAX_IMAGE_MEGAPIXELS_RANGE)(text) * 1e6)


def _max_pixels_arg(
    parser: argparse.ArgumentParser,
    refused: str = "larger images are refused (skipped with a warning in a folder or glob)",
) -> None:
    parser.add_argument(
        "--max-pixels",
        type=_megapixels,
        default=MAX_IMAGE_PIXELS,
        metavar="MP",
        help="largest image to decode, in megapixels, checked from its header before decoding; "
        f"{refused} "
        f"(default: {MAX_IMAGE_MEGAPIXELS:g}; {MAX_IMAGE_MEGAPIXELS_RANGE.describe()})",
    )


def _existing_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


def _data_spec(text: str) -> str:
    """DATA or DATA:LABEL, the folder part checked at parse time."""
    from maskwatch.train.data import parse_data_spec

    path, _ = parse_data_spec(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: no such folder")
    return text


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=_existing_path,
        default=None,
        help="ONNX classifier with its .json beside it (default: the bundled model)",
    )


def _watch_settings(args: argparse.Namespace, **more: Any) -> WatchSettings:
    """The detector options of any command that has them, with `more` of WatchSettings."""
    from maskwatch.watch import WatchSettings

    return WatchSettings(
        score_threshold=args.score_threshold,
        detect_min_side=args.detect_min_side,
        detect_video_side=args.detect_video_side,
        **more,
    )


def _watching(args: argparse.Namespace, mqtt: str | None) -> WatchSettings:
    """Everything `_watch_args` added, for detect and serve alike."""
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
    return _watch_settings(
        args,
        settle_frames=args.settle_frames,
        blur=args.blur,
        alerts=alerts if alerts.command or alerts.webhook else None,
        mqtt=mqtt,
    )


def _detector_args(parser: Options) -> None:
    parser.add_argument(
        "--score-threshold",
        type=within(float, SCORE_THRESHOLD_RANGE),
        default=DETECT_SCORE_THRESHOLD,
        help=f"minimum face detector score, {SCORE_THRESHOLD_RANGE.describe()} "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--detect-min-side",
        type=within(int, DETECT_MIN_SIDE_RANGE),
        default=DETECT_MIN_SIDE,
        help="photos whose long side is shorter are also searched upscaled to it, so small "
        f"faces are found; 0: never upscale ({DETECT_MIN_SIDE_RANGE.describe()}; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--detect-video-side",
        type=within(int, VIDEO_SIDE_RANGE),
        default=DETECT_VIDEO_SIDE,
        help="video frames whose long side is longer are scaled down to it for detection, "
        "for speed; raise it to find smaller faces in large frames "
        f"({VIDEO_SIDE_RANGE.describe()}; default: %(default)s)",
    )


def _watch_args(parser: Options, publish: str) -> None:
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
    parser.add_argument(
        "--settle-frames",
        type=within(int, SETTLE_FRAMES_RANGE),
        default=SETTLE_FRAMES,
        help="frames a person's smoothed label must hold before it settles "
        f"({SETTLE_FRAMES_RANGE.describe()}; default: %(default)s)",
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
    parser.add_argument(
        "--alert-interval",
        type=within(float, ALERT_INTERVAL_RANGE),
        default=ALERT_TRACK_INTERVAL,
        metavar="S",
        help="at most one alert per person every S seconds "
        f"({ALERT_INTERVAL_RANGE.describe()}; default: %(default)s)",
    )
    parser.add_argument(
        "--alert-global-interval",
        type=within(float, ALERT_INTERVAL_RANGE),
        default=ALERT_GLOBAL_INTERVAL,
        metavar="S",
        help="at most one alert in all every S seconds "
        f"({ALERT_INTERVAL_RANGE.describe()}; default: %(default)s)",
    )
    _detector_args(parser)


def cmd_detect(args: argparse.Namespace) -> int:
    from maskwatch.classifier import MaskClassifier
    from maskwatch.detect import EventOutputs, run_detect
    from maskwatch.sources import open_source

    if not args.show and not any((args.save, args.json, args.events, args.mqtt)):
        raise MaskwatchError(
            "--no-show needs --save OUT, --json OUT, --events FILE or --mqtt URL, "
            "or there is no output"
        )
    if args.snapshots is not None and args.events is None:
        raise MaskwatchError("--snapshots needs --events FILE (snapshots are listed in the log)")
    settings = _watching(args, args.mqtt)
    pipeline = settings.pipeline(MaskClassifier(args.model))
    mqtt = None
    if settings.mqtt:
        from maskwatch.mqtt import MqttPublisher

        mqtt = MqttPublisher(settings.mqtt)
    alerts = settings.alerts.dispatcher() if settings.alerts else None
    events = EventOutputs(args.events, args.snapshots, alerts, mqtt)
    source = open_source(
        args.source,
        reconnect_attempts=args.reconnect,
        max_fps=args.max_fps,
        max_pixels=args.max_pixels,
    )
    summary = run_detect(
        source,
        pipeline,
        show=args.show,
        save=args.save,
        json_target=args.json,
        blur=settings.blur,
        events=events,
    )
    log.info("%s", summary.describe())
    if mqtt is not None:
        log.info("mqtt: %d events sent, %d never sent", mqtt.sent, mqtt.queued + mqtt.dropped)
    if events.alerts is not None:
        counts = events.alerts.counts
        log.info(
            "alerts: %d sent, %d failed, %d held back by the rate limits, %d dropped",
            counts.sent,
            counts.failed,
            counts.limited,
            counts.dropped,
        )
    if len(summary.written) > 5:
        log.info("wrote %d files to %s", len(summary.written), args.save)
    else:
        for path in summary.written:
            log.info("wrote %s", path)
    missed = source.shortfall()
    if missed:
        raise MaskwatchError(_partial(missed))
    return 0


def _partial(shortfall: str) -> str:
    """The last line of a run that processed what it could: outputs are complete, but the exit
    status must not say that every input was read."""
    return f"{shortfall} (see the warnings above); the rest was processed and written"


def cmd_classify(args: argparse.Namespace) -> int:
    from maskwatch.classifier import MaskClassifier
    from maskwatch.errors import SourceError
    from maskwatch.images import load_image
    from maskwatch.pipeline import classify_crop
    from maskwatch.sinks import JsonLinesSink
    from maskwatch.sources import scan_images, shortfall

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
            out.write_object(
                {
                    "path": str(path),
                    "label": label,
                    "confidence": round(float(probs.max()), 4),
                    "probs": {
                        c: round(float(p), 4)
                        for c, p in zip(classifier.classes, probs, strict=True)
                    },
                }
            )
            done += 1
    if done == 0:
        raise MaskwatchError("no image could be read from " + ", ".join(map(str, args.paths)))
    missed = shortfall(len(paths), len(paths) - done, folders_missed)
    if missed:
        raise MaskwatchError(_partial(missed))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from maskwatch.classifier import MaskClassifier
    from maskwatch.demo import run_demo, summary_table

    pipeline = _watch_settings(args).pipeline(MaskClassifier(args.model), tracked=False)
    result = run_demo(pipeline, args.out)
    print(summary_table(result.results))
    print(f"\nannotated photos and contact sheet written to {args.out}/ (open {result.sheet})")
    return 0


def _require_training() -> None:
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as exc:
        raise MaskwatchError(TRAIN_EXTRA_HINT) from exc


def _print_headline(report: dict[str, Any]) -> None:
    from maskwatch.train.report import headline_table

    print("\n".join(headline_table(report)))


def cmd_train(args: argparse.Namespace) -> int:
    _require_training()
    from dataclasses import replace

    from maskwatch.train.run import TrainConfig, command_line, train

    if args.config is not None:
        config = TrainConfig.from_file(args.config)
    else:
        if not args.data:
            raise MaskwatchError("give at least one DATA folder (or --config FILE)")
        overrides = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
        config = TrainConfig(data=list(args.data), **overrides)
    config = replace(config, command=command_line())
    result = train(config)
    _print_headline(result.report)
    report = Path(config.out) / "report.md"
    print(f"\nmodel: {result.model}\nreport: {report} ({result.seconds:.0f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _require_training()
    from maskwatch.train.run import evaluate

    if not args.data and args.faces is None:
        raise MaskwatchError("give DATA folders or --faces test_faces.csv")
    report = evaluate(args.model, list(args.data), args.out, faces=args.faces)
    _print_headline(report)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _require_training()
    from maskwatch.classifier import MaskClassifier, default_model_path
    from maskwatch.train.quantize import calibration_crops, quantize_int8

    if not args.int8:
        raise MaskwatchError("export makes int8 models for now: add --int8")
    model = args.model or default_model_path()
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
    _require_training()
    from maskwatch.train.audit import audit

    print(audit(list(args.data), test_fraction=args.test_fraction, seed=args.seed))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from maskwatch.stats import plot, summarise

    table = summarise(args.log, by=args.by, source=args.source)
    print(table.text())
    if args.plot is not None:
        plot(table, args.plot)
        print(f"\nchart written to {args.plot}")
    return 0


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        import uvicorn

        from maskwatch.web.app import ServeSettings, create_app
        from maskwatch.web.guard import guarded_h11, listen
    except ImportError as exc:
        raise MaskwatchError("serve needs the web extra: pip install 'maskwatch[web]'") from exc
    token = args.token or os.environ.get("MASKWATCH_TOKEN") or None
    if args.no_auth:
        token = None
    elif token is None and args.host not in LOOPBACK:
        raise MaskwatchError(
            f"--host {args.host} opens the server to the network: give --token TOKEN (or set "
            "MASKWATCH_TOKEN), or --no-auth to serve without one"
        )
    if (args.cert is None) != (args.key is None):
        raise MaskwatchError("HTTPS needs both --cert and --key")
    if args.mqtt:
        from maskwatch.mqtt import parse_mqtt_url

        parse_mqtt_url(args.mqtt, pattern=True)
    settings = ServeSettings(
        model=args.model,
        sources=list(args.source or []),
        watch=_watching(args, args.mqtt_publish),
        events=args.events,
        mqtt=args.mqtt,
        token=token,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        request_timeout=args.request_timeout,
        max_sessions=args.max_sessions,
        session_idle_timeout=args.session_idle_timeout,
    )
    sock = listen(args.host, args.port)
    try:
        app = create_app(settings)
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            ssl_certfile=str(args.cert) if args.cert else None,
            ssl_keyfile=str(args.key) if args.key else None,
            log_level="warning",
            http=guarded_h11(args.request_timeout),
            timeout_keep_alive=args.idle_timeout,
            ws_max_size=settings.max_body,
            timeout_graceful_shutdown=SERVE_SHUTDOWN_TIMEOUT,
        )
        scheme = "https" if args.cert else "http"
        shown = f"?token={token}" if token else ""
        log.info(
            "open %s://%s:%d/%s (dashboard: /dashboard, API docs: /docs)",
            scheme,
            args.host,
            args.port,
            shown,
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from maskwatch.models import model_table

    rows, ok = model_table(fetch=args.fetch)
    print(rows)
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskwatch", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"maskwatch {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("detect", help="label every face in a webcam, video, stream or images")
    p.add_argument(
        "--source",
        type=_source_spec,
        default="0",
        help="camera index, video file, rtsp/http URL, image, folder or glob "
        "(default: %(default)s, the first webcam)",
    )
    _model_arg(p)
    p.add_argument(
        "--no-show",
        dest="show",
        action="store_false",
        help="do not open a window (default: show one; q or Esc quits)",
    )
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        help="write annotated output: a .mp4/.avi for videos and cameras, a folder "
        "(or one image file) for images",
    )
    p.add_argument(
        "--json",
        default=None,
        metavar="OUT",
        help="write one JSON object per frame or image to OUT ('-': stdout)",
    )
    p.add_argument(
        "--max-fps",
        type=within(float, MAX_FPS_RANGE),
        default=None,
        help="process at most this many frames per second of a live source "
        f"({MAX_FPS_RANGE.describe()})",
    )
    p.add_argument(
        "--reconnect",
        type=within(int, RECONNECT_RANGE),
        default=RECONNECT_ATTEMPTS,
        metavar="N",
        help="times to reopen a stream that drops, waiting 0.5, 1, 2 ... up to 30 s between "
        f"tries, before giving up ({RECONNECT_RANGE.describe()}; default: %(default)s; each "
        "outage starts again)",
    )
    p.add_argument(
        "--events",
        type=Path,
        default=None,
        metavar="FILE",
        help="append events (a person appears, their label settles or changes, they leave) "
        "to this SQLite log; no images are stored",
    )
    p.add_argument(
        "--snapshots",
        type=Path,
        default=None,
        metavar="DIR",
        help="also save a face picture in DIR when a label settles or changes",
    )
    _watch_args(p, "--mqtt")
    _max_pixels_arg(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("stats", help="people seen per minute, hour or day from an event log")
    p.add_argument("log", type=_existing_path, metavar="FILE", help="event log (detect --events)")
    p.add_argument(
        "--by", choices=STATS_PERIODS, default="hour", help="period length (default: %(default)s)"
    )
    p.add_argument("--source", default=None, help="only this camera or file")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="also draw a chart")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("serve", help="web page, dashboard and HTTP API (needs the web extra)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument(
        "--port",
        type=bounded(int, 1, 65535),
        default=8000,
        help="port to listen on (from 1 to 65535; default: %(default)s)",
    )
    p.add_argument(
        "--source",
        action="append",
        metavar="SRC",
        help="a camera or stream to process on the server and show on the page (repeatable)",
    )
    _model_arg(p)
    p.add_argument(
        "--events",
        type=Path,
        default=None,
        metavar="FILE",
        help="store every camera's events in this SQLite log (default: nothing is stored)",
    )
    p.add_argument(
        "--mqtt",
        default=None,
        metavar="URL",
        help="show the cameras publishing under mqtt://host[:port]/topic-pattern, "
        "e.g. mqtt://broker:1883/site/#",
    )
    p.add_argument(
        "--token", default=None, help="required from clients (default: $MASKWATCH_TOKEN)"
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without a token even on a non-loopback address",
    )
    p.add_argument(
        "--max-upload-mb",
        type=bounded(float, 0.01, 1024.0),
        default=SERVE_MAX_UPLOAD_MB,
        help="largest upload or WebSocket frame, in MB (from 0.01 to 1024; default: %(default)s)",
    )
    _max_pixels_arg(p, "larger uploads and frames are refused with 413")
    p.add_argument(
        "--request-timeout",
        type=bounded(float, 0.1, 3600.0),
        default=SERVE_REQUEST_TIMEOUT,
        metavar="S",
        help="seconds for a request's head, then its body, to arrive (from 0.1 to 3600; "
        "default: %(default)g)",
    )
    p.add_argument(
        "--idle-timeout",
        type=bounded(int, 1, 3600),
        default=SERVE_IDLE_TIMEOUT,
        metavar="S",
        help="seconds before an idle connection is closed (from 1 to 3600; default: %(default)s)",
    )
    p.add_argument(
        "--max-sessions",
        type=bounded(int, 1, 1000),
        default=SERVE_MAX_SESSIONS,
        metavar="N",
        help="browser webcam sessions at once; more are told to try again later "
        "(from 1 to 1000; default: %(default)s)",
    )
    p.add_argument(
        "--session-idle-timeout",
        type=bounded(float, 1.0, 86400.0),
        default=SERVE_SESSION_IDLE_TIMEOUT,
        metavar="S",
        help="seconds a webcam session may go without a frame before it is closed "
        "(from 1 to 86400; default: %(default)g)",
    )
    p.add_argument("--cert", type=_existing_path, default=None, help="TLS certificate (HTTPS)")
    p.add_argument("--key", type=_existing_path, default=None, help="TLS private key")
    watch = p.add_argument_group("server cameras (--source), as detect watches")
    _watch_args(watch, "--mqtt-publish")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("classify", help="classify face crops (no detection)")
    p.add_argument(
        "paths",
        nargs="+",
        type=_existing_path,
        metavar="PATH",
        help="image or folder of images (searched recursively)",
    )
    _model_arg(p)
    p.add_argument(
        "--json",
        default="-",
        metavar="OUT",
        help="where to write JSON lines (default: '-', stdout)",
    )
    _max_pixels_arg(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("demo", help="run the pipeline on six sample photos (no camera needed)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("maskwatch-demo"),
        help="folder for annotated photos and the contact sheet (default: %(default)s)",
    )
    _model_arg(p)
    _detector_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a mask classifier (needs the train extra)")
    p.add_argument(
        "data",
        nargs="*",
        type=_data_spec,
        metavar="DATA",
        help="folder with one sub-folder per class, folder of photos with Pascal VOC "
        "XML, or FOLDER:LABEL when the subject of every photo in it (its largest clear face) "
        "has LABEL (e.g. rmfd:mask)",
    )
    p.add_argument(
        "--config",
        type=_existing_path,
        default=None,
        help="repeat a run from its config.json (other options are ignored)",
    )
    p.add_argument("--out", default=None, help="output folder (default: runs/train)")
    p.add_argument(
        "--recipe",
        choices=choices(Recipe),
        default=None,
        help="seed (default): frozen MobileNetV2 and the original project's head and "
        "augmentation; real: richer augmentation with synthetic masks, balanced "
        "classes, validation split, fine-tuning of the top blocks",
    )
    for option, kind, allowed, text in (
        ("epochs", int, Range(1, 10_000), "head epochs"),
        ("finetune_epochs", int, Range(0, 10_000), "fine-tuning epochs of the top blocks"),
        ("learning_rate", float, Range(0, 1, low_open=True), "Adam, head stage"),
        ("finetune_learning_rate", float, Range(0, 1, low_open=True), "Adam, fine-tuning"),
        ("patience", int, Range(0, 10_000), "early stopping on validation loss, 0 = off"),
        (
            "views",
            int,
            Range(1, 64),
            "augmented views per training face whose features are cached",
        ),
        ("val_fraction", float, Range(0, 1, high_open=True), "validation share of all faces"),
    ):
        p.add_argument(
            "--" + option.replace("_", "-"),
            type=within(kind, allowed),
            default=None,
            help=f"{text} ({_by_recipe(option)})",
        )
    p.add_argument("--batch-size", type=bounded(int, 1, 4096), default=None, help="default: 32")
    p.add_argument(
        "--augment",
        choices=choices(Augment),
        default=None,
        help=f"augmentation ({_by_recipe('augment')})",
    )
    p.add_argument(
        "--test-fraction", type=within(float, FRACTION), default=None, help="default: 0.3"
    )
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
    p.add_argument("--seed", type=within(int, SEED_RANGE), default=None, help="default: 0")
    p.add_argument("--input-size", type=bounded(int, 32, 1024), default=None, help="default: 224")
    p.add_argument(
        "--limit-per-class",
        type=bounded(int, 1, 10**9),
        default=None,
        help="use at most this many photos or boxes per class and dataset (quick runs)",
    )
    p.add_argument(
        "--balance-classes",
        action="store_const",
        const=True,
        default=None,
        help=f"weight the loss by inverse class frequency ({_by_recipe('balance_classes')})",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="the training report's figures for a model on any data")
    p.add_argument("--model", type=_existing_path, required=True, help="ONNX classifier")
    p.add_argument("data", nargs="*", type=_data_spec, metavar="DATA")
    p.add_argument(
        "--faces",
        type=_existing_path,
        default=None,
        help="evaluate exactly the faces of a training run's test_faces.csv",
    )
    p.add_argument("--out", type=Path, default=None, help="also write a report folder here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="a faster int8 copy of a classifier (needs the train extra)")
    _model_arg(p)
    p.add_argument("--out", type=Path, required=True, help="the new .onnx (its .json beside it)")
    p.add_argument("--int8", action="store_true", help="static int8 quantisation (QDQ)")
    p.add_argument(
        "--calibrate",
        nargs="+",
        type=_data_spec,
        required=True,
        metavar="DATA",
        help="datasets to take calibration faces from (as for train)",
    )
    p.add_argument(
        "--exclude-faces",
        type=_existing_path,
        default=None,
        metavar="CSV",
        help="a training run's test_faces.csv: never calibrate on those photos",
    )
    p.add_argument(
        "--faces",
        type=bounded(int, 1, 100_000),
        default=300,
        help="calibration faces (default: %(default)s)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("data", help="inspect datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    a = data_sub.add_parser("audit", help="classes, sources, duplicates, faces found, leakage")
    a.add_argument("data", nargs="+", type=_data_spec, metavar="DATA")
    a.add_argument(
        "--test-fraction",
        type=within(float, FRACTION),
        default=0.3,
        help="fraction of the proposed split checked for leakage (default: 0.3)",
    )
    a.add_argument(
        "--seed",
        type=within(int, SEED_RANGE),
        default=0,
        help="seed of the proposed split (default: 0)",
    )
    a.set_defaults(func=cmd_audit)

    p = sub.add_parser("models", help="list, fetch and verify every model and sample file")
    p.add_argument("--fetch", action="store_true", help="download whatever is missing")
    p.set_defaults(func=cmd_models)
    return parser


class _Formatter(logging.Formatter):
    """'maskwatch: message', with 'warning: ' in front of warnings."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        return f"maskwatch: {prefix}{record.getMessage()}"


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except MaskwatchError as exc:
        print(f"maskwatch: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("maskwatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
