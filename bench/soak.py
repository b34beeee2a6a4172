"""The soak with faults: ``python -m bench.soak [--duration 300] [...]`` (docs/testing.md).

Two gateway instances as real processes (A: one process; B: ``--workers 2``), each reaching
Redis through its own fault proxy, carry mixed clients on plain and history channels while
publishers (the ``clients`` library) publish numbered messages and a chaos loop kills and
restarts Redis, pauses it, kills the pub/sub clients, kills a worker of B with SIGKILL,
cuts Redis links and client links, and restarts A. A ledger checks every client:

- history channels: every offset exactly once, in order, across reconnects (``since``);
  a resume that is not recovered must be one the gateway could not recover;
- plain channels: complete from ``subscribed`` on, except across a ``gap`` frame;
- every close has a legitimate, documented cause for that kind of client, and every
  abnormal drop, ``gap`` and Redis reconnect is explained by a fault the chaos loop made.

At the end nothing may leak: client sockets and ``/status`` connections back to 0, Redis
back to one subscriber connection per gateway process and no client channel, no key without
an expiry and no connection lease left, gateway file descriptors back to their start and RSS
within a tolerance. It prints a report and exits 1 on any violation. Everything runs on
loopback, bounded in time, and ends every process it started by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import dataclasses
import datetime
import itertools
import os
import random
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from notify_publisher import AsyncPublisher, PublisherError
from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.history import ENVELOPE_PREFIX, HistoryKeys
from tests.support.process import GatewayProcess
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer, free_port

__all__ = ["main"]

#: the chaos actions, all in the default mix (and the suite's)
CHAOS = (
    "redis-kill", "redis-pause", "pubsub-kill", "worker-kill", "link-cut", "client-link-cut",
    "gateway-restart", "hostile-envelope",
)  # fmt: skip
#: flooders of control frames and fragments (4029 from the frame budget), one of each
FRAME_FLOODERS = ("ping-flood", "continuation-flood")
#: frames a flooder sends at most: far past every burst the gateway allows
#: (GATEWAY_FRAME_RATE_BURST, GATEWAY_RATE_BURST), so a flood that is not limited shows
FLOOD_FRAMES = 20_000
HISTORY_PREFIX = "notify-gateway:history:"
LIMIT_PREFIX = "notify-gateway:"
#: seconds before a close or gap within which a fault explains it
EXPLAIN_S = 30.0
#: RSS a gateway process may keep above its start after a run (see docs/testing.md)
RSS_TOLERANCE_KIB = 32 * 1024
#: file descriptors beyond their start (Redis pool connections aside) a gateway may keep
FD_TOLERANCE = 2
MAX_REPLAY = 1000
LEASE_S = 10.0  # the gateway's lease: max(10, 3 * GATEWAY_SESSION_RECHECK_SECONDS)


@dataclasses.dataclass
class Options:
    duration_s: float
    fast: int
    slow: int
    churn: int
    flood: int
    plain_channels: int
    history_channels: int
    rate: float
    chaos_every_s: float
    chaos: tuple[str, ...]
    frame_flooders: tuple[str, ...]
    attempts_per_ip: int
    settle_s: float
    seed: int


# -- what happened: faults and the ledger ----------------------------------------------


@dataclasses.dataclass
class Fault:
    at: float  # monotonic
    action: str
    #: client routes whose connections it may drop; "redis" when it may cost gaps
    affects: frozenset[str]


class Ledger:
    """Every publish, every fault, every violation."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.wall_offset = time.time() - self.started
        #: channel -> next sequence number to publish
        self.next_seq: dict[str, int] = collections.defaultdict(int)
        #: channel -> sorted sequence numbers whose PUBLISH Redis acknowledged
        self.ok: dict[str, list[int]] = collections.defaultdict(list)
        self.failed_publishes = 0
        #: (channel, epoch, offset) -> seq: what one history position holds, for every reader
        self.positions: dict[tuple[str, str, int], int] = {}
        self.faults: list[Fault] = []
        self.violations: list[str] = []
        self.stats: collections.Counter[str] = collections.Counter()
        self.closes: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def now(self) -> float:
        return time.monotonic() - self.started

    def violation(self, text: str) -> None:
        """Record a broken rule."""
        self.violations.append(f"[{self.now():7.1f}s] {text}")

    def fault(self, action: str, affects: set[str]) -> None:
        self.faults.append(Fault(time.monotonic(), action, frozenset(affects)))
        self.stats[f"fault {action}"] += 1

    def explained(self, route: str, since: float, until: float) -> str | None:
        """The fault that may have caused something seen on ``route`` in [since, until]."""
        for fault in reversed(self.faults):
            if route in fault.affects and since - 1.0 <= fault.at <= until + 1.0:
                return fault.action
        return None

    def ok_between(self, channel: str, low: int, high: int) -> list[int]:
        """Acknowledged sequence numbers in [low, high]."""
        seqs = self.ok[channel]
        return seqs[bisect.bisect_left(seqs, low) : bisect.bisect_right(seqs, high)]


# -- publishers ------------------------------------------------------------------------


def payload(channel: str, seq: int, pad: int) -> dict[str, object]:
    return {"ch": channel, "seq": seq, "pad": "x" * pad}


async def publish_loop(
    ledger: Ledger,
    publisher: AsyncPublisher,
    channel: str,
    history: bool,
    rate: float,
    pad: int,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        seq = ledger.next_seq[channel]
        ledger.next_seq[channel] = seq + 1  # before sending: a reader subscribed now needs it
        try:
            await publisher.publish(channel, payload(channel, seq, pad), history=history)
        except PublisherError:
            ledger.failed_publishes += 1  # Redis may or may not have run it: optional
            await asyncio.sleep(0.2)
        else:
            ledger.ok[channel].append(seq)
            ledger.stats["published"] += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1 / rate):
                await stop.wait()


# -- clients ---------------------------------------------------------------------------


@dataclasses.dataclass
class PlainSub:
    """One subscription of one connection to a plain channel: what it must get."""

    channel: str
    required_from: int
    events: list[int | None] = dataclasses.field(default_factory=list)  # None: a gap
    live: bool = True


@dataclasses.dataclass
class HistoryState:
    """A client's position in one history channel, kept across its connections."""

    channel: str
    epoch: str | None = None
    offset: int | None = None
    #: after a gap: messages are not counted until the resume's reply
    desynced: bool = False
    #: the last seq seen (publishers' retries may repeat one, never go back)
    seq: int = -1
    #: subscribed without `since`, no message yet
    fresh: bool = False


class SoakClient:
    """One logical client: connects, subscribes, reads, reconnects, keeps its ledger."""

    def __init__(
        self,
        soak: Soak,
        kind: str,
        index: int,
        token: str,
        plain: list[str],
        history: list[str],
        *,
        header_auth: bool = True,
    ) -> None:
        self.soak = soak
        self.ledger = soak.ledger
        self.kind = kind
        self.name = f"{kind}-{index}"
        self.token = token
        self.plain_channels = plain
        self.history = {channel: HistoryState(channel) for channel in history}
        self.header_auth = header_auth
        self.subs: list[PlainSub] = []
        self.live: dict[str, PlainSub] = {}
        self.route = ""
        self.random = random.Random(f"{soak.options.seed}-{self.name}")
        self.connected = False

    # -- connection life --------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            self.route = self.soak.pick_route(self.random)
            opened = time.monotonic()
            try:
                ws = await self._connect()
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                self.ledger.stats[f"{self.kind} connect failed"] += 1
                if isinstance(exc, InvalidStatus) and exc.response.status_code not in (503,):
                    self.ledger.violation(f"{self.name}: upgrade refused: {exc}")
                await self._sleep(stop, backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            self.ledger.stats[f"{self.kind} connections"] += 1
            self.connected = True
            try:
                reconnect = await self.session(ws, stop)
            finally:
                self.connected = False
                for sub in self.live.values():
                    sub.live = False
                self.live.clear()
                await ws.close()
            self._judge_close(ws, opened)
            if not reconnect:
                return
            await self._sleep(stop, self.random.uniform(0.05, 0.3))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()

    async def _connect(self) -> ClientConnection:
        port = self.soak.route_port(self.route)
        headers = {"Authorization": f"Bearer {self.token}"} if self.header_auth else None
        kwargs: dict[str, Any] = {}
        if self.kind == "slow":
            # A small receive buffer, and websockets stops reading after 4 queued messages:
            # the gateway's buffer fills while this client pauses.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            kwargs = {"sock": sock, "max_queue": 4}
        async with asyncio.timeout(10):
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws",
                additional_headers=headers,
                open_timeout=10,
                max_size=None,
                **kwargs,
            )
        return ws

    def _judge_close(self, ws: ClientConnection, opened: float) -> None:
        """Is this the way a connection of this kind may end?"""
        code = ws.close_code if ws.close_code is not None else 1006
        received = ws.protocol.close_rcvd
        reason = received.reason if received is not None else ""
        self.ledger.closes[self.kind][f"{code} {reason}".strip()] += 1
        if (
            ws.protocol.close_sent is not None
            and ws.protocol.close_sent.code == 1000
            and (received is None or received.code == 1000)
        ):
            return  # this client closed it
        cause = self.ledger.explained(self.route, opened, time.monotonic())
        legitimate = {
            1001: cause is not None,  # a gateway shutting down: only when the soak did it
            # A flooder may not finish the close handshake within the close timeout: dropped.
            1006: cause is not None or self.kind in ("flood", *FRAME_FLOODERS),
            1011: reason == "keepalive ping timeout" and (self.kind == "slow" or cause),
            1013: True,  # Redis unavailable (say why in the report)
            4008: self.kind == "slow",
            4029: self.kind in ("flood", *FRAME_FLOODERS),
        }
        if not legitimate.get(code, False):
            self.ledger.violation(
                f"{self.name} on {self.route}: closed {code} {reason!r} (no fault explains it)"
            )

    # -- one connection ---------------------------------------------------------------

    async def session(self, ws: ClientConnection, stop: asyncio.Event) -> bool:
        """Serve one connection; whether to reconnect afterwards."""
        if self.kind in ("flood", *FRAME_FLOODERS):
            await self._flood(ws, stop)
            return True
        refs = itertools.count(1)
        pending: dict[int, tuple[str, str]] = {}  # ref -> (kind, channel)
        lifetime = self.random.uniform(0.3, 3.0) if self.kind == "churn" else None
        deadline = None if lifetime is None else time.monotonic() + lifetime
        try:
            if not self.header_auth:  # the browser way: the first frame
                await ws.send(orjson.dumps({"type": "auth", "token": self.token}).decode())
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 15))
            if welcome.get("type") != "welcome":
                self.ledger.violation(f"{self.name}: first frame {welcome!r}")
                return True
            for channel in self.plain_channels:
                await self._subscribe(ws, next(refs), channel, None, pending)
            for state in self.history.values():
                await self._subscribe(ws, next(refs), state.channel, state, pending)
            paused_until = 0.0
            while not stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self.ledger.stats["churn cycles"] += 1
                    return True
                if self.kind == "slow" and now >= paused_until + 2.0:
                    paused_until = now + 4.0  # read 2 s, then stop reading for 4 s
                    await self._sleep(stop, 4.0)
                    continue
                try:
                    async with asyncio.timeout(0.5):
                        raw = await ws.recv()
                except TimeoutError:
                    continue
                await self._frame(ws, orjson.loads(raw), refs, pending)
            return False
        except ConnectionClosed:
            return not stop.is_set()
        except TimeoutError:
            self.ledger.violation(f"{self.name} on {self.route}: no welcome within 15 s")
            return True

    async def _subscribe(
        self,
        ws: ClientConnection,
        ref: int,
        channel: str,
        state: HistoryState | None,
        pending: dict[int, tuple[str, str]],
    ) -> None:
        frame: dict[str, object] = {"type": "subscribe", "channel": channel, "ref": ref}
        if state is not None and state.epoch is not None and state.offset is not None:
            frame["since"] = {"offset": state.offset, "epoch": state.epoch}
        pending[ref] = ("subscribe", channel)
        await ws.send(orjson.dumps(frame).decode())

    async def _frame(
        self,
        ws: ClientConnection,
        obj: dict[str, Any],
        refs: itertools.count[int],
        pending: dict[int, tuple[str, str]],
    ) -> None:
        kind, channel = obj.get("type"), obj.get("channel", "")
        if kind == "subscribed":
            pending.pop(obj.get("ref", -1), None)
            if channel in self.history:
                self._history_subscribed(channel, obj)
            else:
                sub = PlainSub(channel, self.ledger.next_seq[channel])
                self.subs.append(sub)
                self.live[channel] = sub
        elif kind == "unsubscribed":
            pending.pop(obj.get("ref", -1), None)
            state = self.history[channel]  # only history channels are left (after a gap)
            await self._subscribe(ws, next(refs), channel, state, pending)
        elif kind == "message":
            self.ledger.stats["delivered"] += 1
            data = obj.get("data")
            seq = data.get("seq") if isinstance(data, dict) else None
            if not isinstance(seq, int):
                self.ledger.stats["messages not from the soak's publishers"] += 1
            elif channel in self.history:
                self._history_message(channel, obj, seq)
            elif channel in self.live:
                self.live[channel].events.append(seq)
        elif kind == "gap":
            self.ledger.stats["gaps"] += 1
            now = time.monotonic()
            if self.ledger.explained("redis", now - EXPLAIN_S, now) is None:
                self.ledger.violation(f"{self.name}: gap on {channel} with no Redis fault")
            if channel in self.history:
                # Resume it ourselves: leave, then subscribe from the last position seen.
                self.history[channel].desynced = True
                ref = next(refs)
                pending[ref] = ("unsubscribe", channel)
                leave = {"type": "unsubscribe", "channel": channel, "ref": ref}
                await ws.send(orjson.dumps(leave).decode())
            elif channel in self.live:
                self.live[channel].events.append(None)
        elif kind == "error":
            if obj.get("code") == "rate_limited" and self.kind == "flood":
                return
            self.ledger.violation(f"{self.name}: error frame {obj!r}")
        elif kind != "pong":
            self.ledger.violation(f"{self.name}: unexpected frame {obj!r}"[:200])

    def _history_subscribed(self, channel: str, obj: dict[str, Any]) -> None:
        state = self.history[channel]
        epoch, offset = obj.get("epoch"), obj.get("offset")
        if epoch is None or offset is None:
            self.ledger.violation(f"{self.name}: {channel} subscribed without a position {obj!r}")
            return
        if "recovered" in obj and not obj["recovered"]:
            self.ledger.stats["resumes not recovered"] += 1
            recoverable = (
                state.epoch == epoch
                and state.offset is not None
                and 0 <= offset - state.offset <= MAX_REPLAY
            )
            if recoverable:
                self.ledger.violation(
                    f"{self.name}: {channel} resume from {state.offset} refused at {offset} "
                    f"in the same epoch (recoverable)"
                )
        elif obj.get("recovered"):
            self.ledger.stats["resumes recovered"] += 1
            if offset < (state.offset or 0):
                self.ledger.violation(f"{self.name}: {channel} recovered to an older offset")
            state.desynced = False
            return  # the replay follows, from state.offset + 1
        state.epoch, state.offset, state.desynced = epoch, offset, False
        state.fresh = "recovered" not in obj  # a first subscribe: no `since` was sent

    def _history_message(self, channel: str, obj: dict[str, Any], seq: int) -> None:
        state = self.history[channel]
        if state.desynced:
            return
        epoch, offset = obj.get("epoch"), obj.get("offset")
        if not isinstance(offset, int) or epoch != state.epoch or state.offset is None:
            self.ledger.violation(
                f"{self.name}: {channel} message {epoch}/{offset} outside epoch {state.epoch}"
            )
            return
        if state.fresh and offset <= state.offset:
            self.ledger.violation(
                f"{self.name}: {channel} subscribed at offset {state.offset}, then got {offset}"
            )
            return
        state.fresh = False
        if offset != state.offset + 1:
            what = "duplicate or out of order" if offset <= state.offset else "missing"
            self.ledger.violation(
                f"{self.name}: {channel} offset {offset} after {state.offset} ({what})"
            )
        key = (channel, str(epoch), offset)
        known = self.ledger.positions.setdefault(key, seq)
        if known != seq:
            self.ledger.violation(f"{self.name}: {channel} offset {offset} held {seq}, not {known}")
        if seq < state.seq and offset > state.offset:
            self.ledger.violation(f"{self.name}: {channel} seq {seq} after {state.seq}")
        state.offset, state.seq = max(offset, state.offset), seq

    async def _flood(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        """Send up to :data:`FLOOD_FRAMES` frames as fast as the socket takes them, until the
        gateway closes the connection (4029); it must close it."""
        reader = asyncio.ensure_future(self._drain(ws))
        try:
            # AttributeError: websockets' client (17.4) aborting a transport that the gateway's
            # reset has already closed, mid-send; the flooder is done either way.
            with contextlib.suppress(ConnectionClosed, AttributeError):
                if self.kind == "continuation-flood":

                    async def fragments() -> AsyncIterator[str]:
                        yield "{"
                        for _ in range(FLOOD_FRAMES):
                            if reader.done():
                                return
                            yield ""

                    await ws.send(fragments())
                else:
                    for _ in range(FLOOD_FRAMES):
                        if reader.done() or stop.is_set():
                            break
                        if self.kind == "ping-flood":
                            await ws.ping()
                        else:
                            await ws.send('{"type":"ping"}')
            try:
                await asyncio.wait_for(reader, 10)
            except TimeoutError:
                if not stop.is_set():
                    self.ledger.violation(
                        f"{self.name}: {FLOOD_FRAMES} frames sent, and the gateway did not close"
                    )
        finally:
            reader.cancel()
        await self._sleep(stop, 1.0)

    async def _drain(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    # -- the end ----------------------------------------------------------------------

    def caught_up(self, final: dict[str, int]) -> bool:
        """Every channel held has everything published (history: up to the final offset)."""
        if not self.connected:
            return False
        for state in self.history.values():
            if state.desynced or state.offset != final.get(state.channel):
                return False
        for channel in self.plain_channels:
            sub = self.live.get(channel)
            if sub is None:
                return False
            last_ok = self.ledger.ok[channel][-1] if self.ledger.ok[channel] else -1
            if sub.events and sub.events[-1] is None:
                continue  # a gap last: what was lost is excused, nothing more is coming
            seen = [s for s in sub.events if s is not None]
            if last_ok >= sub.required_from and (not seen or seen[-1] < last_ok):
                return False
        return True

    def check_plain(self) -> None:
        """Order, no duplicates, and no hole that no ``gap`` excuses."""
        for sub in self.subs:
            previous: int | None = None
            gap = False
            for event in sub.events:
                if event is None:
                    gap = True
                    continue
                if previous is not None and event <= previous:
                    self.ledger.violation(
                        f"{self.name}: {sub.channel} seq {event} after {previous} (dup/order)"
                    )
                low = sub.required_from if previous is None else previous + 1
                missing = self.ledger.ok_between(
                    sub.channel, max(low, sub.required_from), event - 1
                )
                if missing and not gap:
                    self.ledger.violation(
                        f"{self.name}: {sub.channel} lost {len(missing)} messages "
                        f"({missing[0]}..{missing[-1]}) with no gap"
                    )
                previous, gap = max(event, previous if previous is not None else event), False


# -- processes -------------------------------------------------------------------------


def _gateway_env(redis_url: str, port: int, options: Options) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_HEARTBEAT_SECONDS": "5",
        "GATEWAY_REDIS_PING_SECONDS": "0.5",
        "GATEWAY_REDIS_PING_TIMEOUT_SECONDS": "1.5",
        "REDIS_CONNECT_TIMEOUT": "2000",
        "GATEWAY_SESSION_RECHECK_SECONDS": "2",
        "GATEWAY_MAX_BUFFER_BYTES": str(256 * 1024),
        # The soak tests faults, not admission: churners reconnect more than 60 times a minute.
        "GATEWAY_MAX_ATTEMPTS_PER_USER": "1000000",
        "GATEWAY_MAX_ATTEMPTS_PER_IP": str(options.attempts_per_ip),
        "GATEWAY_SHUTDOWN_TIMEOUT": "5",
        "GATEWAY_MAX_REPLAY": str(MAX_REPLAY),
        "GATEWAY_LOG_LEVEL": "info",
    }


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def tcp_peers(pid: int) -> list[tuple[int, int, int]]:
    """(local port, remote port, state) of the process's TCP sockets (IPv4 and IPv6)."""
    inodes = _socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
                found.append((int(local, 16), int(remote, 16), int(fields[3], 16)))
    return found


@dataclasses.dataclass
class ProcessUse:
    rss_kib: int
    fds: int
    redis_sockets: int
    client_sockets: int


def process_use(pid: int, port: int, redis_port: int) -> ProcessUse:
    peers = tcp_peers(pid)
    listening = 10
    return ProcessUse(
        rss_kib(pid),
        len(list(Path(f"/proc/{pid}/fd").iterdir())),
        # Every state: a pooled connection the peer closed (a cut link) stays CLOSE_WAIT until
        # redis-py next uses it; the pool is bounded (32), so it is no leak.
        sum(1 for _, remote, _state in peers if remote == redis_port),
        sum(1 for local, _, state in peers if local == port and state != listening),
    )


class Soak:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.ledger = Ledger()
        self.random = random.Random(options.seed)
        self.redis = RedisServer(["--appendonly", "yes", "--appendfsync", "always"])
        self.proxies: dict[str, FaultProxy] = {}
        self.client_proxy: FaultProxy | None = None
        self.gateways: dict[str, GatewayProcess] = {}
        self.ports: dict[str, int] = {"A": free_port(), "B": free_port()}
        self.clients: list[SoakClient] = []
        self.paused = False
        self.baseline: dict[str, ProcessUse] = {}
        self.baseline_pids: dict[str, int] = {}
        self.leaks: list[tuple[str, str, str]] = []  # (what, start, end)
        self.restarts_b = 0

    def route_port(self, route: str) -> int:
        if route == "A-proxy":
            assert self.client_proxy is not None
            return self.client_proxy.port
        return self.ports[route]

    def pick_route(self, rng: random.Random) -> str:
        return rng.choice(("A", "B", "A-proxy"))

    # -- set-up and tear-down ---------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.redis.start)
        for name in ("A", "B"):
            self.proxies[name] = await FaultProxy(self.redis.port).start()
        self.start_gateway("A")
        self.start_gateway("B")
        await asyncio.to_thread(self.gateways["A"].wait_started)
        await asyncio.to_thread(self.gateways["B"].wait_started)
        await self.wait_workers()
        self.client_proxy = await FaultProxy(self.ports["A"]).start()

    def start_gateway(self, name: str) -> None:
        env = _gateway_env(self.proxies[name].url, self.ports[name], self.options)
        args = ("serve", "--workers", "2") if name == "B" else ("serve",)
        self.gateways[name] = GatewayProcess(env, args)

    async def wait_workers(self) -> None:
        """Until B's supervisor has two workers, each with its Redis link up."""
        async with asyncio.timeout(30):
            while True:
                workers = children(self.gateways["B"].process.pid)
                links = [process_use(p, self.ports["B"], self.proxies["B"].port) for p in workers]
                if len(workers) == 2 and all(use.redis_sockets >= 1 for use in links):
                    return
                await asyncio.sleep(0.1)

    def gateway_pids(self) -> dict[str, int]:
        pids = {"A": self.gateways["A"].process.pid}
        for i, pid in enumerate(sorted(children(self.gateways["B"].process.pid))):
            pids[f"B{i}"] = pid
        return pids

    def use_of(self, name: str, pid: int) -> ProcessUse:
        gateway = name[0]
        return process_use(pid, self.ports[gateway], self.proxies[gateway].port)

    async def stop(self) -> None:
        for client_proxy in (self.client_proxy, *self.proxies.values()):
            if client_proxy is not None:
                client_proxy.blackhole = False
        if self.paused:
            self.redis.signal(signal.SIGCONT)
        for gateway in self.gateways.values():
            await asyncio.to_thread(gateway.stop)
        for proxy in (self.client_proxy, *self.proxies.values()):
            if proxy is not None:
                await proxy.close()
        await asyncio.to_thread(self.redis.cleanup)

    # -- chaos ------------------------------------------------------------------------

    async def chaos(self, stop: asyncio.Event) -> None:
        last_worker_kill = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.chaos_every_s):
                    await stop.wait()
            if stop.is_set():
                return
            actions = list(self.options.chaos)
            if time.monotonic() - last_worker_kill < 15 and "worker-kill" in actions:
                actions.remove("worker-kill")  # the supervisor gives up on a crash loop
            if not actions:
                continue
            action = self.random.choice(actions)
            if action == "worker-kill":
                last_worker_kill = time.monotonic()
            await self.act(action)

    async def act(self, action: str) -> None:
        ledger = self.ledger
        if action == "redis-kill":
            ledger.fault(action, {"redis"})
            await asyncio.to_thread(self.redis.kill)
            await asyncio.sleep(self.random.uniform(0.5, 3.0))
            ledger.fault(action, {"redis"})
            await asyncio.to_thread(self.redis.start)
        elif action == "redis-pause":
            ledger.fault(action, {"redis"})
            self.redis.signal(signal.SIGSTOP)
            self.paused = True
            await asyncio.sleep(self.random.uniform(1.0, 4.0))
            self.redis.signal(signal.SIGCONT)
            self.paused = False
            ledger.fault(action, {"redis"})
        elif action == "pubsub-kill":
            ledger.fault(action, {"redis"})
            async with self.admin() as redis:
                await redis.client_kill_filter(_type="pubsub")
        elif action == "worker-kill":
            workers = children(self.gateways["B"].process.pid)
            if workers:
                ledger.fault(action, {"B"})
                os.kill(self.random.choice(workers), signal.SIGKILL)
                self.restarts_b += 1
        elif action == "link-cut":
            name = self.random.choice(("A", "B"))
            ledger.fault(action, {"redis"})
            proxy = self.proxies[name]
            if self.random.random() < 0.5:
                proxy.reset()
            else:  # silence: only the gateway's own PING notices
                proxy.blackhole = True
                await asyncio.sleep(self.random.uniform(2.0, 4.0))
                proxy.reset()
                proxy.blackhole = False
            ledger.fault(action, {"redis"})
        elif action == "client-link-cut":
            assert self.client_proxy is not None
            ledger.fault(action, {"A-proxy"})
            self.client_proxy.reset()
        elif action == "gateway-restart":
            ledger.fault(action, {"A", "A-proxy", "redis"})
            await asyncio.to_thread(self.gateways["A"].stop)
            self.start_gateway("A")
            await asyncio.to_thread(self.gateways["A"].wait_started)
            ledger.fault(action, {"A", "A-proxy", "redis"})
        elif action == "hostile-envelope":
            async with self.admin() as redis:
                channel = self.random.choice(self.plain_names())
                await redis.publish(channel, ENVELOPE_PREFIX + b"9" * 5000 + b" abc {}")
            ledger.stats["fault hostile-envelope"] += 1
        else:
            raise ValueError(f"unknown chaos action {action!r}")

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[Redis]:
        redis = Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=5)
        try:
            yield redis
        finally:
            await redis.aclose()

    def plain_names(self) -> list[str]:
        return [f"soak:plain:{i}" for i in range(self.options.plain_channels)]

    def history_names(self) -> list[str]:
        return [f"soak:hist:{i}" for i in range(self.options.history_channels)]

    # -- the run ----------------------------------------------------------------------

    async def make_clients(self, publisher: AsyncPublisher) -> None:
        options = self.options
        plain, history = self.plain_names(), self.history_names()
        counts = [
            ("fast", options.fast), ("slow", options.slow), ("churn", options.churn),
            ("flood", options.flood), *((kind, 1) for kind in options.frame_flooders),
        ]  # fmt: skip
        for kind, count in counts:
            for i in range(count):
                token = await publisher.create_session(f"soak-{kind}-{i}", channels=["soak:*"])
                if kind == "fast":
                    client = SoakClient(
                        self, kind, i, token, plain, history, header_auth=i % 3 != 0
                    )
                elif kind == "slow":
                    client = SoakClient(self, kind, i, token, ["soak:bulk"], [])
                elif kind == "churn":
                    rng = random.Random(f"{options.seed}-churn-{i}")
                    client = SoakClient(
                        self, kind, i, token, [rng.choice(plain)], [rng.choice(history)],
                        header_auth=i % 2 == 0,
                    )  # fmt: skip
                else:
                    client = SoakClient(self, kind, i, token, [], [])
                self.clients.append(client)

    async def run(self) -> int:
        options = self.options
        await self.start()
        publisher = AsyncPublisher.from_url(
            f"redis://127.0.0.1:{self.redis.port}/0", max_retries=3, connect_timeout_s=2.0
        )
        try:
            await self.make_clients(publisher)
            for channel in self.history_names():  # every history channel has a position
                await publisher.publish(channel, payload(channel, -1, 0), history=True)
            await asyncio.sleep(1.0)
            self.baseline_pids = self.gateway_pids()
            self.baseline = {name: self.use_of(name, p) for name, p in self.baseline_pids.items()}
            stop_clients, stop_work = asyncio.Event(), asyncio.Event()
            clients = [asyncio.create_task(c.run(stop_clients)) for c in self.clients]
            work = [
                asyncio.create_task(
                    publish_loop(
                        self.ledger, publisher, channel, history, options.rate, pad, stop_work
                    )
                )
                for channel, history, pad in [
                    *((c, False, 64) for c in self.plain_names()),
                    *((c, True, 64) for c in self.history_names()),
                    *([("soak:bulk", False, 64 * 1024)] if options.slow else []),
                ]
            ]
            work.append(asyncio.create_task(self.chaos(stop_work)))
            print(f"soak: running {options.duration_s:g}s ...", flush=True)
            await asyncio.sleep(options.duration_s)
            stop_work.set()
            await asyncio.gather(*work)
            await self.healthy()
            await self.converge()
            stop_clients.set()
            await asyncio.gather(*clients)
            for client in self.clients:
                client.check_plain()
            await self.check_leaks()
        finally:
            await publisher.close()
            self.collect_logs()
            await self.stop()
        return self.report()

    async def healthy(self) -> None:
        """After the last fault: every gateway process has its Redis link back (not a leak
        check: a link may still be in its reconnect backoff, up to 10 s)."""
        want = len(self.gateway_pids())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30), self.admin() as redis:
                while True:
                    listing = await redis.client_list()
                    names = [c.get("name") for c in listing]
                    if names.count("notify-gateway-subscriber") >= want:
                        return
                    await asyncio.sleep(0.2)

    async def converge(self) -> None:
        """Let every client catch up with the last message of each channel it holds."""
        final: dict[str, int] = {}
        async with self.admin() as redis:
            for channel in self.history_names():
                meta = HistoryKeys.for_channel(HISTORY_PREFIX, channel).meta
                final[channel] = int(await redis.hget(meta, "offset") or 0)
        readers = [c for c in self.clients if c.kind in ("fast", "slow")]
        deadline = time.monotonic() + self.options.settle_s
        while time.monotonic() < deadline:
            if all(c.caught_up(final) for c in readers):
                return
            await asyncio.sleep(0.2)
        for client in readers:
            if not client.caught_up(final):
                where = {s.channel: s.offset for s in client.history.values()}
                self.ledger.violation(
                    f"{client.name}: not caught up {self.options.settle_s:g}s after the last "
                    f"publish (connected={client.connected}, history={where}, final={final})"
                )

    # -- the end: leaks ---------------------------------------------------------------

    async def check_leaks(self) -> None:
        ledger = self.ledger
        pids = self.gateway_pids()
        # Client sockets and /status: back to 0 once every client has closed.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                # polled: socket counts in /proc have no event to await
                while any(self.use_of(n, p).client_sockets for n, p in pids.items()):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
        for name, pid in pids.items():
            sockets = self.use_of(name, pid).client_sockets
            self.leaks.append((f"{name} client sockets", "0", str(sockets)))
            if sockets:
                ledger.violation(f"gateway {name}: {sockets} client sockets left open")
        for name in ("A", "B"):
            counts: set[tuple[int, int, int]] = set()
            for _ in range(50):  # until each answer is 0 (B: 20 in a row, SO_REUSEPORT)
                counts = set()
                for _ in range(20 if name == "B" else 1):
                    report = await asyncio.to_thread(self.http_get, name, "/status")
                    status = orjson.loads(report)
                    counts.add((status["sockets"], status["connections"], status["subscriptions"]))
                if counts == {(0, 0, 0)}:
                    break
                await asyncio.sleep(0.2)
            self.leaks.append((f"{name} /status sockets, connections, subs", "0", str(counts)))
            if counts != {(0, 0, 0)}:
                ledger.violation(f"gateway {name}: /status (sockets, connections, subs) {counts}")
        # Redis: one subscriber per gateway process, no client channel, nothing lasting.
        async with self.admin() as redis:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    # polled: Redis state has no event to await
                    while await redis.pubsub_channels() != [CONTROL_CHANNEL.encode()]:  # noqa: ASYNC110
                        await asyncio.sleep(0.2)
            channels = sorted(_raw(c).decode() for c in await redis.pubsub_channels())
            self.leaks.append(("Redis PUBSUB CHANNELS", CONTROL_CHANNEL, ",".join(channels)))
            if channels != [CONTROL_CHANNEL]:
                ledger.violation(f"Redis still has channels {channels}")
            listing = await redis.client_list()
            subscribers = sum(1 for c in listing if c.get("name") == "notify-gateway-subscriber")
            self.leaks.append(("Redis subscriber connections", str(len(pids)), str(subscribers)))
            if subscribers != len(pids):
                ledger.violation(f"Redis has {subscribers} subscriber connections, not {len(pids)}")
            self.leaks.append(("Redis connections (all)", "-", str(len(listing))))
            await asyncio.sleep(LEASE_S + 1)  # leases of connections killed with -9 expire
            lasting, leases = [], []
            async for key in redis.scan_iter(count=1000):
                ttl = await redis.ttl(key)
                if ttl < 0:
                    lasting.append(key)
                if key.startswith(LIMIT_PREFIX.encode()) and key.endswith(b":conns"):
                    leases.append(key)
            self.leaks.append(("Redis keys without expiry", "0", str(len(lasting))))
            self.leaks.append(("Redis connection leases", "0", str(len(leases))))
            if lasting:
                ledger.violation(f"Redis keys without an expiry: {lasting[:5]}")
            if leases:
                ledger.violation(f"connection leases left after {LEASE_S:g}s: {leases[:5]}")
        # Gateway processes: file descriptors and memory back near their start.
        for name, pid in self.gateway_pids().items():
            start, end = self.start_of(name, pid), self.use_of(name, pid)
            fds_start, fds_end = start.fds - start.redis_sockets, end.fds - end.redis_sockets
            self.leaks.append((f"{name} fds (less Redis pool)", str(fds_start), str(fds_end)))
            self.leaks.append((f"{name} RSS KiB", str(start.rss_kib), str(end.rss_kib)))
            if fds_end > fds_start + FD_TOLERANCE:
                ledger.violation(f"gateway {name}: {fds_end} fds, {fds_start} at the start")
            if end.rss_kib > start.rss_kib + RSS_TOLERANCE_KIB:
                ledger.violation(f"gateway {name}: RSS {end.rss_kib} KiB, {start.rss_kib} at start")

    def start_of(self, name: str, pid: int) -> ProcessUse:
        """A process's use at the start; a restarted one (same program, same settings) is
        held to its predecessor's, a restarted worker to the larger of the two workers'."""
        if self.baseline_pids.get(name) == pid or name == "A":
            return self.baseline[name]
        workers = [use for n, use in self.baseline.items() if n.startswith("B")]
        return max(workers, key=lambda use: (use.rss_kib, use.fds - use.redis_sockets))

    def http_get(self, name: str, path: str) -> bytes:
        """The body of one ``GET path`` (asked with ``Connection: close``: read to the end)."""
        with socket.create_connection(("127.0.0.1", self.ports[name]), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).partition(b"\r\n\r\n")[2]

    def collect_logs(self) -> None:
        """Gateway log events that need a cause: Redis reconnects and errors."""
        for gateway in self.gateways.values():
            for line in gateway.lines:
                with contextlib.suppress(orjson.JSONDecodeError):
                    record = orjson.loads(line)
                    self.judge_log(record)

    def judge_log(self, record: dict[str, Any]) -> None:
        event, level = record.get("event", ""), record.get("level", "")
        if event == "redis_disconnected" or level == "error":
            stamp = record.get("timestamp", "")
            try:
                at = datetime.datetime.fromisoformat(stamp).timestamp() - self.ledger.wall_offset
            except ValueError:
                at = time.monotonic()
            self.ledger.stats[f"log {event}"] += 1
            if event == "redis_disconnected" and self.ledger.explained("redis", at - EXPLAIN_S, at):
                return
            self.ledger.violation(f"gateway log {level} {event} with no fault: {record}"[:300])

    def report(self) -> int:
        ledger, options = self.ledger, self.options
        out = [
            "",
            "== soak report ==",
            f"duration {options.duration_s:g}s, seed {options.seed}; clients: fast {options.fast},"
            f" slow {options.slow}, churn {options.churn}, flood {options.flood}"
            + (f", {', '.join(options.frame_flooders)}" if options.frame_flooders else ""),
            f"channels: {options.plain_channels} plain, {options.history_channels} history"
            f"{', 1 bulk' if options.slow else ''}; {options.rate:g} messages/s each",
            f"chaos every {options.chaos_every_s:g}s from: {', '.join(options.chaos)}",
            f"published {ledger.stats['published']} (failed, outcome unknown: "
            f"{ledger.failed_publishes}); delivered {ledger.stats['delivered']}",
            "",
            "-- faults made --",
        ]
        out += [
            f"  {k[6:]:20} {v}" for k, v in sorted(ledger.stats.items()) if k.startswith("fault ")
        ]
        out.append("-- clients --")
        out += [
            f"  {k:32} {v}"
            for k, v in sorted(ledger.stats.items())
            if not k.startswith(("fault ", "log ")) and k not in ("published", "delivered")
        ]
        out.append("-- closes (kind: code reason x count) --")
        for kind, codes in sorted(ledger.closes.items()):
            out += [f"  {kind:8} {code:60} x{n}" for code, n in codes.most_common()]
        out.append("-- gateway log events needing a cause --")
        out += [
            f"  {k[4:]:32} {v}"
            for k, v in sorted(ledger.stats.items())
            if k.startswith("log ") and v
        ]
        out.append("-- leaks (what: start -> end) --")
        out += [f"  {what:44} {start} -> {end}" for what, start, end in self.leaks]
        out.append(f"-- violations: {len(ledger.violations)} (by rule: count, first) --")
        groups: dict[str, list[str]] = collections.defaultdict(list)
        for line in ledger.violations:
            rule = re.sub(r"[-\w:]*\d[-\w:]*", "N", line.partition("] ")[2])[:70]
            groups[rule].append(line)
        for lines in groups.values():
            out.append(f"  x{len(lines):<5} {lines[0]}"[:300])
        out.append("FAIL" if ledger.violations else "PASS")
        print("\n".join(out), flush=True)
        return 1 if ledger.violations else 0


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load and chaos")
    parser.add_argument("--fast", type=int, default=12, help="fast readers (all channels)")
    parser.add_argument("--slow", type=int, default=2, help="slow readers (cut with 4008)")
    parser.add_argument("--churn", type=int, default=6, help="connect/subscribe/close loops")
    parser.add_argument("--flood", type=int, default=1, help="frame flooders (expect 4029)")
    parser.add_argument("--plain-channels", type=int, default=3)
    parser.add_argument("--history-channels", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="messages/s per channel")
    parser.add_argument("--chaos-every", type=float, default=4.0, help="seconds between faults")
    parser.add_argument(
        "--chaos",
        default=",".join(CHAOS),
        help=f"comma-separated actions; default all: {', '.join(CHAOS)}",
    )
    parser.add_argument(
        "--no-frame-flooders",
        action="store_true",
        help=f"leave out the {' and '.join(FRAME_FLOODERS)} clients",
    )
    parser.add_argument(
        "--attempts-per-ip",
        type=int,
        default=1_000_000,
        help="GATEWAY_MAX_ATTEMPTS_PER_IP (default: on, high enough never to refuse, so every "
        "login also counts its address; 0 turns it off)",
    )
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to catch up at the end")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    chaos = tuple(a for a in args.chaos.split(",") if a)
    unknown = set(chaos) - set(CHAOS)
    if unknown:
        parser.error(f"unknown chaos actions {sorted(unknown)}: use {', '.join(CHAOS)}")
    frame_flooders = () if args.no_frame_flooders else FRAME_FLOODERS
    return Options(
        args.duration, args.fast, args.slow, args.churn, args.flood, args.plain_channels,
        args.history_channels, args.rate, args.chaos_every, chaos, frame_flooders,
        args.attempts_per_ip, args.settle, args.seed,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    soak = Soak(options)
    try:
        return asyncio.run(soak.run())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
