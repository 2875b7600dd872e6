"""`maskwatch stats`: people seen per period, from an event log."""

from __future__ import annotations

import argparse

from maskwatch.cli.args import Subparsers, event_source, given_path
from maskwatch.defaults import STATS_PERIODS


def cmd_stats(args: argparse.Namespace) -> int:
    from maskwatch.stats import plot, summarise

    table = summarise(args.log, by=args.by, source=args.source)
    print(table.text())
    if args.plot is not None:
        plot(table, args.plot)
        print(f"\nchart written to {args.plot}")
    return 0


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("stats", help="people seen per minute, hour or day from an event log")
    p.add_argument(
        "log",
        type=event_source,
        metavar="LOG",
        help="event log (detect --events): an SQLite file or postgresql://user:pass@host/db",
    )
    p.add_argument(
        "--by", choices=STATS_PERIODS, default="hour", help="period length (default: %(default)s)"
    )
    p.add_argument("--source", default=None, help="only this camera or file")
    p.add_argument(
        "--plot",
        type=given_path,
        default=None,
        metavar="PNG",
        help="also draw the table as a bar chart in PNG (needs the plot extra)",
    )
    p.set_defaults(func=cmd_stats)
