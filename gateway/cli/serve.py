"""``notify-gateway serve``: run the gateway until SIGTERM or SIGINT.

With ``--workers N`` (``GATEWAY_WORKERS``) above 1 this process becomes the
supervisor of N worker processes (:mod:`gateway.workers`); each worker runs this
same command with the internal ``--worker`` flag.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import os
import resource
import signal
import socket
import sys
from collections.abc import Coroutine, Mapping
from typing import Any

import structlog

from gateway.broker.embedded import EmbeddedRedis, EmbeddedRedisError, redis_or_embedded
from gateway.cli.command import Subcommand
from gateway.cli.workers import Supervisor, WorkerCrashLoop, exit_with_parent, reserve_port
from gateway.config import (
    GatewaySettings,
    config_warnings,
    connections_for,
    load_settings,
    parse_workers,
)
from gateway.ops.log import configure_logging
from gateway.server import Gateway
from notify_wire.env import ConfigError

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


def _raise_fd_limit() -> tuple[int | None, int | None]:
    """Lift the soft ``ulimit -n`` to the hard one; return both (None: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass

    def finite(limit: int) -> int | None:
        return None if limit == resource.RLIM_INFINITY else limit

    return finite(soft), finite(hard)


def _check_fd_limit(settings: GatewaySettings, soft: int | None, hard: int | None) -> None:
    """Warn when an explicit GATEWAY_MAX_CONNECTIONS needs more files than the limit allows.

    Without the variable the cap follows the limit (:func:`gateway.config.connections_for`).
    """
    cap = settings.admission.max_connections
    if soft is not None and connections_for(soft) < cap:
        log.warning(
            "fd_limit_low",
            soft_limit=soft,
            hard_limit=hard,
            max_connections=cap,
            hint="raise the hard limit (ulimit -Hn, LimitNOFILE=, --ulimit nofile=) "
            "or lower GATEWAY_MAX_CONNECTIONS (unset, it follows the limit)",
        )


class ListenError(OSError):
    """The listen address cannot be bound; the message says why and what to do."""


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        fix = "another process listens there: stop it, or pass --port (GATEWAY_PORT) for another"
    elif exc.errno == errno.EACCES:
        fix = "ports below 1024 need privileges: pass a higher --port (GATEWAY_PORT)"
    elif exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        fix = (
            "it is not an address of this machine: pass --host (GATEWAY_HOST) 127.0.0.1, "
            "0.0.0.0 or one of its addresses"
        )
    else:
        fix = "check --host and --port (GATEWAY_HOST, GATEWAY_PORT)"
    return f"cannot listen on {where}: {exc.strerror or exc}: {fix}"


def _check_bindable(host: str, port: int) -> None:
    """Bind the listen address once and let it go: a port in use is found before Redis."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            sock.bind(address)
    except OSError as exc:
        raise ListenError(_listen_problem(host, port, exc)) from None


def _say(line: str) -> None:
    """A plain line for the person who started the gateway (stdout holds the log)."""
    print(f"notify-gateway: {line}", file=sys.stderr, flush=True)


def _greet(settings: GatewaySettings, port: int) -> None:
    base = settings.local_address(port)
    _say(f"listening on ws://{base}/ws; demo page http://{base}/ (Ctrl-C stops)")


async def _greet_when_ready(gateway: Gateway, settings: GatewaySettings) -> None:
    """Greet once Redis has accepted the configuration: never just before an exit 2."""
    await gateway.access_checked.wait()
    _greet(settings, gateway.port)


def _announce_embedded(embedded: EmbeddedRedis, wanted_port: int) -> None:
    if embedded.port == wanted_port:
        _say(
            f"no Redis answered on localhost:{wanted_port}, so a private redis-server listens "
            "there now (no persistence; it stops with the gateway)"
        )
    else:
        _say(
            f"localhost:{wanted_port} is taken, so the private redis-server listens on port "
            f"{embedded.port}: in other terminals, export REDIS_URL={embedded.url}"
        )


async def _serve(settings: GatewaySettings, *, worker: bool = False) -> int:
    embedded: EmbeddedRedis | None = None
    if not worker:  # workers get the supervisor's port and Redis
        _check_bindable(settings.host, settings.port)
        redis, embedded = await redis_or_embedded(settings.redis)
        if embedded is not None:
            _announce_embedded(embedded, settings.redis.port)
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
    greeter: asyncio.Task[None] | None = None
    try:
        gateway = Gateway(settings, reuse_port=worker)
        gateway.setup_failed.add_done_callback(lambda _: stop.set())
        await gateway.start()
        if not worker:
            greeter = asyncio.create_task(_greet_when_ready(gateway, settings))
        await stop.wait()
        await gateway.stop()
    finally:
        if greeter is not None:
            greeter.cancel()
        if embedded is not None:
            await embedded.stop()
    if gateway.setup_failed.done():  # logged as redis_setup_failed
        raise ConfigError(str(gateway.setup_failed.result()))  # exit status 2, on stderr
    return 0


async def _supervise(settings: GatewaySettings, env: Mapping[str, str]) -> int:
    try:
        reserved = reserve_port(settings.host, settings.port)
    except OSError as exc:
        raise ListenError(_listen_problem(settings.host, settings.port, exc)) from None
    port: int = reserved.getsockname()[1]
    redis, embedded = await redis_or_embedded(settings.redis)
    worker_env = dict(env)
    if embedded is not None:  # one embedded Redis for all workers
        _announce_embedded(embedded, settings.redis.port)
        worker_env.pop("REDIS_URL", None)
        worker_env.update(REDIS_HOST=redis.host, REDIS_PORT=str(redis.port))
    _greet(settings, port)
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
    soft, hard = _raise_fd_limit()
    settings = load_settings(env, open_files=soft)
    if args.host is not None:
        settings = dataclasses.replace(settings, host=args.host)
    if args.port is not None:
        settings = dataclasses.replace(settings, port=args.port)
    if args.workers is not None:
        settings = dataclasses.replace(settings, workers=parse_workers("--workers", args.workers))
    configure_logging(settings.log_level, settings.log_format)
    _check_fd_limit(settings, soft, hard)
    if args.worker is None:  # said once, by the process the operator started
        for warning in config_warnings(env, settings):
            log.warning(
                "config_warning",
                variable=warning.variable,
                problem=warning.problem,
                hint=warning.message,
            )
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
    except ListenError as exc:
        print(f"notify-gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the server's own bind, if the port was taken meanwhile
        print(
            f"notify-gateway: {_listen_problem(settings.host, settings.port, exc)}", file=sys.stderr
        )
        return 1


SERVE = Subcommand("serve", "run the gateway (configured by environment)", _configure, _run)
