"""What the benchmark processes agree on: payload layout, handshake, client frames.

Every published payload is ``{"t":"<20 digits>","p":"xxx..."}`` where ``t`` is the
publisher's ``time.monotonic_ns()`` (system-wide on Linux, so comparable across
processes). Both servers embed a JSON payload verbatim in
``{"type":"message","channel":...,"data":<payload>}``, so the load client finds
deliveries by the bytes ``"data":{"t":"`` without decoding any JSON.
"""

from __future__ import annotations

import base64
import hashlib

import orjson

MARK = b'"data":{"t":"'
STAMP_DIGITS = 20
PAYLOAD_BYTES = 100
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = base64.b64encode(
    hashlib.sha1((WS_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
).decode()


def payload(stamp_ns: int, size: int = PAYLOAD_BYTES) -> bytes:
    head = b'{"t":"%020d","p":"' % stamp_ns
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def token(i: int) -> str:
    return f"bench-token-{i:07d}"


def upgrade_request(host: str, port: int, token_: str) -> bytes:
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token_}\r\n\r\n"
    ).encode()


def client_text_frame(obj: dict[str, object]) -> bytes:
    """A masked client text frame (mask key 0: payload bytes unchanged, RFC 6455 allows it)."""
    data = orjson.dumps(obj)
    assert len(data) < 126
    return bytes((0x81, 0x80 | len(data), 0, 0, 0, 0)) + data


def server_text_frame(data: bytes) -> bytes:
    """An unmasked server text frame (for the ceiling server)."""
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    return bytes((0x81, 126, n >> 8, n & 0xFF)) + data
