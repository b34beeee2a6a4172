"""The server's heartbeat: one ping per client per interval; a silent client is closed 1011.

The client here is a raw socket, so the test decides whether pings are answered.
"""

from __future__ import annotations

import asyncio
import struct

from gateway.server import Gateway
from tests.conftest import MakeGateway, MakeSession


class RawClient:
    """Just enough RFC 6455 to see the server's frames one by one and answer pings."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, gateway: Gateway, token: str) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
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
