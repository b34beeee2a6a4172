"""``notify-gateway publish CHANNEL DATA``: publish JSON, print how many gateways got it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping

import orjson

from gateway.cli.command import Subcommand
from gateway.cli.common import REDIS_HELP, USAGE_ERROR, fail, with_publisher
from notify_publisher.sync import Publisher
from notify_wire.channels import channel_problem

__all__ = ["PUBLISH"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"Publish a JSON message to a channel; prints the receiver count. {REDIS_HELP}"
    )
    parser.add_argument("channel", metavar="CHANNEL", help="exact channel name, e.g. user:42")
    parser.add_argument(
        "data",
        metavar="DATA",
        help="the message as JSON (quote text: '\"hello\"'), or - to publish each line of "
        "stdin as one message (blank lines are skipped)",
    )
    parser.add_argument(
        "--history",
        action="store_true",
        help="also keep each message in the channel's history, so clients resume without loss",
    )


def _publish_each(
    publisher: Publisher, channel: str, messages: Iterable[tuple[str, bytes]], history: bool
) -> int:
    problem = channel_problem(channel, publisher.settings.max_channel_length)
    if problem is not None:
        return fail(f"CHANNEL: {problem}", USAGE_ERROR)
    for where, message in messages:
        try:
            orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            hint = (
                "quote text, e.g. '\"hello\"'"
                if where == "DATA"
                else "the lines before it were published, none from it on"
            )
            return fail(f"{where} is not valid JSON ({exc}): {hint}", USAGE_ERROR)
        try:
            count = publisher.publish(channel, message, history=history)  # bytes: verbatim
        except ValueError as exc:
            return fail(f"{where}: {exc}", USAGE_ERROR)
        print(count, flush=True)
    return 0


def _stdin_lines() -> Iterable[tuple[str, bytes]]:
    for number, line in enumerate(sys.stdin.buffer, 1):
        message = line.strip()
        if message:
            yield f"line {number}", message


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    messages = _stdin_lines() if args.data == "-" else [("DATA", args.data.encode())]
    return with_publisher(
        env, lambda publisher: _publish_each(publisher, args.channel, messages, args.history)
    )


PUBLISH = Subcommand(
    "publish", "publish a JSON message to a channel; prints the receiver count", _configure, _run
)
