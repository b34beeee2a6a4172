"""``notify-gateway serve``: run the gateway until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import signal
import sys
from collections.abc import Mapping

import structlog

from gateway.commands import Subcommand
from gateway.config import GatewaySettings, load_settings
from gateway.embedded import EmbeddedRedis, EmbeddedRedisError, redis_answers
from gateway.log import configure_logging
from gateway.server import Gateway

__all__ = ["SERVE"]

log = structlog.get_logger("gateway.serve")


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (overrides GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="listen port (overrides GATEWAY_PORT)")


def _raise_fd_limit(max_connections: int) -> None:
    """Lift the soft ``ulimit -n`` towards the hard one; warn if it stays below the cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 1024  # Redis, logs, listening sockets, headroom
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, max(soft, wanted))
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < wanted:
        log.warning(
            "fd_limit_low",
            soft_limit=soft,
            hard_limit=hard,
            max_connections=max_connections,
            hint="raise the hard limit (ulimit -Hn, LimitNOFILE=, --ulimit nofile=) "
            "or lower GATEWAY_MAX_CONNECTIONS",
        )


async def _serve(settings: GatewaySettings) -> int:
    _raise_fd_limit(settings.admission.max_connections)
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


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = load_settings(env)
    if args.host is not None:
        settings = dataclasses.replace(settings, host=args.host)
    if args.port is not None:
        settings = dataclasses.replace(settings, port=args.port)
    configure_logging(settings.log_level, settings.log_format)
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            return asyncio.run(_serve(settings))
        return uvloop.run(_serve(settings))
    except EmbeddedRedisError as exc:
        print(f"notify-gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"notify-gateway: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1


SERVE = Subcommand("serve", "run the gateway (configured by environment)", _configure, _run)
