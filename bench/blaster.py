"""The trivial server that measures the load client's own ceiling and latency floor.

It answers the WebSocket handshake and each client's ``subscribe`` (no JSON
parsing, no authentication). Two modes:

- ``--messages M`` (the throughput ceiling): once ``--clients`` are subscribed it
  writes M pre-built message frames to each, up to 1000 frames per write. Whatever
  rate the load client reports against it is the most it can count on this machine.
- ``--redis-port P --channel C`` (the latency floor): it subscribes to C on Redis
  over one raw socket (hiredis parsing) and writes each published message, framed
  once, to every subscribed client with one ``transport.write`` each (the messages
  of one Redis read together): the least work any Python server can do per
  message. The latency the load client measures against it is the floor of the
  sustained scenarios on this machine.

``python -m bench.blaster --port P (--clients N --messages M | --redis-port R --channel C)``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import hiredis
import orjson
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
        # A dict keeps insertion order (the write order) and drops closed peers in O(1).
        self.subscribed: dict[asyncio.Transport, None] = {}
        self.go = asyncio.Event()
        self.relay: Relay | None = None

    def fanout_stats(self) -> bytes:
        """``GET /fanout``: the fan-out times since the last call, as JSON."""
        times = sorted(self.relay.fanout_ns) if self.relay is not None else []
        if self.relay is not None:
            self.relay.fanout_ns = []
        stats: dict[str, float] = {"count": len(times)}
        if times:
            stats |= {
                "p50_ms": times[len(times) // 2] / 1e6,
                "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))] / 1e6,
                "max_ms": times[-1] / 1e6,
                "mean_ms": sum(times) / len(times) / 1e6,
            }
        return orjson.dumps(stats)

    def add(self, transport: asyncio.Transport) -> None:
        self.subscribed[transport] = None
        if len(self.subscribed) == self.clients:
            self.go.set()

    def remove(self, transport: asyncio.Transport) -> None:
        self.subscribed.pop(transport, None)

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


class Relay(asyncio.Protocol):
    """Redis pub/sub in, one frame per message out to every subscribed client."""

    def __init__(self, blaster: Blaster, channel: bytes) -> None:
        self.blaster = blaster
        self.channel = channel
        self.reader = hiredis.Reader()
        self.confirmed = asyncio.get_running_loop().create_future()
        self.head = b'{"type":"message","channel":"' + channel + b'","data":'
        #: per message: time to write it to every client (ns), to print at exit
        self.fanout_ns: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(hiredis.pack_command(("SUBSCRIBE", self.channel)))  # type: ignore[attr-defined, arg-type]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        frames = []
        while (reply := reader.gets()) is not False:
            if reply[0] == b"message":
                frames.append(server_text_frame(self.head + reply[2] + b"}"))
            elif reply[0] == b"subscribe" and not self.confirmed.done():
                self.confirmed.set_result(None)
        if frames:
            # The messages of one Redis read go out in one write per client (as the
            # gateway does): one write per message falls behind at 200 msg/s here.
            started = time.monotonic_ns()
            chunk = frames[0] if len(frames) == 1 else b"".join(frames)
            for transport in self.blaster.subscribed:
                transport.write(chunk)
            self.fanout_ns.append(time.monotonic_ns() - started)


class Peer(asyncio.Protocol):
    def __init__(self, blaster: Blaster) -> None:
        self.blaster = blaster
        self.buf = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.blaster.remove(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        if not self.upgraded:
            if b"\r\n\r\n" not in self.buf:
                return
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            if head.startswith((b"GET /readyz", b"GET /fanout")):
                body = self.blaster.fanout_stats() if head.startswith(b"GET /fanout") else b""
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                self.transport.close()
                return
            self.upgraded = True
            self.transport.write(_RESPONSE)
        # The subscribe frame: masked, short; its length is in the second byte.
        if len(self.buf) >= 6 and len(self.buf) >= 6 + (self.buf[1] & 0x7F):
            self.buf = b""
            self.transport.write(_SUBSCRIBED)
            self.blaster.add(self.transport)


async def main(args: argparse.Namespace) -> None:
    blaster = Blaster(args.clients, args.messages)
    loop = asyncio.get_running_loop()
    if args.redis_port is not None:
        channel = os.fsencode(args.channel)
        _, blaster.relay = await loop.create_connection(
            lambda: Relay(blaster, channel), "127.0.0.1", args.redis_port
        )
        await blaster.relay.confirmed  # ready (the orchestrator polls /readyz) once subscribed
    server = await loop.create_server(lambda: Peer(blaster), "127.0.0.1", args.port, backlog=1024)
    async with server:
        if args.messages:
            await blaster.blast()
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=0)
    parser.add_argument("--messages", type=int, default=0)
    parser.add_argument("--redis-port", type=int)
    parser.add_argument("--channel", default="public:bench")
    args = parser.parse_args()
    uvloop.run(main(args))
