"""Accepting connections on a port and shutting them all down: the server of the edge."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate

from gateway.edge.options import WebSocketOptions
from gateway.edge.websocket import WebSocket

__all__ = ["WebSocketServer"]


class WebSocketServer:
    """Accepts connections made by ``factory`` and closes them all on :meth:`close`."""

    def __init__(self, factory: Callable[[WebSocketServer], WebSocket], options: WebSocketOptions):
        self.options = options
        # websockets' defaults (4 KiB windows, memLevel 5), shared by every connection
        self.extensions: Sequence[ServerExtensionFactory] | None = (
            enable_server_permessage_deflate(None) if options.compression else None
        )
        self._factory = factory
        self.connections: set[WebSocket] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._drained: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._factory(self), host, port, reuse_port=reuse_port, backlog=1024
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None, "listen() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run a connection's background step; kept referenced until done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add(self, connection: object) -> None:
        self.connections.add(cast(WebSocket, connection))

    def forget(self, connection: object) -> None:
        self.connections.discard(cast(WebSocket, connection))
        if not self.connections and self._drained is not None:
            self._drained.set()

    async def close(self, code: int, reason: str, timeout_s: float) -> bool:
        """Stop accepting; close every connection with ``code``; False if some outlived
        ``timeout_s`` (they are dropped then)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        self._drained = asyncio.Event()
        for ws in list(self.connections):
            ws.shutdown(code, reason)
        if not self.connections:
            self._drained.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
            return True
        except TimeoutError:
            for ws in list(self.connections):
                ws.abort()
            return False
        finally:
            for task in list(self._tasks):
                task.cancel()
