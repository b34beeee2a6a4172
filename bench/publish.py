"""The publisher: PUBLISH over one raw Redis connection, pipelined or paced.

Usage: ``python -m bench.publish '<json spec>'``; prints one JSON line with the
start time (``time.monotonic_ns()``), the messages published and the sum of the
PUBLISH replies (how many Redis subscribers each message reached).

Burst (``rate`` null): commands go out in pipelined batches as fast as Redis takes
them. Paced: one PUBLISH every ``1/rate`` seconds on an absolute schedule, each
carrying the time it was sent.
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass

import hiredis
import orjson

from bench.wire import PAYLOAD_BYTES, payload

_BATCH = 256


@dataclass
class Spec:
    port: int
    channels: list[str]
    messages: int  # per channel
    rate: float | None = None
    size: int = PAYLOAD_BYTES


def _command(channel: str, size: int) -> bytes:
    """PUBLISH of a payload stamped now."""
    args = ("PUBLISH", channel, payload(time.monotonic_ns(), size))
    return hiredis.pack_command(args)  # type: ignore[arg-type, no-any-return]


def _publish(sock: socket.socket, reader: hiredis.Reader, commands: list[bytes]) -> int:
    sock.sendall(b"".join(commands))
    total = 0
    got = 0
    while got < len(commands):
        reader.feed(sock.recv(65536))
        while (reply := reader.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                raise RuntimeError(f"PUBLISH failed: {reply}")
            total += reply
            got += 1
    return total


def main(spec: Spec) -> None:
    sock = socket.create_connection(("127.0.0.1", spec.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()
    receivers = 0
    published = 0
    started = time.monotonic_ns()
    if spec.rate is None:
        batch: list[bytes] = []
        for _ in range(spec.messages):
            for channel in spec.channels:
                batch.append(_command(channel, spec.size))
                if len(batch) == _BATCH:
                    receivers += _publish(sock, reader, batch)
                    published += len(batch)
                    batch = []
        if batch:
            receivers += _publish(sock, reader, batch)
            published += len(batch)
    else:
        interval_ns = int(1e9 / spec.rate)
        for k in range(spec.messages):
            delay = started + k * interval_ns - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            for channel in spec.channels:
                receivers += _publish(sock, reader, [_command(channel, spec.size)])
                published += 1
    sock.close()
    line = {"started_ns": started, "published": published, "receivers": receivers}
    sys.stdout.write(orjson.dumps(line).decode() + "\n")


if __name__ == "__main__":
    main(Spec(**orjson.loads(sys.argv[1])))
