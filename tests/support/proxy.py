"""A TCP proxy between the gateway and Redis that injects faults: latency, a slow link,
black hole, reset."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["FaultProxy"]


class FaultProxy:
    """Forwards 127.0.0.1:<port> to a target; faults apply to every proxied connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay_s = 0.0
        #: with delay_s: forward each read in pieces this big, delay_s apart (a slow link)
        self.trickle_bytes: int | None = None
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                step = self.trickle_bytes or len(data)
                for start in range(0, len(data), step):
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    if self.blackhole:
                        continue  # swallowed: both ends stay open and hear nothing
                    sink.write(data[start : start + step])
                    await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()

    def reset(self) -> None:
        """Abort every proxied connection (RST), as a network failure would."""
        for writer in list(self._writers):
            if not writer.transport.is_closing():  # one already gone cannot be aborted again
                writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
