"""``notify-gateway session create|revoke``: sessions from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from gateway.cli.command import Subcommand
from gateway.cli.common import REDIS_HELP, USAGE_ERROR, fail, read_token, with_publisher
from notify_publisher.sync import Publisher

__all__ = ["SESSION"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.description = f"Create or revoke a session. {REDIS_HELP}"
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="store a new session; prints its token last")
    create.add_argument("user_id", metavar="USER_ID")
    create.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (3600)")
    create.add_argument(
        "--channel",
        action="append",
        default=[],
        dest="channels",
        metavar="GLOB",
        help="an extra channel glob the session may read (repeatable)",
    )
    revoke = actions.add_parser(
        "revoke", help="delete a session and close its sockets on every gateway (4001)"
    )
    revoke.add_argument(
        "token",
        metavar="TOKEN",
        help="the token, or - to read it from stdin (put -- before a token starting with -)",
    )


def _create(publisher: Publisher, args: argparse.Namespace) -> int:
    if not args.user_id.strip():
        return fail(
            "USER_ID is empty: give the id your backend knows the user by, e.g. 42", USAGE_ERROR
        )
    try:
        token = publisher.create_session(args.user_id, ttl=args.ttl, channels=args.channels)
    except ValueError as exc:
        return fail(str(exc), USAGE_ERROR)
    print(token)
    return 0


def _revoke(publisher: Publisher, token: str) -> int:
    try:
        existed = publisher.revoke_session(token)
    except ValueError as exc:
        return fail(str(exc), USAGE_ERROR)
    if existed:
        print("revoked: session deleted; gateways close its sockets (4001)")
    else:
        print("revoked: no stored session (expired or unknown); gateways close any sockets left")
    return 0


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.action == "create":
        return with_publisher(env, lambda publisher: _create(publisher, args))
    token = read_token(args.token)
    return with_publisher(env, lambda publisher: _revoke(publisher, token))


SESSION = Subcommand("session", "create or revoke a session", _configure, _run)
