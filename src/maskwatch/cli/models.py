"""`maskwatch models`: list, fetch and verify every model and sample file."""

from __future__ import annotations

import argparse

from maskwatch.cli.args import Subparsers


def cmd_models(args: argparse.Namespace) -> int:
    from maskwatch.models import model_table

    rows, ok = model_table(fetch=args.fetch)
    print(rows)
    return 0 if ok else 1


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("models", help="list, fetch and verify every model and sample file")
    p.add_argument("--fetch", action="store_true", help="download whatever is missing")
    p.set_defaults(func=cmd_models)
