"""The load client: many raw WebSocket clients in one uvloop process.

Usage (by the orchestrator): ``python -m bench.load '<json spec>'``. It opens
``clients`` connections (header auth, one ``subscribe`` each), prints a ``ready``
line, counts deliveries until every client has its ``expected`` messages (or the
timeout), prints a ``done`` line, then holds the connections until stdin closes
or says ``exit``. Deliveries are counted by searching the received bytes for
:data:`bench.wire.MARK` (C speed, no frame or JSON decoding).

With ``latency`` on, a read only records its bytes and arrival time (two appends:
the client's own cost per read is part of what it measures); the orchestrator says
``published`` on stdin once the publisher is done, and only then are deliveries
counted, and after the last one the publisher's timestamps read from the bytes.
"""

from __future__ import annotations

import array
import asyncio
import bisect
import contextlib
import gc
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import uvloop

from bench.wire import MARK, STAMP_DIGITS, WS_ACCEPT, client_text_frame, token, upgrade_request

_SUBSCRIBED = b'"type":"subscribed"'
_TAIL = len(MARK) - 1
_now = time.monotonic_ns


@dataclass
class Spec:
    port: int
    clients: int
    channel: str | None  # None: each client reads its own user:{i}
    expected: int  # messages per client
    latency: bool = False
    raw: bool = False  # with latency: every delivery's latency in the done line
    host: str = "127.0.0.1"
    sources: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    inflight: int = 100
    timeout_s: float = 60.0


class Run:
    """Counters shared by every client of the process."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.pending = spec.clients
        self.delivered = 0
        self.first_ns = 0
        self.last_ns = 0
        self.lost = 0
        self.all_done = asyncio.get_running_loop().create_future()

    def client_done(self, now_ns: int) -> None:
        self.pending -= 1
        self.last_ns = max(self.last_ns, now_ns)
        if self.pending == 0 and not self.all_done.done():
            self.all_done.set_result(None)


class Client(asyncio.Protocol):
    __slots__ = (
        "buf",
        "chunks",
        "count",
        "done",
        "ready",
        "request",
        "run",
        "stage",
        "subscribe",
        "tallied",
        "times",
        "transport",
    )

    def __init__(self, run: Run, request: bytes, subscribe: bytes) -> None:
        self.run = run
        self.request = request
        self.subscribe = subscribe
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.stage = 0  # 0 handshake, 1 awaiting subscribed, 2 counting, 3 recording
        self.count = 0
        self.done = run.spec.expected == 0
        # Latency mode: every read's bytes and arrival time; how many reads were counted.
        self.chunks: list[bytes] = []
        self.times = array.array("q")
        self.tallied = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during set-up: {exc}"))
        elif not self.done:
            self.run.lost += 1

    def data_received(self, data: bytes) -> None:
        if self.stage == 3:
            # Latency: the least work per read, what arrived and when; the stamps are
            # read after the run, so the client's own cost adds little to what it measures.
            self.times.append(_now())
            self.chunks.append(data)
            return
        if self.stage == 2:
            self._count(data)
            return
        buf = self.buf + data
        if self.stage == 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end]
            if not head.startswith(b"HTTP/1.1 101") or WS_ACCEPT.encode() not in head:
                status = head.split(b"\r\n", 1)[0].decode(errors="replace")
                self.ready.set_exception(ConnectionError(status))
                assert self.transport is not None
                self.transport.close()
                return
            buf = buf[end + 4 :]
            self.stage = 1
            assert self.transport is not None
            self.transport.write(self.subscribe)
        # Until `subscribed`, walk whole frames: a close frame (4001...) fails at once.
        while len(buf) >= 2:
            length, start = buf[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(buf[2:4]), 4
            if len(buf) < start + length:
                break
            opcode, frame, buf = buf[0] & 0x0F, buf[start : start + length], buf[start + length :]
            if opcode == 0x8:
                code = int.from_bytes(frame[:2])
                self.ready.set_exception(ConnectionError(f"closed {code} {frame[2:].decode()}"))
                assert self.transport is not None
                self.transport.close()
                return
            if opcode == 0x1 and _SUBSCRIBED in frame:
                self.stage = 3 if self.run.spec.latency else 2
                self.buf = b""
                self.ready.set_result(None)
                if buf:
                    self.data_received(buf)
                return
        self.buf = buf

    def _count(self, data: bytes) -> None:
        run = self.run
        found = data.count(MARK) + (self.buf + data[:_TAIL]).count(MARK)
        self.buf = data[-_TAIL:]
        if not found:
            return
        if run.first_ns == 0:
            run.first_ns = time.monotonic_ns()
        run.delivered += found
        self.count += found
        if not self.done and self.count >= run.spec.expected:
            self.done = True
            run.client_done(time.monotonic_ns())

    def tally(self) -> None:
        """Latency mode: count the deliveries recorded so far (between reads, not in them)."""
        if self.done or len(self.chunks) == self.tallied:
            return
        self.tallied = len(self.chunks)
        stream = b"".join(self.chunks)
        found = stream.count(MARK)
        self.run.delivered += found - self.count
        self.count = found
        if found >= self.run.spec.expected:
            self.done = True
            self.run.client_done(self.times[-1])

    def stamps(self, per_message: dict[int, list[int]]) -> list[int]:
        """The latencies of this client's deliveries; widens each message's [first, last]."""
        stream, times = b"".join(self.chunks), self.times
        ends = list(itertools.accumulate(len(chunk) for chunk in self.chunks))
        out: list[int] = []
        start = len(MARK)
        i = stream.find(MARK)
        while i >= 0:
            end = i + start + STAMP_DIGITS
            if end > len(stream):
                break
            stamp = int(stream[i + start : end])
            received = times[bisect.bisect_left(ends, end)]
            out.append(received - stamp)
            span = per_message.get(stamp)
            if span is None:
                per_message[stamp] = [received, received]
            elif received < span[0]:
                span[0] = received
            elif received > span[1]:
                span[1] = received
            i = stream.find(MARK, end)
        return out


async def _open(run: Run, i: int, gate: asyncio.Semaphore) -> Client | str:
    spec = run.spec
    channel = spec.channel if spec.channel is not None else f"user:{i}"
    request = upgrade_request(spec.host, spec.port, token(i))
    subscribe = client_text_frame({"type": "subscribe", "channel": channel, "ref": 1})
    source = spec.sources[i % len(spec.sources)]
    async with gate:
        try:
            loop = asyncio.get_running_loop()
            _, client = await loop.create_connection(
                lambda: Client(run, request, subscribe),
                spec.host,
                spec.port,
                local_addr=(source, 0),
            )
            async with asyncio.timeout(30):
                await client.ready
        except (OSError, TimeoutError) as exc:
            return type(exc).__name__ + (f": {exc}" if str(exc) else "")
    return client


async def _tally_after_publishing(clients: list[Client]) -> None:
    """Latency mode: once the orchestrator says the publisher is done, count what arrived.

    Nothing is counted while messages arrive (the reads only record), so the count
    waits for ``published`` on stdin, then runs every few ms until every client is done.
    """
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "published":
        raise RuntimeError(f"expected 'published' on stdin, got {line!r}")
    run = clients[0].run if clients else None
    while run is not None and not run.all_done.done():
        for client in clients:
            client.tally()
        await asyncio.sleep(0.005)


def _percentile(ordered: list[int], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def summarise(latencies: list[int], spans: dict[int, list[int]]) -> dict[str, Any]:
    """Latency percentiles (ms) over every delivery, and per message where the time went.

    ``first``: publish to the first client's read of a message (Redis, the server's
    work before its first write, one socket); ``spread``: its first client's read to
    its last one's (the fan-out: the server's writes, the kernel, the client's reads).
    """
    if not latencies:
        return {}
    ordered = sorted(latencies)
    first = sorted(low - stamp for stamp, (low, _) in spans.items())
    spread = sorted(high - low for low, high in spans.values())
    return {
        "p50_ms": _percentile(ordered, 0.50),
        "p99_ms": _percentile(ordered, 0.99),
        "max_ms": ordered[-1] / 1e6,
        "samples": len(ordered),
        "first_p50_ms": _percentile(first, 0.50),
        "first_p99_ms": _percentile(first, 0.99),
        "spread_p50_ms": _percentile(spread, 0.50),
        "spread_p99_ms": _percentile(spread, 0.99),
    }


async def main(spec: Spec) -> None:
    run = Run(spec)
    gate = asyncio.Semaphore(spec.inflight)
    started = time.monotonic()
    results = await asyncio.gather(*(_open(run, i, gate) for i in range(spec.clients)))
    connect_s = time.monotonic() - started
    clients = [c for c in results if isinstance(c, Client)]
    errors: dict[str, int] = {}
    for r in results:
        if isinstance(r, str):
            errors[r] = errors.get(r, 0) + 1
    run.pending = 0 if spec.expected == 0 else run.pending - (spec.clients - len(clients))
    if run.pending == 0 and not run.all_done.done():
        run.all_done.set_result(None)
    _emit(
        event="ready",
        connected=len(clients),
        failed=spec.clients - len(clients),
        errors=errors,
        connect_s=connect_s,
        cpu_s=time.process_time(),
    )
    cpu_at_ready = time.process_time()
    usage_at_ready = os.times()
    if spec.latency:
        gc.freeze()  # no collector pauses while measuring (the reads allocate bytes only)
        gc.disable()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(spec.timeout_s):
            if spec.latency:
                await _tally_after_publishing(clients)
            await run.all_done
    cpu_s = time.process_time() - cpu_at_ready
    usage = os.times()
    user_s, sys_s = usage.user - usage_at_ready.user, usage.system - usage_at_ready.system
    lat: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    if spec.latency:
        gc.enable()
        spans: dict[int, list[int]] = {}
        latencies = [ns for client in clients for ns in client.stamps(spans)]
        lat = summarise(latencies, spans)
        if spec.raw:  # several load processes: the orchestrator merges them
            raw = {"latencies": latencies, "spans": list(spans.items())}
    _emit(
        event="done",
        delivered=run.delivered,
        expected=spec.clients * spec.expected,  # a client that failed to connect lost them all
        first_ns=run.first_ns,
        last_ns=run.last_ns,
        complete=run.pending == 0,
        lost_connections=run.lost,
        cpu_s=cpu_s,
        user_s=user_s,
        sys_s=sys_s,
        latency=lat,
        **raw,
    )
    # Hold the connections (the orchestrator may be measuring memory) until told to exit.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for client in clients:
        if client.transport is not None:
            client.transport.abort()


def _emit(**fields: Any) -> None:
    sys.stdout.write(orjson.dumps(fields).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    uvloop.run(main(Spec(**orjson.loads(sys.argv[1]))))
