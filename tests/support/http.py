"""A raw HTTP/1.1 client for tests: exact bytes out, responses parsed by httptools.

For what urllib cannot do: pipelined requests, malformed ones, repeated headers, bodies
sent after ``100 Continue``, and reading whether the server kept the connection open.
"""

from __future__ import annotations

import asyncio
import dataclasses

import httptools
from websockets.datastructures import Headers

__all__ = ["HttpResponse", "RawHttp"]

TIMEOUT_S = 5.0


@dataclasses.dataclass
class HttpResponse:
    status: int
    headers: Headers
    body: bytes


class _Collector:
    """httptools callbacks: collects the responses of one connection."""

    def __init__(self) -> None:
        self.done: list[HttpResponse] = []
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode(), value.decode()))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.done.append(HttpResponse(status, Headers(self._headers), b"".join(self._body)))
        self._headers, self._body = [], []


class RawHttp:
    """One TCP connection to 127.0.0.1:``port``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._collector = _Collector()
        self._ready: list[HttpResponse] = []

    @classmethod
    async def open(cls, port: int) -> RawHttp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def responses(self, count: int) -> list[HttpResponse]:
        """The next ``count`` responses (responses to HEAD cannot be read this way)."""
        async with asyncio.timeout(TIMEOUT_S):
            while len(self._ready) < count:
                data = await self.reader.read(65536)
                assert data, f"connection closed after {len(self._ready)} responses"
                self._collector.parser.feed_data(data)
                self._ready += self._collector.done
                self._collector.done = []
        got, self._ready = self._ready[:count], self._ready[count:]
        return got

    async def closed(self) -> bool:
        """True once the server closes the connection (EOF) with nothing more sent."""
        async with asyncio.timeout(TIMEOUT_S):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        await asyncio.gather(self.writer.wait_closed(), return_exceptions=True)
