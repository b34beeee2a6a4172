"""The server's heartbeat: one ping per client per interval; a silent client is closed 1011.

The client here is a raw socket, so the test decides whether pings are answered.
"""

from __future__ import annotations

import asyncio
import struct

from redis.asyncio import Redis

from gateway.server import Gateway
from tests.conftest import MakeGateway, MakeSession
from tests.support.ws import raw_upgraded, wait_until


class RawClient:
    """Just enough RFC 6455 to see the server's frames one by one and answer pings."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, gateway: Gateway, token: str) -> RawClient:
        reader, writer = await raw_upgraded(gateway.port, f"Authorization: Bearer {token}\r\n")
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame (unmasked, unfragmented): opcode and payload."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        return first & 0x0F, await self.reader.readexactly(length)

    def pong(self, payload: bytes) -> None:
        self.writer.write(bytes((0x8A, 0x80 | len(payload), 0, 0, 0, 0)) + payload)

    def text(self, payload: bytes) -> None:
        """A short text frame, masked with a zero key (payload unchanged)."""
        assert len(payload) < 126
        self.writer.write(bytes((0x81, 0x80 | len(payload), 0, 0, 0, 0)) + payload)


async def test_answered_pings_keep_the_connection_and_a_silent_client_is_closed_1011(
    gateway_factory: MakeGateway, make_session: MakeSession
) -> None:
    gateway = await gateway_factory(GATEWAY_HEARTBEAT_SECONDS="0.1")
    client = await RawClient.open(gateway, await make_session("42"))
    try:
        async with asyncio.timeout(5):
            opcode, _welcome = await client.frame()
            assert opcode == 0x1
            for _ in range(3):  # three intervals, each ping answered: still open
                opcode, payload = await client.frame()
                assert opcode == 0x9, (opcode, payload)
                client.pong(payload)
            opcode, _payload = await client.frame()
            assert opcode == 0x9  # this one stays unanswered
            opcode, payload = await client.frame()
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1011
        assert payload[2:] == b"keepalive ping timeout"
    finally:
        client.writer.close()


async def test_a_silent_client_with_unsent_bytes_is_closed_too(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    """Its ping waits behind the unsent bytes; no answer by the next sweep closes it."""
    # The flood lands before the first sweep (2 s after start), so no ping ever goes out on
    # an empty buffer: every sweep finds bytes waiting.
    gateway = await gateway_factory(
        GATEWAY_HEARTBEAT_SECONDS="2", GATEWAY_MAX_BUFFER_BYTES=str(256 * 1024 * 1024)
    )
    client = await RawClient.open(gateway, await make_session("43"))
    try:
        await client.frame()  # welcome
        client.text(b'{"type":"subscribe","channel":"public:stall"}')
        opcode, reply = await client.frame()
        assert (opcode, b'"subscribed"' in reply) == (0x1, True)
        client.writer.transport.pause_reading()  # gone silent: reads nothing, answers nothing
        payload = b'"' + b"x" * 60_000 + b'"'
        for _ in range(300):  # ~18 MB: more than the sockets hold, so bytes wait unsent
            await redis.publish("public:stall", payload)

        async def closed() -> bool:
            return gateway.stats.connections == 0

        await wait_until(closed, timeout_s=20)  # two sweeps, then the 5 s close timeout
    finally:
        client.writer.close()


async def test_a_slow_consumer_that_never_reads_is_cut_off_after_the_close_timeout(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    """Its close frame can never be delivered: the transport is aborted, memory freed."""
    gateway = await gateway_factory(GATEWAY_MAX_BUFFER_BYTES="65536")
    client = await RawClient.open(gateway, await make_session("44"))
    try:
        await client.frame()  # welcome
        client.text(b'{"type":"subscribe","channel":"public:never"}')
        await client.frame()  # subscribed
        client.writer.transport.pause_reading()
        payload = b'"' + b"x" * 60_000 + b'"'
        for _ in range(300):  # ~18 MB: past the kernel's buffers and the 64 KiB limit
            await redis.publish("public:never", payload)

        async def closed() -> bool:
            return gateway.stats.connections == 0

        await wait_until(closed, timeout_s=15)  # 4008 at once, aborted 5 s later
    finally:
        client.writer.close()
