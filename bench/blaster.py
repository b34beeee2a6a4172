"""The trivial server that measures the load client's own ceiling.

It answers the WebSocket handshake and each client's ``subscribe`` (no Redis, no
JSON), and once ``--clients`` are subscribed writes ``--messages`` pre-built
message frames to each, up to 1000 frames per write. Whatever rate the load client
reports against it is the most the load client can count on this machine.
``python -m bench.blaster --port P --clients N --messages M``
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop

from bench.wire import WS_ACCEPT, payload, server_text_frame

_PER_WRITE = 1000
_RESPONSE = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
).encode()
_SUBSCRIBED = server_text_frame(b'{"type":"subscribed","channel":"bench","ref":1}')


class Blaster:
    def __init__(self, clients: int, messages: int) -> None:
        self.clients = clients
        self.messages = messages
        self.subscribed: list[asyncio.Transport] = []
        self.go = asyncio.Event()

    def add(self, transport: asyncio.Transport) -> None:
        self.subscribed.append(transport)
        if len(self.subscribed) == self.clients:
            self.go.set()

    async def blast(self) -> None:
        await self.go.wait()
        frame = server_text_frame(
            b'{"type":"message","channel":"bench","data":' + payload(0) + b"}"
        )
        rounds, rest = divmod(self.messages, _PER_WRITE)
        chunks = [frame * _PER_WRITE] * rounds + ([frame * rest] if rest else [])
        for chunk in chunks:
            for transport in self.subscribed:
                transport.write(chunk)
            # Bounded memory: let the sockets drain (no event exists for "all buffers low").
            while sum(t.get_write_buffer_size() for t in self.subscribed) > 32 << 20:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)


class Peer(asyncio.Protocol):
    def __init__(self, blaster: Blaster) -> None:
        self.blaster = blaster
        self.buf = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        if not self.upgraded:
            if b"\r\n\r\n" not in self.buf:
                return
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            if head.startswith(b"GET /readyz"):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            self.upgraded = True
            self.transport.write(_RESPONSE)
        # The subscribe frame: masked, short; its length is in the second byte.
        if len(self.buf) >= 6 and len(self.buf) >= 6 + (self.buf[1] & 0x7F):
            self.buf = b""
            self.transport.write(_SUBSCRIBED)
            self.blaster.add(self.transport)


async def main(port: int, clients: int, messages: int) -> None:
    blaster = Blaster(clients, messages)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Peer(blaster), "127.0.0.1", port, backlog=1024)
    async with server:
        await blaster.blast()
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(main(args.port, args.clients, args.messages))
