"""The `maskwatch` command: one module per command (its options beside its handler), shared
argument types in `args`, and here the parser, logging and the one place where project errors
become a one-line message. Commands import the library only when they run, so --version and
--help stay fast."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from maskwatch import __version__
from maskwatch.cli import classify, demo, detect, models, serve, stats, train
from maskwatch.cli.args import Handler, Subparsers, within
from maskwatch.errors import MaskwatchError
from maskwatch.redact import OWN_SECRET, redact

__all__ = ["build_parser", "main", "within"]

log = logging.getLogger("maskwatch")
DESCRIPTION = (
    "Real-time face-mask detection: finds every face in a webcam, video, stream or photos and "
    "labels it mask, no mask or mask worn incorrectly."
)
QUIET_HELP = "only warnings and errors"
# In the order `maskwatch --help` lists them.
COMMANDS = (detect, stats, serve, classify, demo, train, models)


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (and a pointer to --help), as every other
    error is, not the whole usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="maskwatch", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"maskwatch {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    _finish_commands(sub)
    return parser


def _finish_commands(sub: Subparsers) -> None:
    """For every command and sub-command: -q may also follow it (`maskwatch detect ... -q`;
    given there, it leaves the top-level value alone unless set), and its own --help gets its
    one-line summary from the command list, unless it has a longer description of its own."""
    summaries = {action.dest: action.help for action in sub._choices_actions}
    for name, command in sub.choices.items():
        command.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP
        )
        summary = summaries.get(name)
        if command.description is None and summary:
            command.description = summary[0].upper() + summary[1:] + "."
        for action in command._subparsers._group_actions if command._subparsers else ():
            if isinstance(action, argparse._SubParsersAction):
                _finish_commands(action)


class _Formatter(logging.Formatter):
    """'maskwatch: message', with 'warning: ' in front of warnings."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        message = record.getMessage()
        if not getattr(record, OWN_SECRET, False):
            message = redact(message)
        return f"maskwatch: {prefix}{message}"


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
    func: Handler = args.func
    try:
        return func(args)
    except MaskwatchError as exc:
        print(f"maskwatch: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("maskwatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
