"""`maskwatch detect`: watch a camera, video, stream or images and write what it sees."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from maskwatch.cli.args import (
    Options,
    Subparsers,
    access_args,
    event_target,
    given_path,
    max_pixels_arg,
    model_arg,
    output_target,
    partial,
    save_path,
    source_spec,
    watch_args,
    watching,
    within,
)
from maskwatch.defaults import (
    LOOPBACK_HOST,
    MAX_FPS_RANGE,
    PORT_RANGE,
    RECONNECT_ATTEMPTS,
    RECONNECT_RANGE,
)
from maskwatch.errors import MaskwatchError

if TYPE_CHECKING:
    from maskwatch.metrics import Metrics, MetricsServer
    from maskwatch.watch import WatchSettings

log = logging.getLogger("maskwatch")


def cmd_detect(args: argparse.Namespace) -> int:
    if not args.show and not any((args.save, args.json, args.events, args.mqtt, args.metrics_port)):
        raise MaskwatchError(
            "--no-show needs --save OUT, --json OUT, --events LOG, --mqtt URL or "
            "--metrics-port PORT, or there is no output"
        )
    if args.snapshots is not None and args.events is None:
        raise MaskwatchError("--snapshots needs --events LOG (snapshots are listed in the log)")
    settings = watching(args, args.mqtt)
    metrics, server = _metrics(args)  # bound before the models load: a port in use fails fast
    try:
        return _detect(args, settings, metrics)
    finally:
        if server is not None:
            server.close()


def _metrics(args: argparse.Namespace) -> tuple[Metrics | None, MetricsServer | None]:
    """The run's metrics and their server, when --metrics-port asks for them."""
    if args.metrics_port is None:
        if args.metrics_host is not None:
            raise MaskwatchError("--metrics-host needs --metrics-port PORT")
        return None, None
    from maskwatch.access import address, server_token
    from maskwatch.metrics import Metrics, MetricsServer

    host = args.metrics_host or LOOPBACK_HOST
    token = server_token(host, args.token, args.no_auth, option="--metrics-host")
    metrics = Metrics()
    server = MetricsServer(metrics, host, args.metrics_port, token)
    log.info("metrics at %s", address("http", host, server.port, "/metrics"))
    return metrics, server


def _detect(args: argparse.Namespace, settings: WatchSettings, metrics: Metrics | None) -> int:
    from maskwatch.classifier import MaskClassifier
    from maskwatch.detect import EventOutputs, run_detect
    from maskwatch.sources import open_source

    pipeline = settings.pipeline(MaskClassifier(args.model))
    mqtt = None
    if settings.mqtt:
        from maskwatch.mqtt import MqttPublisher

        mqtt = MqttPublisher(settings.mqtt, discovery=settings.mqtt_discovery)
    alerts = settings.alerts.dispatcher() if settings.alerts else None
    events = EventOutputs(args.events, args.snapshots, alerts, mqtt)
    source = open_source(
        args.source,
        reconnect_attempts=args.reconnect,
        max_fps=args.max_fps,
        max_pixels=args.max_pixels,
        realtime=args.realtime,
    )
    summary = run_detect(
        source,
        pipeline,
        show=args.show,
        save=args.save,
        json_target=args.json,
        blur=settings.blur,
        events=events,
        metrics=metrics,
    )
    log.info("%s", summary.describe())
    if mqtt is not None:
        log.info("mqtt: %d events sent, %d never sent", mqtt.sent, mqtt.unsent)
    if events.alerts is not None:
        log.info("%s", events.alerts.counts.describe())
    if len(summary.written) > 5:
        log.info("wrote %d files to %s", len(summary.written), args.save)
    else:
        codec = f" ({summary.codec})" if summary.codec else ""
        for path in summary.written:
            log.info("wrote %s%s", path, codec)
    missed = source.shortfall()
    if missed:
        raise MaskwatchError(partial(missed))
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("detect", help="label every face in a webcam, video, stream or images")
    p.add_argument(
        "--source",
        type=source_spec,
        default="0",
        help="camera index, video file, rtsp/http URL, image, folder or glob "
        "(default: %(default)s, the first webcam)",
    )
    model_arg(p)
    p.add_argument(
        "--no-show",
        dest="show",
        action="store_false",
        help="do not open a window (default: show one; q or Esc quits)",
    )
    p.add_argument(
        "--save",
        type=save_path,
        default=None,
        metavar="OUT",
        help="write annotated output: a .mp4, .mkv or .avi for videos and cameras, a folder "
        "for images (or one image file for one image)",
    )
    p.add_argument(
        "--json",
        type=output_target,
        default=None,
        metavar="OUT",
        help="write one JSON object per frame or image to OUT ('-': stdout)",
    )
    p.add_argument(
        "--max-fps",
        type=within(float, MAX_FPS_RANGE),
        default=None,
        help="process at most this many frames per second: a camera's newest, a video's spread "
        f"over its own time ({MAX_FPS_RANGE.describe()}; default: no cap)",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="play a video file at its own pace (its frames' timestamps), as a camera would "
        "deliver it, dropping frames (and saying so) when processing falls behind (default: "
        "every frame, as fast as it goes)",
    )
    p.add_argument(
        "--reconnect",
        type=within(int, RECONNECT_RANGE),
        default=RECONNECT_ATTEMPTS,
        metavar="N",
        help="times to reopen a stream that drops, waiting 0.5, 1, 2 ... up to 30 s between "
        f"tries, before giving up ({RECONNECT_RANGE.describe()}; default: %(default)s; the "
        "count starts again once a frame arrives)",
    )
    p.add_argument(
        "--events",
        type=event_target,
        default=None,
        metavar="LOG",
        help="append events (a person appears, their label settles or changes, they leave) "
        "to this SQLite file or PostgreSQL database (postgresql://user:pass@host/db); "
        "no images are stored",
    )
    p.add_argument(
        "--snapshots",
        type=given_path,
        default=None,
        metavar="DIR",
        help="also save a face picture in DIR when a label settles or changes",
    )
    watch_args(p, "--mqtt")
    max_pixels_arg(p)
    metrics_args(p.add_argument_group("metrics for Prometheus"))
    p.set_defaults(func=cmd_detect)


def metrics_args(group: Options) -> None:
    """--metrics-port and where and for whom it listens, as serve does (maskwatch.access)."""
    group.add_argument(
        "--metrics-port",
        type=within(int, PORT_RANGE),
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics while the run goes on "
        f"({PORT_RANGE.describe()})",
    )
    group.add_argument(
        "--metrics-host",
        default=None,
        metavar="HOST",
        help=f"address the metrics are served on (default: {LOOPBACK_HOST}); any other "
        "needs --token or --no-auth, as for serve",
    )
    access_args(group, "the metrics' scraper")
