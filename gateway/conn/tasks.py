"""The background work of the connection layer: steps and releases that stop() lets finish."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine

__all__ = ["Tasks"]


class Tasks:
    """Logins, subscribes and slot releases under way, kept referenced until done."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, work: Coroutine[None, None, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self, timeout_s: float) -> None:
        """Let the work under way finish (Redis closes next); cancel what is still running
        after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # Work that ends may start more (a slot release): wait for that too.
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        while self._tasks:
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
