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
from typing import Any, BinaryIO

import orjson

from tests.support.children import end_process

__all__ = ["LOG_SINK", "ROOT", "GatewayProcess"]

ROOT = Path(__file__).resolve().parents[2]

#: Where every child gateway's stdout and stderr are appended when it stops (set by conftest).
LOG_SINK: BinaryIO | None = None


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
        self._stderr: str | None = None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_event(self, event: str, timeout_s: float = 15.0) -> dict[str, Any]:
        """Block until the process logs ``event``; return that log record."""
        return self.wait_events(event, timeout_s=timeout_s)[event]

    def wait_events(self, *events: str, timeout_s: float = 15.0) -> dict[str, dict[str, Any]]:
        """Block until the process has logged every one of ``events``, in any order."""
        deadline = time.monotonic() + timeout_s
        found: dict[str, dict[str, Any]] = {}
        while len(found) < len(events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {events!r} in the gateway log: {self.output()}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"gateway exited before {events!r}: {self.output()}")
            record = orjson.loads(line)
            if record.get("event") in events:
                found.setdefault(record["event"], dict(record))
        return found

    def wait_started(self) -> int:
        started = self.wait_events("gateway_started", "redis_connected")
        self.port = int(started["gateway_started"]["port"])
        return self.port

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def output(self) -> str:
        return b"".join(self.lines).decode(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]

    def stderr(self) -> str:
        """Everything the process wrote on stderr (read once it has exited)."""
        return self._stderr_text()

    def _stderr_text(self) -> str:
        if self._stderr is None:
            stream = self.process.stderr
            self._stderr = (
                "" if stream is None or stream.closed else stream.read().decode(errors="replace")
            )
        return self._stderr

    def wait(self, timeout_s: float = 15.0) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        end_process(self.process, timeout_s=15)
        self._reader.join(5)
        if LOG_SINK is not None:
            LOG_SINK.write(b"".join(self.lines))
            LOG_SINK.write(self._stderr_text().encode())
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
