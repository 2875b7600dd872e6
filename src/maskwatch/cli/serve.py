"""`maskwatch serve`: the web page, dashboard and HTTP API, with optional server cameras."""

from __future__ import annotations

import argparse

from maskwatch.cli.args import (
    Subparsers,
    existing_path,
    max_pixels_arg,
    model_arg,
    output_path,
    source_spec,
    watch_args,
    watching,
    within,
)
from maskwatch.defaults import (
    SERVE_IDLE_TIMEOUT,
    SERVE_MAX_SESSIONS,
    SERVE_MAX_UPLOAD_MB,
    SERVE_REQUEST_TIMEOUT,
    SERVE_SESSION_IDLE_TIMEOUT,
    Range,
)
from maskwatch.errors import MissingExtraError

PORT_RANGE = Range(1, 65535)
UPLOAD_MB_RANGE = Range(0.01, 1024)
REQUEST_TIMEOUT_RANGE = Range(0.1, 3600)
IDLE_TIMEOUT_RANGE = Range(1, 3600)
SESSIONS_RANGE = Range(1, 1000)
SESSION_IDLE_RANGE = Range(1, 86400)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from maskwatch.web.server import Listener, run_server, server_token
        from maskwatch.web.service import ServeSettings
    except ImportError as exc:
        raise MissingExtraError("serve", "web") from exc
    token = server_token(args.host, args.token, args.no_auth)
    listener = Listener(args.host, args.port, args.cert, args.key, args.idle_timeout)
    if args.mqtt:
        from maskwatch.mqtt import parse_mqtt_url

        parse_mqtt_url(args.mqtt, pattern=True)
    settings = ServeSettings(
        model=args.model,
        sources=list(args.source or []),
        watch=watching(args, args.mqtt_publish),
        events=args.events,
        mqtt=args.mqtt,
        token=token,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        request_timeout=args.request_timeout,
        max_sessions=args.max_sessions,
        session_idle_timeout=args.session_idle_timeout,
    )
    run_server(settings, listener)
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="web page, dashboard and HTTP API (needs the web extra)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument(
        "--port",
        type=within(int, PORT_RANGE),
        default=8000,
        help=f"port to listen on ({PORT_RANGE.describe()}; default: %(default)s)",
    )
    p.add_argument(
        "--source",
        action="append",
        type=source_spec,
        metavar="SRC",
        help="a camera or stream to process on the server and show on the page (repeatable)",
    )
    model_arg(p)
    p.add_argument(
        "--events",
        type=output_path,
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
        type=within(float, UPLOAD_MB_RANGE),
        default=SERVE_MAX_UPLOAD_MB,
        help="largest upload or WebSocket frame, in MB "
        f"({UPLOAD_MB_RANGE.describe()}; default: %(default)s)",
    )
    max_pixels_arg(p, "larger uploads and frames are refused with 413")
    p.add_argument(
        "--request-timeout",
        type=within(float, REQUEST_TIMEOUT_RANGE),
        default=SERVE_REQUEST_TIMEOUT,
        metavar="S",
        help="seconds for a request's head, then its body, to arrive "
        f"({REQUEST_TIMEOUT_RANGE.describe()}; "
        "default: %(default)g)",
    )
    p.add_argument(
        "--idle-timeout",
        type=within(int, IDLE_TIMEOUT_RANGE),
        default=SERVE_IDLE_TIMEOUT,
        metavar="S",
        help="seconds before an idle connection is closed "
        f"({IDLE_TIMEOUT_RANGE.describe()}; default: %(default)s)",
    )
    p.add_argument(
        "--max-sessions",
        type=within(int, SESSIONS_RANGE),
        default=SERVE_MAX_SESSIONS,
        metavar="N",
        help="browser webcam sessions at once; more are told to try again later "
        f"({SESSIONS_RANGE.describe()}; default: %(default)s)",
    )
    p.add_argument(
        "--session-idle-timeout",
        type=within(float, SESSION_IDLE_RANGE),
        default=SERVE_SESSION_IDLE_TIMEOUT,
        metavar="S",
        help="seconds a webcam session may go without a frame before it is closed "
        f"({SESSION_IDLE_RANGE.describe()}; default: %(default)g)",
    )
    p.add_argument("--cert", type=existing_path, default=None, help="TLS certificate (HTTPS)")
    p.add_argument("--key", type=existing_path, default=None, help="TLS private key")
    watch = p.add_argument_group("server cameras (--source), as detect watches")
    watch_args(watch, "--mqtt-publish")
    p.set_defaults(func=cmd_serve)
