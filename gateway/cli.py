"""``notify-gateway`` command line: ``serve`` (more subcommands build on this)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import Mapping, Sequence

import structlog

from gateway import __version__
from gateway.config import ConfigError, GatewaySettings, load_settings
from gateway.embedded import EmbeddedRedis, EmbeddedRedisError, redis_answers
from gateway.log import configure_logging
from gateway.server import Gateway

__all__ = ["main"]

log = structlog.get_logger("gateway.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notify-gateway",
        description="Real-time notification gateway: Redis pub/sub to WebSocket clients.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the gateway (configured by environment)")
    serve.add_argument("--host", help="listen address (overrides GATEWAY_HOST)")
    serve.add_argument("--port", type=int, help="listen port (overrides GATEWAY_PORT)")
    return parser


async def _serve(settings: GatewaySettings) -> int:
    embedded: EmbeddedRedis | None = None
    if not settings.redis.explicit and not await redis_answers("localhost", settings.redis.port):
        embedded = await EmbeddedRedis.start()
        settings = dataclasses.replace(
            settings,
            redis=dataclasses.replace(settings.redis, host="127.0.0.1", port=embedded.port),
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second_signal_exit", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    gateway = Gateway(settings)
    try:
        await gateway.start()
        await stop.wait()
        await gateway.stop()
    finally:
        if embedded is not None:
            await embedded.stop()
    return 0


def _run(settings: GatewaySettings) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(_serve(settings))
    return uvloop.run(_serve(settings))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environ = os.environ if env is None else env
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    try:
        settings = load_settings(environ)
        if args.host is not None:
            settings = dataclasses.replace(settings, host=args.host)
        if args.port is not None:
            settings = dataclasses.replace(settings, port=args.port)
    except ConfigError as exc:
        print(f"notify-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return _run(settings)
    except EmbeddedRedisError as exc:
        print(f"notify-gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"notify-gateway: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
