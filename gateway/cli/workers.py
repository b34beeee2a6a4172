"""``serve --workers N``: N gateway processes on one port, supervised.

One Python process uses one core. The supervisor starts N workers, each a complete
gateway (``python -m gateway serve --worker I``) with its own Redis subscriber,
listening on the same port with SO_REUSEPORT: the kernel spreads new connections
over them. The supervisor holds the port bound (not listening) so that port 0 is
resolved once and nobody else takes it between restarts.

It restarts a worker that dies, with exponential backoff, and gives up when a
worker keeps dying right after it starts (a broken environment: restarting faster
will not help). SIGTERM/SIGINT are forwarded so every worker drains (clients
closed with 1001); workers still running after ``GATEWAY_SHUTDOWN_TIMEOUT`` plus a
margin are killed. A worker asks the kernel for SIGTERM if the supervisor dies, so
none is orphaned holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Mapping

import structlog

from gateway.config import GatewaySettings
from notify_wire.backoff import WORKER_RESTART

__all__ = ["Supervisor", "WorkerCrashLoop", "exit_with_parent", "reserve_port"]

log = structlog.get_logger("gateway.workers")

#: consecutive deaths soon after starting (WORKER_RESTART.stable_after_s) before giving up
MAX_FAILED_STARTS = 5
#: added to GATEWAY_SHUTDOWN_TIMEOUT for the workers to release Redis and exit
STOP_MARGIN_S = 5.0

_PR_SET_PDEATHSIG = 1


class WorkerCrashLoop(RuntimeError):
    """A worker died right after starting too many times in a row."""


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket: fixes port 0 and keeps the port ours.

    Only listening sockets receive connections, so this one never takes a client.
    Raises OSError when the address cannot be bound.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def exit_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _describe(returncode: int) -> dict[str, object]:
    if returncode < 0:
        return {"signal": signal.Signals(-returncode).name}
    return {"exit_code": returncode}


class Supervisor:
    """Runs ``settings.workers`` workers on ``port`` until a signal or a crash loop."""

    def __init__(self, settings: GatewaySettings, env: Mapping[str, str], port: int) -> None:
        self._settings = settings
        self._env = dict(env)
        self._port = port
        self._workers: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._killed = False

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m", "gateway", "serve",
            "--worker", str(index),
            "--host", self._settings.host,
            "--port", str(self._port),
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def _keep(self, index: int) -> None:
        """Run worker ``index``, restarting it until the supervisor stops."""
        loop = asyncio.get_running_loop()
        failures = 0
        previous: int | None = None
        while not self._stopping.is_set():
            process = await self._spawn(index)
            self._workers[index] = process
            if previous is None:
                log.info("worker_started", worker=index, pid=process.pid)
            else:
                log.warning("worker_restarted", worker=index, pid=process.pid, previous=previous)
            started = loop.time()
            returncode = await process.wait()
            if self._stopping.is_set():
                return
            lived_s = loop.time() - started
            log.warning(
                "worker_exited",
                worker=index,
                pid=process.pid,
                lived_s=round(lived_s, 3),
                **_describe(returncode),
            )
            failures = 0 if lived_s >= WORKER_RESTART.stable_after_s else failures + 1
            if failures >= MAX_FAILED_STARTS:
                raise WorkerCrashLoop(
                    f"worker {index} died {failures} times within "
                    f"{WORKER_RESTART.stable_after_s:g} s of starting (last: "
                    f"{_describe(returncode)}); giving up: see its log above"
                )
            previous = process.pid
            await asyncio.sleep(WORKER_RESTART.delay(failures))

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping.is_set():
            log.warning("second_signal_exit", signal=name)
            self._killed = True
            self._signal_all(signal.SIGKILL)
            return
        log.info("shutdown_requested", signal=name)
        self._stopping.set()

    def _signal_all(self, signum: int) -> None:
        for process in self._workers.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    async def _stop_workers(self) -> None:
        """Drain every worker; kill those still running after the deadline."""
        self._stopping.set()
        self._signal_all(signal.SIGTERM)
        deadline_s = self._settings.shutdown_timeout_s + STOP_MARGIN_S
        waits = [process.wait() for process in self._workers.values()]
        try:
            async with asyncio.timeout(deadline_s):
                await asyncio.gather(*waits)
        except TimeoutError:
            for index, process in self._workers.items():
                if process.returncode is None:
                    log.warning("worker_killed", worker=index, pid=process.pid)
            self._killed = True
            self._signal_all(signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in self._workers.values()))

    async def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (0, or 1 if a worker had to be killed).

        Raises :class:`WorkerCrashLoop` after stopping the other workers.
        """
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        log.info(
            "supervisor_started",
            workers=self._settings.workers,
            host=self._settings.host,
            port=self._port,
            pid=os.getpid(),
        )
        keepers = [
            asyncio.create_task(self._keep(index), name=f"worker-{index}")
            for index in range(self._settings.workers)
        ]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([stopping, *keepers], return_when=asyncio.FIRST_COMPLETED)
            await self._stop_workers()
            for task in done:
                if task is not stopping:
                    task.result()  # raises WorkerCrashLoop
        finally:
            for task in (stopping, *keepers):
                task.cancel()
            await asyncio.gather(stopping, *keepers, return_exceptions=True)
        log.info("supervisor_stopped", killed=self._killed)
        return 1 if self._killed else 0
