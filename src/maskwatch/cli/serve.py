"""`maskwatch serve`: the web page, dashboard and HTTP API, with optional server cameras."""

from __future__ import annotations

import argparse

from maskwatch.cli.args import (
    Subparsers,
    access_args,
    allowed_host,
    event_target,
    existing_path,
    given_path,
    max_pixels_arg,
    model_arg,
    ranged_arg,
    source_spec,
    watch_args,
    watching,
)
from maskwatch.defaults import (
    LOOPBACK_HOST,
    PORT_RANGE,
    SERVE_DETECTORS,
    SERVE_DETECTORS_RANGE,
    SERVE_IDLE_TIMEOUT,
    SERVE_IDLE_TIMEOUT_RANGE,
    SERVE_MAX_SESSIONS,
    SERVE_MAX_UPLOAD_MB,
    SERVE_MAX_UPLOADS,
    SERVE_PORT,
    SERVE_REQUEST_TIMEOUT,
    SERVE_REQUEST_TIMEOUT_RANGE,
    SERVE_SESSION_IDLE_RANGE,
    SERVE_SESSION_IDLE_TIMEOUT,
    SERVE_SESSIONS_RANGE,
    SERVE_UPLOAD_MB_RANGE,
    SERVE_UPLOADS_RANGE,
)
from maskwatch.errors import MissingExtraError


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from maskwatch.web.server import Listener, run_server, server_token
        from maskwatch.web.service import ServeSettings, check_recordings
    except ImportError as exc:
        raise MissingExtraError("serve", "web") from exc
    token = server_token(args.host, args.token, args.no_auth)
    listener = Listener(args.host, args.port, args.cert, args.key, args.idle_timeout)
    if args.mqtt:
        from maskwatch.mqtt import parse_mqtt_url

        parse_mqtt_url(args.mqtt, pattern=True)
    if args.save is not None:
        check_recordings(args.save, args.source or [])
    settings = ServeSettings(
        model=args.model,
        sources=list(args.source or []),
        watch=watching(args, args.mqtt_publish),
        events=args.events,
        save=args.save,
        mqtt=args.mqtt,
        token=token,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        request_timeout=args.request_timeout,
        max_sessions=args.max_sessions,
        session_idle_timeout=args.session_idle_timeout,
        max_uploads=args.max_uploads,
        detectors=args.detectors,
        allowed_hosts=list(args.allow_host or []),
    )
    run_server(settings, listener)
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="web page, dashboard and HTTP API (needs the web extra)")
    p.add_argument("--host", default=LOOPBACK_HOST, help="address to bind (default: %(default)s)")
    ranged_arg(p, "--port", int, PORT_RANGE, SERVE_PORT, "port to listen on")
    p.add_argument(
        "--source",
        action="append",
        type=source_spec,
        metavar="SRC",
        help="a camera or stream to process on the server and show on the page (repeatable)",
    )
    model_arg(p)
    p.add_argument(
        "--save",
        type=given_path,
        default=None,
        metavar="FOLDER",
        help="record each --source camera's annotated video as FOLDER/camera-N.mp4 (H.264), "
        "complete when the camera ends or the server stops (default: nothing is recorded)",
    )
    p.add_argument(
        "--events",
        type=event_target,
        default=None,
        metavar="LOG",
        help="store every camera's events in this SQLite file or PostgreSQL database "
        "(postgresql://user:pass@host/db; default: nothing is stored)",
    )
    p.add_argument(
        "--mqtt",
        default=None,
        metavar="URL",
        help="show the cameras publishing under mqtt://host[:port]/topic-pattern, "
        "e.g. mqtt://broker:1883/site/#",
    )
    access_args(p, "clients")
    ranged_arg(
        p,
        "--max-upload-mb",
        float,
        SERVE_UPLOAD_MB_RANGE,
        SERVE_MAX_UPLOAD_MB,
        "largest upload or WebSocket frame, in MB",
    )
    max_pixels_arg(p, "larger uploads and frames are refused with 413")
    ranged_arg(
        p,
        "--request-timeout",
        float,
        SERVE_REQUEST_TIMEOUT_RANGE,
        SERVE_REQUEST_TIMEOUT,
        "seconds for a request's head, then its body, to arrive",
        metavar="S",
        shown="g",
    )
    ranged_arg(
        p,
        "--idle-timeout",
        int,
        SERVE_IDLE_TIMEOUT_RANGE,
        SERVE_IDLE_TIMEOUT,
        "seconds before an idle connection is closed",
        metavar="S",
    )
    ranged_arg(
        p,
        "--max-sessions",
        int,
        SERVE_SESSIONS_RANGE,
        SERVE_MAX_SESSIONS,
        "browser webcam sessions at once; more are told to try again later",
        metavar="N",
    )
    ranged_arg(
        p,
        "--session-idle-timeout",
        float,
        SERVE_SESSION_IDLE_RANGE,
        SERVE_SESSION_IDLE_TIMEOUT,
        "seconds a webcam session may go without a frame before it is closed",
        metavar="S",
        shown="g",
    )
    ranged_arg(
        p,
        "--max-uploads",
        int,
        SERVE_UPLOADS_RANGE,
        SERVE_MAX_UPLOADS,
        "uploads processed at once; more get 503 with Retry-After",
        metavar="N",
    )
    ranged_arg(
        p,
        "--detectors",
        int,
        SERVE_DETECTORS_RANGE,
        SERVE_DETECTORS,
        "face detectors that cameras, sessions and uploads share, in turn",
        metavar="N",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        type=allowed_host,
        metavar="NAME",
        help="a name a reverse proxy or alias reaches the server by (repeatable; *.x for x's "
        "subdomains): answered in the Host header where only loopback's are (--host on "
        "loopback), and its pages' uploads and webcam streams are not refused as another site's",
    )
    p.add_argument("--cert", type=existing_path, default=None, help="TLS certificate (HTTPS)")
    p.add_argument("--key", type=existing_path, default=None, help="TLS private key")
    watch = p.add_argument_group("server cameras (--source), as detect watches")
    watch_args(watch, "--mqtt-publish")
    p.set_defaults(func=cmd_serve)
