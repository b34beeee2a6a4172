"""``notify-gateway listen CHANNEL... --token T``: a terminal subscriber for debugging.

Messages go to stdout as one JSON frame per line (pipe them to ``jq``); everything
else (the subscription summary, gaps, why the connection ended) goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from gateway.cli.command import Subcommand
from gateway.cli.common import USAGE_ERROR, fail, note, read_token, warn_config
from gateway.config import load_settings
from notify_wire.codes import CLOSE_CODES

__all__ = ["LISTEN"]

#: how long the gateway has to welcome us and confirm the subscriptions
ANSWER_TIMEOUT_S = 10.0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("channels", nargs="+", metavar="CHANNEL", help="exact channel names")
    parser.add_argument(
        "--token",
        required=True,
        help="session token, or - to read it from stdin (--token=-abc for one starting with -)",
    )
    parser.description = (
        "Subscribe with a session token and print each message as a JSON line. It connects "
        "to the gateway, not to Redis (REDIS_URL is not used): by default to "
        "ws://GATEWAY_HOST:GATEWAY_PORT/ws, the address `notify-gateway serve` listens on "
        "with the same variables (ws://127.0.0.1:8765/ws)."
    )
    parser.add_argument(
        "--url", help="gateway WebSocket URL (default: from GATEWAY_HOST and GATEWAY_PORT)"
    )


def describe_close(closed: ConnectionClosed) -> str:
    """Why the gateway ended the connection, in one line."""
    if closed.rcvd is None:
        return "the connection to the gateway was lost (no close frame)"
    code, reason = closed.rcvd.code, closed.rcvd.reason
    known = CLOSE_CODES.get(code)
    meaning = known.meaning if known is not None else "the gateway closed the connection"
    return f"connection closed with {code} ({reason or 'no reason given'}): {meaning}"


def _frame(text: str | bytes) -> dict[str, Any]:
    frame = orjson.loads(text)
    if not isinstance(frame, dict):
        raise ValueError("the gateway sent a frame that is not a JSON object")
    return frame


def _show(text: str | bytes, frame: dict[str, Any]) -> None:
    kind = frame.get("type")
    if kind == "message":
        line = text.decode() if isinstance(text, bytes) else text
        # Raw newlines can only be whitespace between JSON tokens (inside strings they
        # are escaped), so blanking them keeps the frame exact and on one line.
        print(line.replace("\n", " ").replace("\r", " "), flush=True)
    elif kind == "gap":
        note(f"gap on {frame.get('channel')!r}: messages published meanwhile may be lost")
    elif kind == "error":
        note(f"gateway error {frame.get('code')}: {frame.get('message')}")


async def _subscribe(ws: ClientConnection, channels: Sequence[str]) -> str | None:
    """Subscribe to every channel; an error line for the first refusal, else None."""
    for number, channel in enumerate(channels, 1):
        frame = {"type": "subscribe", "channel": channel, "ref": number}
        await ws.send(orjson.dumps(frame).decode())
    pending = set(range(1, len(channels) + 1))
    while pending:
        text = await ws.recv()
        frame = _frame(text)
        ref = frame.get("ref")
        if frame.get("type") == "subscribed" and ref in pending:
            pending.discard(ref)
        elif frame.get("type") == "error" and ref in pending:
            return f"cannot subscribe to {channels[ref - 1]!r}: {frame.get('message')}"
        else:
            _show(text, frame)
    return None


async def _listen(url: str, token: str, channels: Sequence[str]) -> int:
    try:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=None,  # the gateway bounds messages itself (GATEWAY_MAX_MESSAGE_BYTES)
            open_timeout=ANSWER_TIMEOUT_S,
        )
    except InvalidURI:
        return fail(f"--url {url!r} is not a ws:// or wss:// URL", USAGE_ERROR)
    except InvalidStatus as exc:
        status = exc.response.status_code
        return fail(f"{url} answered HTTP {status}, not a WebSocket: is the path /ws?")
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        return fail(f"cannot connect to {url} ({exc}); is the gateway running?")
    async with ws:
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                welcome = _frame(await ws.recv())
                refused = await _subscribe(ws, channels)
            if refused is not None:
                return fail(refused)
            note(f"listening to {', '.join(channels)} as user {welcome.get('user')}")
            while True:
                text = await ws.recv()
                _show(text, _frame(text))
        except ConnectionClosed as exc:
            return fail(describe_close(exc))
        except TimeoutError:
            return fail(f"{url} did not answer within {ANSWER_TIMEOUT_S:g} s")
        except ValueError as exc:
            return fail(str(exc))


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = load_settings(env)
    warn_config(env, settings)
    url = args.url or f"ws://{settings.local_address()}/ws"
    return asyncio.run(_listen(url, read_token(args.token), args.channels))


LISTEN = Subcommand(
    "listen",
    "subscribe with a session token and print each message as a JSON line",
    _configure,
    _run,
)
