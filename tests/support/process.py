"""The gateway as a real child process (`python -m gateway serve`), for signals and logs."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = ["ROOT", "GatewayProcess"]

ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """Runs the CLI with a controlled environment and collects its JSON log lines."""

    def __init__(self, env: Mapping[str, str], args: tuple[str, ...] = ("serve",)) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GATEWAY_"))}
        base["PYTHONPATH"] = str(ROOT)
        base.update({"GATEWAY_PORT": "0", "GATEWAY_HOST": "127.0.0.1"})
        base.update(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            cwd=ROOT,
            env=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[bytes] = []
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_event(self, event: str, timeout_s: float = 15.0) -> dict[str, Any]:
        """Block until the process logs ``event``; return that log record."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event!r} in the gateway log: {self.output()}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"gateway exited before {event!r}: {self.output()}")
            record = orjson.loads(line)
            if record.get("event") == event:
                return dict(record)

    def wait_started(self) -> int:
        self.port = int(self.wait_event("gateway_started")["port"])
        # The subscriber may connect before the server listens: that line is already consumed.
        if not any(record.get("event") == "redis_connected" for record in self.records()):
            self.wait_event("redis_connected")
        return self.port

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def output(self) -> str:
        return b"".join(self.lines).decode(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")

    def wait(self, timeout_s: float = 15.0) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
