"""``python -m bench.fanout_path``: the per-message cost of the gateway's Redis read path.

Feeds RESP bytes of pub/sub messages straight to :class:`gateway.subscriber.PubSubConnection`
over a :class:`gateway.hub.Hub` whose readers only count writes, so the figure is
the parsing, checking, framing and batching of one message, without sockets, Redis or
clients (``python -m bench`` measures those end to end). Run it before and after a change
to the fan-out path; ``--history`` sends history envelopes instead of plain messages.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from gateway.broker.subscriber import PubSubConnection
from gateway.core.hub import Hub

CHANNELS = 200  # messages per socket read: one per channel
READS = 50


class _Reader:
    """A live reader that counts what it is sent."""

    writes = 0

    def send(self, data: bytes) -> None:
        _Reader.writes += 1

    def subscription_refused(self, channel: str, message: str) -> None:
        raise AssertionError(channel)

    def overflow(self, buffered: int) -> None:
        raise AssertionError(buffered)


class _NoRedis:
    def subscribe(self, channels: list[str]) -> None:
        pass

    def unsubscribe(self, channels: list[str]) -> None:
        pass

    def barrier(self, channel: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)  # nothing is ever in flight here
        return future


def _message(channel: bytes, payload: bytes) -> bytes:
    """A pub/sub message as Redis sends it (RESP2)."""
    parts = (b"message", channel, payload)
    return b"*3\r\n" + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


def _reads(channels: list[str], first_offset: int, history: bool) -> list[bytes]:
    """``READS`` socket reads, each one message on every channel."""
    out = []
    for n in range(READS):
        payload = b'{"n":%d,"text":"hello there"}' % n
        if history:
            payload = b"\x00ngh1 %d 0123456789abcdef %b" % (first_offset + n, payload)
        out.append(b"".join(_message(c.encode(), payload) for c in channels))
    return out


async def run(history: bool, repeats: int) -> list[float]:
    """Nanoseconds per message, one figure per repeat."""
    registry = Hub()
    registry.on_connected(_NoRedis())
    channels = [f"user:{i}" for i in range(CHANNELS)]
    for channel in channels:
        reader = _Reader()
        joined = registry.join(reader, channel)
        registry.on_subscribed(channel)
        await joined
        registry.activate(reader, channel)
    protocol = PubSubConnection(registry)
    figures = []
    for repeat in range(repeats):
        reads = _reads(channels, 1 + repeat * READS, history)  # offsets keep moving forward
        started = time.perf_counter()
        for data in reads:
            protocol.data_received(data)
        figures.append((time.perf_counter() - started) / (READS * CHANNELS) * 1e9)
    assert registry.deliveries == repeats * READS * CHANNELS, "messages were dropped"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout_path", description=__doc__)
    parser.add_argument("--history", action="store_true", help="history envelopes")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    figures = asyncio.run(run(args.history, args.repeats))
    kind = "history" if args.history else "plain"
    print(
        f"{kind}: median {statistics.median(figures):.0f} ns per message "
        f"({', '.join(f'{f:.0f}' for f in figures)})"
    )


if __name__ == "__main__":
    main()
