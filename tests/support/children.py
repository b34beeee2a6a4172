"""Ending child processes the tests started: by their PID, gently first."""

from __future__ import annotations

import subprocess

__all__ = ["end_process"]


def end_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; a no-op when it already exited."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
