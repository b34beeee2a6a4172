"""The frames the gateway writes itself are read back correctly by websockets' own client code.

The fast half of the compliance proof (the Autobahn run is ``python -m bench.autobahn``):
random payloads framed by ``text_frame`` / ``binary_frame``, written back to back as the
fan-out writes them, parse with websockets' sans-I/O client protocol however the bytes
are split; and a real websockets client gets exact echoes from the echo endpoint, which
writes through the gateway's raw write path, at every header-length boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from bench.autobahn.echo import Echo, port_of, start
from gateway.core.frames import binary_frame, text_frame
from gateway.edge.options import WebSocketOptions
from gateway.edge.server import WebSocketServer
from tests.support.ws import raw_upgraded, wait_until

# Payload lengths where the header changes: 7-bit, 16-bit and 64-bit lengths.
BOUNDARIES = [0, 1, 125, 126, 127, 65535, 65536, 65537]
lengths = st.sampled_from(BOUNDARIES) | st.integers(0, 300)


def _stretch(seed: bytes, length: int) -> bytes:
    return (seed * (length // len(seed) + 1))[:length]


binary_payloads = st.builds(_stretch, st.binary(min_size=1, max_size=64), lengths)
# Any Unicode text (1- to 4-byte UTF-8), repeated up to about a length boundary.
texts = st.builds(
    lambda text, length: text * (length // len(text.encode()) + 1),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=16),
    lengths,
)
messages = st.one_of(
    st.tuples(st.just(Opcode.TEXT), texts), st.tuples(st.just(Opcode.BINARY), binary_payloads)
)


def _frame(opcode: Opcode, payload: str | bytes) -> bytes:
    if isinstance(payload, str):
        return text_frame(payload.encode())
    return binary_frame(payload)


def _client_reads(data: bytes, cuts: Sequence[int] = ()) -> tuple[ClientProtocol, list[Frame]]:
    """What a websockets client makes of ``data`` arriving in pieces split at ``cuts``."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN, max_size=None)
    start_at = 0
    for cut in [*sorted(cuts), len(data)]:
        client.receive_data(data[start_at:cut])
        start_at = cut
    return client, [event for event in client.events_received() if isinstance(event, Frame)]


@given(
    st.lists(messages, min_size=1, max_size=6),
    st.lists(st.integers(0, 200_000), max_size=8),
)
def test_frames_written_back_to_back_parse_as_sent(
    sent: list[tuple[Opcode, str | bytes]], cuts: list[int]
) -> None:
    data = b"".join(_frame(opcode, payload) for opcode, payload in sent)
    client, frames = _client_reads(data, [cut for cut in cuts if cut <= len(data)])
    assert client.state is State.OPEN, client.close_exc  # a bad frame would fail the connection
    assert [(f.opcode, f.fin, f.rsv1, f.rsv2, f.rsv3) for f in frames] == [
        (opcode, True, False, False, False) for opcode, _ in sent
    ]
    for frame, (_, payload) in zip(frames, sent, strict=True):
        expected = payload.encode() if isinstance(payload, str) else payload
        assert frame.data == expected


def test_server_frames_are_never_masked() -> None:
    for frame in (text_frame(b"x" * 200), binary_frame(bytes(70_000))):
        assert frame[1] & 0x80 == 0  # the MASK bit: a client must fail a masked frame


#: read limits wide enough for the 1,000,000-byte echo (the gateway refuses those: 1009)
WIDE = WebSocketOptions(max_size=32 << 20, max_buffer=32 << 20)


@pytest.fixture
async def echo_client() -> AsyncIterator[ClientConnection]:
    server = await start(options=WIDE)
    try:
        url = f"ws://127.0.0.1:{port_of(server)}"
        async with connect(url, max_size=None, compression=None) as ws:
            yield ws
    finally:
        await server.close(1001, "", timeout_s=5)


def _text_of_bytes(length: int) -> str:
    """Text of exactly ``length`` UTF-8 bytes mixing 1-, 2-, 3- and 4-byte characters."""
    unit = "a\u00e9\u20ac\U0001f600"  # 1 + 2 + 3 + 4 bytes
    text = unit * (length // 10)
    return text + "x" * (length - len(text.encode()))


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 1_000_000])
async def test_echo_endpoint_returns_text_and_binary_exactly(
    echo_client: ClientConnection, length: int
) -> None:
    text = _text_of_bytes(length)
    assert len(text.encode()) == length
    await echo_client.send(text)
    assert await echo_client.recv() == text  # the client decodes and validates UTF-8
    payload = _stretch(b"\x00\xff\x80binary", length)
    await echo_client.send(payload)
    assert await echo_client.recv() == payload


async def test_echo_endpoint_answers_a_fragmented_message_with_one_message(
    echo_client: ClientConnection,
) -> None:
    parts = ["\u20ac" * 50, "\U0001f600" * 40, "end"]
    await echo_client.send(parts)  # an iterable: sent as fragments
    pong = await echo_client.ping()  # control frames stay with the library, interleaved
    assert await echo_client.recv() == "".join(parts)
    async with asyncio.timeout(5):
        await pong


async def _exchange_raw(frames: bytes) -> bytes:
    """Upgrade a raw socket to the echo endpoint, send ``frames`` in one write, and
    return every byte the server sends until it drops the TCP connection."""
    server = await start()
    try:
        reader, writer = await raw_upgraded(port_of(server))
        async with asyncio.timeout(5):
            writer.write(frames)  # one write, so the server reads them at once
            received = await reader.read()
        writer.close()
    finally:
        await server.close(1001, "", timeout_s=5)
    return received


async def test_no_data_frame_follows_the_close_frame() -> None:
    """A message and a close arrive together: the close is answered and the message's
    echo is dropped, since no data frame may follow a close frame (RFC 6455 5.5.1)."""
    close = Frame(Opcode.CLOSE, Close(1000, "").serialize())
    received = await _exchange_raw(
        Frame(Opcode.TEXT, b"echo me").serialize(mask=True) + close.serialize(mask=True)
    )
    _, frames = _client_reads(received)
    assert [frame.opcode for frame in frames] == [Opcode.CLOSE]
    assert Close.parse(frames[0].data).code == 1000


async def test_invalid_utf8_text_fails_the_connection_with_1007() -> None:
    # A text message split inside a 3-byte character is valid; one with a bare 0xff is not.
    good = "\u20ac".encode()
    received = await _exchange_raw(
        Frame(Opcode.TEXT, good[:1], fin=False).serialize(mask=True)
        + Frame(Opcode.CONT, good[1:]).serialize(mask=True)
        + Frame(Opcode.TEXT, b"ok \xff").serialize(mask=True)
    )
    _, frames = _client_reads(received)
    assert [frame.opcode for frame in frames] == [Opcode.TEXT, Opcode.CLOSE]
    assert frames[0].data == good
    assert Close.parse(frames[1].data).code == 1007


async def test_a_peer_that_keeps_sending_after_the_close_is_dropped_at_the_close_timeout() -> None:
    options = WebSocketOptions(max_size=1 << 16, max_buffer=1 << 20, close_timeout_s=0.5)
    server = WebSocketServer(Echo, options)
    await server.listen("127.0.0.1", 0)
    try:
        _, writer = await raw_upgraded(server.port)
        assert server.connections
        writer.write(Frame(Opcode.TEXT, b"\xff").serialize(mask=True))  # 1007 from the server

        async def chatter() -> None:
            # Pings, never the closing TCP handshake the server waits for.
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(Frame(Opcode.PING, b"x").serialize(mask=True))
                    await asyncio.sleep(0.05)

        async def dropped() -> bool:
            return not server.connections

        chatting = asyncio.create_task(chatter())
        try:
            await wait_until(dropped, timeout_s=2)
        finally:
            chatting.cancel()
        writer.close()
    finally:
        await server.close(1001, "", timeout_s=5)
