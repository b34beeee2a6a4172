"""Real redis-server processes for tests: free loopback port, no persistence, owned by PID."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.children import end_process

__all__ = ["RedisServer", "cluster_port", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, so at most 55535."""
    for _ in range(1000):
        port = random.randint(20000, 30000)  # below the ephemeral range, bus port too
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """One redis-server child. ``extra`` arguments configure it (password, ACL, TLS...).

    ``config`` is a configuration file read first (a sentinel needs one it can rewrite).
    """

    def __init__(
        self, extra: Sequence[str] = (), *, port: int | None = None, config: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.extra = list(extra)
        self.config = config
        self.dir = Path(tempfile.mkdtemp(prefix="ng-test-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make test installs it)"
        args = [
            binary,
            *([str(self.config)] if self.config else []),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        with (self.dir / "stderr.log").open("ab") as stderr:
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
        self.wait_answering()
        return self

    def client_socket(self) -> socket.socket:
        """A socket connected to the server, ready for RESP (a TLS server wraps it)."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=0.5)

    def wait_answering(self, timeout_s: float = 10.0) -> None:
        """Block until the server answers PING (or NOAUTH) on its port."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                err = (self.dir / "stderr.log").read_text(errors="replace")
                log = (
                    (self.dir / "redis.log").read_text()
                    if (self.dir / "redis.log").exists()
                    else ""
                )
                raise RuntimeError(f"redis-server exited: {err}\n{log[-2000:]}")
            try:
                with self.client_socket() as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64)[:1] in (b"+", b"-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL and reap: the abrupt death of Redis."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped server cannot act on SIGTERM
            end_process(self.process)

    def restart(self) -> None:
        """Stop (or after kill) and start again on the same port."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
