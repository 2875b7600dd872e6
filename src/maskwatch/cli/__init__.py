"""The `maskwatch` command: one module per command (its options beside its handler), shared
argument types in `args`, and here the parser, logging and the one place where project errors
become a one-line message. Commands import the library only when they run, so --version and
--help stay fast."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import NoReturn

from maskwatch import __version__
from maskwatch.cli import classify, demo, detect, models, serve, stats, train
from maskwatch.cli.args import Handler, Subparsers, within
from maskwatch.errors import MaskwatchError, Terminated
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


# Control characters (a file named with a newline, a carriage return or a terminal escape)
# written as escapes: a message stays one line and cannot forge another or colour the terminal.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != ord("\t")}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r"})


def one_line(message: str) -> str:
    """`message` as one line of a terminal, its control characters escaped."""
    return message.translate(_ESCAPES)


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (and a pointer to --help), as every other
    error is, not the whole usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            2, f"{self.prog}: error: {one_line(_suggest(message))} (see {self.prog} --help)\n"
        )


def _suggest(message: str) -> str:
    """argparse's "invalid choice" with the nearest choice, when one is close (`detcet`)."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if found is None:
        return message
    choices = re.findall(r"'([^']*)'", found[2])
    close = difflib.get_close_matches(found[1], choices, n=1, cutoff=0.7)
    return f"{message}; did you mean {close[0]}?" if close else message


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
        command.set_defaults(command_parser=command)  # a sub-command's own, set later, wins
        summary = summaries.get(name)
        if command.description is None and summary:
            command.description = summary[0].upper() + summary[1:] + "."
        for action in command._subparsers._group_actions if command._subparsers else ():
            if isinstance(action, argparse._SubParsersAction):
                _finish_commands(action)


class LineFormatter(logging.Formatter):
    """'maskwatch: message', with 'warning: ' in front of warnings; one line each, an
    exception logged with it (a library's "Exception in ASGI application") said by its type and
    text instead of its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        message = record.getMessage().strip()
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            message = f"{message}: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
        if not getattr(record, OWN_SECRET, False):
            message = redact(message)
        return f"maskwatch: {prefix}{one_line(message)}"


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises Terminated during the block, where its default action would kill the
    process at once (only the main thread gets signals; a SIGTERM already handled or ignored is
    left alone). uvicorn's own handling during `serve` takes over from this one."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stopped(interrupt: KeyboardInterrupt) -> int:
    """The end of a run stopped by Ctrl-C (status 130), or by SIGTERM: ended, after the clean-up,
    as SIGTERM's default action would have (a shell or docker sees status 143, systemd a clean
    stop), as uvicorn does after its graceful shutdown."""
    if not isinstance(interrupt, Terminated):
        print("maskwatch: interrupted", file=sys.stderr)
        return 130
    print("maskwatch: terminated", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    signal.raise_signal(signal.SIGTERM)
    return 128 + signal.SIGTERM  # only if SIGTERM was since handled or ignored


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """argparse's message for arguments no option takes, said by the command they were given
    to, with the nearest option when one is close to the first of them."""
    message = f"unrecognized arguments: {' '.join(extra)}"
    options = [o for action in parser._actions for o in action.option_strings]
    close = difflib.get_close_matches(extra[0].split("=")[0], options, n=1, cutoff=0.7)
    return f"{message}; did you mean {close[0]}?" if close else message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        own: argparse.ArgumentParser = getattr(args, "command_parser", parser)
        own.error(_unrecognized(own, extra))
    _setup_logging(args.quiet)
    func: Handler = args.func
    try:
        with _sigterm_as_ctrl_c():
            return func(args)
    except MaskwatchError as exc:
        print(f"maskwatch: error: {one_line(redact(str(exc)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        return _stopped(exc)
    except ImportError as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # a native module stopped mid-import
            return _stopped(exc.__cause__)
        raise
    except BrokenPipeError:
        return 0
    except MemoryError as exc:  # raised anywhere (NumPy's says how much it asked for)
        detail = f" ({one_line(str(exc))})" if str(exc) else ""
        print(f"maskwatch: error: out of memory{detail}", file=sys.stderr)
        return 1
