"""``notify-gateway`` command line.

Each subcommand lives in its own module as a :class:`Subcommand`; this module only
builds the parser and turns errors into one line on stderr and an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from gateway import __version__
from gateway.cli.command import Subcommand
from gateway.cli.doctor import DOCTOR
from gateway.cli.listen import LISTEN
from gateway.cli.publish import PUBLISH
from gateway.cli.serve import SERVE
from gateway.cli.session import SESSION
from notify_wire.env import ConfigError

__all__ = ["main"]

SUBCOMMANDS: tuple[Subcommand, ...] = (SERVE, PUBLISH, SESSION, LISTEN, DOCTOR)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notify-gateway",
        description="Real-time notification gateway: Redis pub/sub to WebSocket clients.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for subcommand in SUBCOMMANDS:
        sub = commands.add_parser(subcommand.name, help=subcommand.help)
        subcommand.configure(sub)
        sub.set_defaults(subcommand=subcommand)
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    subcommand: Subcommand = args.subcommand
    try:
        return subcommand.run(args, os.environ if env is None else env)
    except ConfigError as exc:
        print(f"notify-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
