"""What the fuzz targets drive the gateway's parsers with: bytes in, observations out.

The parsers under test are the gateway's own objects, configured as the gateway configures
them. Only the edges are doubles: :class:`RecordingTransport` collects the bytes a protocol
writes (the peer is the fuzzer), :class:`RecordingListener` records what the Redis reply
reader hands to the registry. Everything runs on one event loop per process
(:func:`run`), because the protocols read the running loop when they are built.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from websockets.frames import Opcode
from websockets.protocol import State
from websockets.utils import accept_key

from gateway.broker.subscriber import PubSubConnection
from gateway.edge.options import WebSocketOptions
from gateway.edge.server import WebSocketServer
from gateway.edge.websocket import WebSocket

__all__ = [
    "Finding",
    "RecordingListener",
    "RecordingTransport",
    "WsPeer",
    "check",
    "chunks",
    "http_exchange",
    "parse_server_frames",
    "pubsub_feed",
    "run",
    "ws_exchange",
]

T = TypeVar("T")

_LOOP: asyncio.AbstractEventLoop | None = None
OPCODES_SERVER = frozenset(int(op) for op in Opcode)


class Finding(AssertionError):
    """An input broke a rule; ``kind`` names the rule (known holes match on it)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def check(condition: object, kind: str, detail: str | Callable[[], str] = "") -> None:
    if not condition:
        raise Finding(kind, detail() if callable(detail) else detail)


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one input's coroutine on this process's loop (made once: fuzzing runs millions)."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(make())


def chunks(data: bytes, cuts: bytes) -> Iterator[bytes]:
    """``data`` in pieces whose lengths come from ``cuts`` (1..16 bytes each, then the rest)."""
    start = 0
    for cut in cuts:
        if start >= len(data):
            return
        step = 1 + cut % 16
        yield data[start : start + step]
        start += step
    if start < len(data):
        yield data[start:]


class RecordingTransport(asyncio.Transport):
    """The transport a protocol writes to; keeps every byte and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.eof = False
        self.closed = False
        self.aborted = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


# -- Redis replies --------------------------------------------------------------------


@dataclasses.dataclass
class RecordingListener:
    """What a :class:`PubSubConnection` reports, in order (the registry's side of the link)."""

    calls: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)

    def on_message(self, channel: bytes, payload: bytes) -> None:
        self.calls.append(("message", channel, payload))

    def message_failed(self, channel: bytes, error: Exception) -> None:
        self.calls.append(("failed", channel, type(error).__name__))

    def flush(self) -> None:
        pass  # once per read: depends on how the bytes were split, so not recorded

    def on_subscribed(self, channel: str) -> None:
        self.calls.append(("subscribed", channel))

    def on_unsubscribed(self, channel: str) -> None:
        self.calls.append(("unsubscribed", channel))

    def on_subscribe_refused(self, channels: list[str], message: str) -> None:
        self.calls.append(("refused", tuple(channels), message))

    def on_connected(self, redis: PubSubConnection) -> None:
        pass

    def on_disconnected(self) -> None:
        pass


@dataclasses.dataclass
class PubSubResult:
    calls: list[tuple[Any, ...]]
    aborted: bool
    #: replies that answered a pending PING (or the error it got)
    answers: list[object]


def pubsub_feed(
    pieces: list[bytes], listener: Any = None, *, sharded: bool = False, pending: int = 0
) -> PubSubResult:
    """Feed Redis reply bytes to a subscribed :class:`PubSubConnection`, one read per piece.

    ``pending`` PINGs are awaiting replies, as the heartbeat leaves them; SUBSCRIBE of two
    channels is pending too, as after a reconnect.
    """

    async def feed() -> PubSubResult:
        recorder = RecordingListener() if listener is None else listener
        protocol = PubSubConnection(recorder, sharded=sharded)
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.subscribe(["a", "b"])
        futures = [protocol.request("PING") for _ in range(pending)]
        for piece in pieces:
            if transport.aborted:
                break  # a real transport reads nothing more once aborted
            protocol.data_received(piece)
        protocol.connection_lost(None)
        answers: list[object] = []
        for future in futures:
            answers.append(future.exception() or future.result())
        calls = recorder.calls if isinstance(recorder, RecordingListener) else []
        return PubSubResult(calls, transport.aborted, answers)

    return run(feed)


# -- WebSocket frames and the HTTP upgrade ---------------------------------------------

_KEY = base64.b64encode(b"fuzzfuzzfuzzfuzz").decode()
UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n"
).encode()
_ACCEPT = accept_key(_KEY).encode()


class WsPeer(WebSocket):
    """The gateway's connection class, recording the messages it assembles."""

    __slots__ = ("finished_calls", "messages", "responder")

    def __init__(self, server: WebSocketServer, responder: Any = None) -> None:
        super().__init__(server)
        self.messages: list[str | bytes] = []
        self.finished_calls = 0
        self.responder = responder

    def respond(self, request: Any) -> Any:
        return None if self.responder is None else self.responder(request)

    def received(self, data: str | bytes) -> None:
        self.messages.append(data)

    def finished(self) -> None:
        self.finished_calls += 1


@dataclasses.dataclass
class WsResult:
    #: bytes the server wrote after its 101 response (frames), or everything for HTTP
    written: bytes
    messages: list[str | bytes]
    state: State
    aborted: bool
    close_code: int | None


def ws_options(compression: bool, max_size: int = 64 * 1024) -> WebSocketOptions:
    """Options as :meth:`gateway.server.Gateway.start` builds them from the defaults."""
    return WebSocketOptions(max_size=max_size, max_buffer=1024 * 1024, compression=compression)


def _drive(
    pieces: list[bytes], options: WebSocketOptions, responder: Any, upgrade: bytes | None
) -> WsResult:
    async def drive() -> WsResult:
        server = WebSocketServer(lambda s: WsPeer(s, responder), options)
        peer = WsPeer(server, responder)
        transport = RecordingTransport()
        peer.connection_made(transport)
        start = 0
        if upgrade is not None:
            peer.data_received(upgrade)
            head = bytes(transport.written)
            check(head.startswith(b"HTTP/1.1 101"), "harness", f"no 101: {head[:80]!r}")
            check(_ACCEPT in head, "harness", "wrong Sec-WebSocket-Accept")
            start = len(head)
        for piece in pieces:
            if transport.aborted or transport.closed:
                break
            peer.data_received(piece)
            await asyncio.sleep(0)  # answers computed later (awaitable routes)
        result = WsResult(
            bytes(transport.written[start:]),
            list(peer.messages),
            peer.ws_state,
            transport.aborted,
            peer.close_code,
        )
        peer.connection_lost(None)
        check(peer.finished_calls == 1, "finished-once", f"finished() ran {peer.finished_calls}x")
        return result

    return run(drive)


def ws_exchange(pieces: list[bytes], *, compression: bool = False) -> WsResult:
    """Open a connection as a client would, then feed ``pieces`` (client frames)."""
    upgrade = UPGRADE
    if compression:
        upgrade += b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    return _drive(pieces, ws_options(compression), None, upgrade + b"\r\n")


def http_exchange(pieces: list[bytes], respond: Callable[[Any], Any]) -> WsResult:
    """Feed raw request bytes to a fresh connection answered by ``respond`` (the gateway's
    :class:`gateway.edge.http.Router`); ``/ws`` upgrades are accepted."""
    return _drive(pieces, ws_options(False), respond, None)


@dataclasses.dataclass(frozen=True)
class ServerFrame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != Opcode.CLOSE or len(self.payload) < 2:
            return None
        return int.from_bytes(self.payload[:2])


def parse_server_frames(data: bytes) -> tuple[list[ServerFrame], bool]:
    """Decode what a server wrote as RFC 6455 frames; (frames, whether a partial one is left).

    Raises :class:`Finding` for bytes no server may send: a mask, RSV bits, an unknown
    opcode, a fragmented or oversized control frame.
    """
    frames: list[ServerFrame] = []
    at = 0
    while at < len(data):
        if len(data) - at < 2:
            return frames, True
        head1, head2 = data[at], data[at + 1]
        check(not head2 & 0x80, "server-frame-masked", f"at byte {at}")
        check(not head1 & 0x70, "server-frame-rsv", f"at byte {at}")
        opcode, length, start = head1 & 0x0F, head2 & 0x7F, at + 2
        check(opcode in OPCODES_SERVER, "server-frame-opcode", f"opcode {opcode} at {at}")
        if length >= 126:
            size = 2 if length == 126 else 8
            if len(data) - start < size:
                return frames, True
            length = int.from_bytes(data[start : start + size])
            start += size
        if opcode >= 0x8:
            check(head1 & 0x80 and length <= 125, "server-control-frame", f"at {at}")
        if len(data) - start < length:
            return frames, True
        frames.append(ServerFrame(bool(head1 & 0x80), opcode, data[start : start + length]))
        at = start + length
    return frames, False
