"""Child processes of a benchmark run: started pinned to a core, stopped by PID.

Every process the benchmark starts is registered in :data:`STARTED` and
:func:`stop_all` ends exactly those (SIGTERM, then SIGKILL), also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from tests.support.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
_CORES = sorted(os.sched_getaffinity(0))
#: the server under test gets one core; the load client, publisher and Redis the other
SERVER_CORE = _CORES[0]
CLIENT_CORE = _CORES[-1]
STARTED: list[subprocess.Popen[bytes]] = []
LOG_DIR = Path(tempfile.mkdtemp(prefix="ng-bench-"))


def spawn(args: Sequence[str], core: int, **kwargs: Any) -> subprocess.Popen[bytes]:
    def pin() -> None:
        os.sched_setaffinity(0, {core})

    env = {**os.environ, "PYTHONPATH": str(ROOT), **kwargs.pop("env", {})}
    process = subprocess.Popen(list(args), cwd=ROOT, env=env, preexec_fn=pin, **kwargs)
    STARTED.append(process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    if process in STARTED:
        STARTED.remove(process)


def stop_all() -> None:
    for process in list(STARTED):
        stop(process)


def start_redis() -> RedisServer:
    server = RedisServer()
    server.start()
    assert server.process is not None
    os.sched_setaffinity(server.process.pid, {CLIENT_CORE})
    return server


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_ready(
    process: subprocess.Popen[bytes], port: int, what: str, timeout_s: float = 20.0
) -> None:
    """Until ``GET /readyz`` on ``port`` answers 200; raises if ``process`` exits or time runs
    out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: bench\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready in {timeout_s}s")


class Server:
    """The process under test: ``gateway``, ``baseline`` or ``blaster`` (the ceiling)."""

    HEARTBEAT_S = 300  # longer than any run: the load client does not answer pings

    def __init__(
        self,
        kind: str,
        redis_port: int,
        extra: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """``settings``: more ``GATEWAY_*`` variables for a gateway."""
        self.kind = kind
        self.port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        py = sys.executable
        env: dict[str, str] = {}
        if kind == "gateway":
            args = [py, "-m", "gateway", "serve"]
            env = {
                "REDIS_URL": redis_url,
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(self.port),
                "GATEWAY_LOG_LEVEL": "warning",
                "GATEWAY_HEARTBEAT_SECONDS": str(self.HEARTBEAT_S),
                **(settings or {}),
            }
        elif kind == "baseline":
            args = [py, "-m", "bench.baseline", "--port", str(self.port), "--redis-url", redis_url]
            args += ["--heartbeat", str(self.HEARTBEAT_S)]
        else:
            args = [py, "-m", "bench.blaster", "--port", str(self.port), *extra]
        self.log = LOG_DIR / f"{kind}-{self.port}.log"
        with self.log.open("wb") as out:
            self.process = spawn(args, SERVER_CORE, env=env, stdout=out, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 20.0) -> None:
        wait_ready(self.process, self.port, f"{self.kind} ({self.log})", timeout_s)

    def get(self, path: str) -> bytes:
        """The body of ``GET path`` (one short response, read until the server closes)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{self.kind} {path}: {head[:80]!r}")
        return body

    def fanout_totals(self) -> tuple[float, int] | None:
        """The gateway's fan-out histogram so far: (seconds, batches); None elsewhere.

        A batch is one Redis read's messages, from the first one parsed to the last
        frame written (``notify_gateway_fanout_seconds``).
        """
        if self.kind != "gateway":
            return None
        total, count = 0.0, 0
        try:
            text = self.get("/metrics").decode()
        except (OSError, RuntimeError):
            return None  # a gateway without the metric: the row just lacks the figure
        for line in text.splitlines():
            if line.startswith("notify_gateway_fanout_seconds_sum"):
                total = float(line.split()[-1])
            elif line.startswith("notify_gateway_fanout_seconds_count"):
                count = int(float(line.split()[-1]))
        return total, count

    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)

    def cpu_s(self) -> float:
        """User plus system CPU seconds the process has used so far."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """User and system (kernel) CPU seconds the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def stop(self) -> None:
        stop(self.process)


class Child:
    """A load client or publisher: JSON spec in, JSON lines out."""

    def __init__(self, module: str, spec: dict[str, Any]) -> None:
        self.module = module
        self.process = spawn(
            [sys.executable, "-m", module, orjson.dumps(spec).decode()],
            CLIENT_CORE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def event(self, timeout_s: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"{self.module}: no output in {timeout_s:g}s") from None
        if line is None:
            raise RuntimeError(f"{self.module} exited with {self.process.wait()}")
        result: dict[str, Any] = orjson.loads(line)
        return result

    def send(self, line: str) -> None:
        """One line to the child's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        if self.process.stdin is not None and self.process.poll() is None:
            try:
                self.process.stdin.write(b"exit\n")
                self.process.stdin.flush()
            except BrokenPipeError:
                pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        stop(self.process)


def cleanup_logs() -> None:
    shutil.rmtree(LOG_DIR, ignore_errors=True)
