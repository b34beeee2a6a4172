"""``notify-gateway serve``: run the gateway until SIGTERM or SIGINT.

With ``--workers N`` (``GATEWAY_WORKERS``) above 1 this process becomes the
supervisor of N worker processes (:mod:`gateway.workers`); each worker runs this
same command with the internal ``--worker`` flag.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import signal
import sys
from collections.abc import Coroutine, Mapping
from typing import Any

import structlog

from gateway.commands import Subcommand
from gateway.config import ConfigError, GatewaySettings, load_settings, parse_workers
from gateway.embedded import EmbeddedRedis, EmbeddedRedisError, redis_or_embedded
from gateway.log import configure_logging
from gateway.server import Gateway
from gateway.workers import Supervisor, WorkerCrashLoop, exit_with_parent, reserve_port

__all__ = ["SERVE"]

log = structlog.get_logger("gateway.serve")


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (overrides GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="listen port (overrides GATEWAY_PORT)")
    parser.add_argument(
        "--workers",
        metavar="N|auto",
        help="worker processes sharing the port; auto: one per CPU (overrides GATEWAY_WORKERS)",
    )
    # Internal: how the supervisor starts worker number N.
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)


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


async def _serve(settings: GatewaySettings, *, worker: bool = False) -> int:
    _raise_fd_limit(settings.admission.max_connections)
    embedded: EmbeddedRedis | None = None
    if not worker:  # workers get the supervisor's Redis
        redis, embedded = await redis_or_embedded(settings.redis)
        settings = dataclasses.replace(settings, redis=redis)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            if worker:  # the supervisor decides when to kill
                return
            log.warning("second_signal_exit", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        gateway = Gateway(settings, reuse_port=worker)
        gateway.setup_failed.add_done_callback(lambda _: stop.set())
        await gateway.start()
        await stop.wait()
        await gateway.stop()
    finally:
        if embedded is not None:
            await embedded.stop()
    if gateway.setup_failed.done():  # logged as redis_setup_failed
        raise ConfigError(str(gateway.setup_failed.result()))  # exit status 2, on stderr
    return 0


async def _supervise(settings: GatewaySettings, env: Mapping[str, str]) -> int:
    reserved = reserve_port(settings.host, settings.port)
    port: int = reserved.getsockname()[1]
    redis, embedded = await redis_or_embedded(settings.redis)
    worker_env = dict(env)
    if embedded is not None:  # one embedded Redis for all workers
        worker_env.pop("REDIS_URL", None)
        worker_env.update(REDIS_HOST=redis.host, REDIS_PORT=str(redis.port))
    try:
        return await Supervisor(settings, worker_env, port).run()
    finally:
        reserved.close()
        if embedded is not None:
            await embedded.stop()


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = load_settings(env)
    if args.host is not None:
        settings = dataclasses.replace(settings, host=args.host)
    if args.port is not None:
        settings = dataclasses.replace(settings, port=args.port)
    if args.workers is not None:
        settings = dataclasses.replace(settings, workers=parse_workers("--workers", args.workers))
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.worker is not None:
            exit_with_parent()
            structlog.contextvars.bind_contextvars(worker=args.worker)
            return _run_loop(_serve(settings, worker=True))
        if settings.workers > 1:
            return _run_loop(_supervise(settings, env))
        return _run_loop(_serve(settings))
    except (EmbeddedRedisError, WorkerCrashLoop) as exc:
        print(f"notify-gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"notify-gateway: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1


SERVE = Subcommand("serve", "run the gateway (configured by environment)", _configure, _run)
