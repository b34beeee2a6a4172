"""The one Redis pub/sub connection of a gateway process, supervised.

:class:`PubSubConnection` is a lean asyncio protocol over a hiredis reader: every
chunk read from the socket is parsed into replies, messages go to the registry,
and the registry's batch is flushed at the end of the chunk, so fan-out is
batched exactly as Redis delivers. An exception while handling one reply costs that
reply only (the registry counts the message as dropped): nothing a producer publishes
can break the link.

:class:`Subscriber` owns the connection's life: connect (TLS and AUTH included),
re-subscribe every wanted channel in one command, send its own PING on the
subscribed connection and drop the link when the PONG is late (a stopped Redis
or a black-holed network is otherwise noticed only after minutes), and
reconnect with exponential backoff and full jitter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import socket
from collections import deque
from typing import Any, Protocol, cast

import hiredis
import structlog

from gateway.broker.diagnose import RedisReplyError, RedisSetupError, diagnose
from gateway.broker.probe import refine
from gateway.broker.sentinel import redis_address
from notify_wire.backoff import REDIS_RECONNECT, Backoff
from notify_wire.errors import describe
from notify_wire.redis_config import RedisConfig

__all__ = ["PubSubConnection", "Subscriber"]

log = structlog.get_logger("gateway.subscriber")

#: How much of a socket read is handed to the hiredis reader at a time (see data_received).
_FEED_BYTES = 8192


class PubSubListener(Protocol):
    """Where a pub/sub connection reports: the registry, or a cluster node standing for it."""

    def on_message(self, channel: bytes, payload: bytes) -> None: ...

    def message_failed(self, channel: bytes, error: Exception) -> None: ...

    def flush(self) -> None: ...

    def on_subscribed(self, channel: str) -> None: ...

    def on_unsubscribed(self, channel: str) -> None: ...

    def on_subscribe_refused(self, channels: list[str], message: str) -> None: ...

    def on_connected(self, redis: PubSubConnection) -> None: ...

    def on_disconnected(self) -> None: ...


class Readiness(Protocol):
    """Whether the process can deliver: its pub/sub connection(s) are up."""

    @property
    def ready(self) -> bool: ...


@dataclasses.dataclass(slots=True)
class _Pending:
    """A SUBSCRIBE/UNSUBSCRIBE awaiting one confirmation per channel."""

    kind: bytes
    channels: list[str]


class PubSubConnection(asyncio.Protocol):
    """RESP2 pub/sub connection: replies in order, messages to the registry.

    With ``sharded`` it speaks Redis 7 sharded pub/sub (SSUBSCRIBE, ``smessage``) to one
    cluster node instead.
    """

    def __init__(self, registry: PubSubListener, *, sharded: bool = False) -> None:
        self._registry = registry
        prefix = b"s" if sharded else b""
        self._message = prefix + b"message"
        self._confirmations = (prefix + b"subscribe", prefix + b"unsubscribe")
        self._commands = ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        self._reader = hiredis.Reader()
        self._expect: deque[asyncio.Future[Any] | _Pending] = deque()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[Exception | None] = self._loop.create_future()
        # Callers of barrier() in this loop iteration, sharing the PING sent at its end.
        self._barrier_waiters: list[asyncio.Future[None]] | None = None
        #: loop time of the last read: bytes arriving prove the link alive
        self.last_read = self._loop.time()

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:  # lets the OS notice a peer gone without a FIN, as redis-py does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for item in self._expect:
            if isinstance(item, asyncio.Future) and not item.done():
                error = ConnectionError("Redis connection lost")
                error.__cause__ = exc  # a TLS alert, say: what the diagnosis needs
                item.set_exception(error)
        self._expect.clear()
        if not self.lost.done():
            self.lost.set_result(exc)

    def data_received(self, data: bytes) -> None:
        registry = self._registry
        # Bound once per read, not once per message: this loop runs for every message.
        feed, gets = self._reader.feed, self._reader.gets
        on_message = registry.on_message
        message = self._message
        self.last_read = self._loop.time()
        size = len(data)
        try:
            # In slices: after each reply, once 1 KiB of its buffer is consumed, hiredis
            # moves the unread rest to the front; fed a whole read (up to 256 KiB) at once,
            # that copying grows with the square of the read's size.
            for start in range(0, size, _FEED_BYTES):
                feed(data, start, min(_FEED_BYTES, size - start))
                while (reply := gets()) is not False:
                    # A try costs nothing until it catches (Python 3.11): one per reply.
                    try:
                        if type(reply) is list and reply[0] == message:
                            on_message(reply[1], reply[2])
                        else:
                            self._on_reply(reply)
                    except Exception as exc:  # a bug: it must cost one reply, not the link
                        self._failed(reply, exc)
        except hiredis.ProtocolError:
            log.error("redis_protocol_error")
            self.abort()
        finally:
            try:
                registry.flush()
            except Exception as exc:  # a bug in the fan-out: keep the link all the same
                log.error("redis_reply_failed", error=repr(exc)[:200])

    def _failed(self, reply: Any, exc: Exception) -> None:
        # Counted as the channel's drop only when the reply is a whole message.
        if type(reply) is list and len(reply) == 3 and reply[0] == self._message:
            self._registry.message_failed(reply[1], exc)
        else:
            log.error("redis_reply_failed", error=repr(exc)[:200])

    def _on_reply(self, reply: Any) -> None:
        subscribed = self._confirmations[0]
        if type(reply) is list and reply and reply[0] in self._confirmations:
            kind, channel = reply[0], reply[1].decode("utf-8", "replace")
            head = self._expect[0] if self._expect else None
            if isinstance(head, _Pending) and head.kind == kind:
                head.channels.remove(channel) if channel in head.channels else None
                if not head.channels:
                    self._expect.popleft()
            if kind == subscribed:
                self._registry.on_subscribed(channel)
            else:
                self._registry.on_unsubscribed(channel)
            return
        if not self._expect:
            log.warning("redis_unexpected_reply")
            return
        head = self._expect.popleft()
        if isinstance(head, _Pending):
            message = str(reply) if isinstance(reply, hiredis.ReplyError) else "unexpected reply"
            if head.kind == subscribed:
                self._registry.on_subscribe_refused(head.channels, message)
            return
        if head.done():
            return
        if isinstance(reply, hiredis.ReplyError):
            head.set_exception(RedisReplyError(str(reply)))
        else:
            head.set_result(reply)

    # -- commands ----------------------------------------------------------

    def _write(self, *args: str | bytes) -> None:
        if self._transport is not None:
            self._transport.write(hiredis.pack_command(args))  # type: ignore[arg-type]

    def request(self, *args: str | bytes) -> asyncio.Future[Any]:
        """Send a command whose reply is not a pub/sub confirmation."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._transport is None:
            future.set_exception(ConnectionError("Redis connection lost"))
            return future
        self._expect.append(future)
        self._write(*args)
        return future

    def barrier(self, channel: str = "") -> asyncio.Future[None]:
        """Resolves once every message Redis sent on this connection before now has been
        handed to the registry (one connection carries every channel).

        A PING sent now is answered after them: Redis writes replies and messages to a
        connection in the order it runs the commands. Barriers asked for in one loop
        iteration share one PING; each caller has a future of its own, so cancelling one
        leaves the others. Fails with ConnectionError when the link is lost first.
        """
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self._barrier_waiters is None:
            self._barrier_waiters = []
            self._loop.call_soon(self._send_barrier)
        self._barrier_waiters.append(waiter)
        return waiter

    def _send_barrier(self) -> None:
        waiters, self._barrier_waiters = self._barrier_waiters or [], None
        self.request("PING").add_done_callback(functools.partial(_release, waiters))

    def subscribe(self, channels: list[str]) -> None:
        if self._transport is not None:
            self._expect.append(_Pending(self._confirmations[0], list(channels)))
            self._write(self._commands[0], *channels)

    def unsubscribe(self, channels: list[str]) -> None:
        if self._transport is not None:
            self._expect.append(_Pending(self._confirmations[1], list(channels)))
            self._write(self._commands[1], *channels)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _release(waiters: list[asyncio.Future[None]], pong: asyncio.Future[Any]) -> None:
    failed = pong.cancelled() or pong.exception() is not None
    for waiter in waiters:
        if waiter.done():
            continue
        if failed:
            waiter.set_exception(ConnectionError("Redis connection lost"))
        else:
            waiter.set_result(None)


class Subscriber:
    """Keeps one pub/sub connection to Redis up for the registry."""

    def __init__(
        self,
        config: RedisConfig,
        registry: PubSubListener,
        *,
        ping_interval_s: float = 1.0,
        ping_timeout_s: float = 2.0,
        sharded: bool = False,
    ) -> None:
        self._config = config
        self._ssl_context = config.ssl_context()  # a bad certificate file fails here, at once
        self._registry = registry
        self._sharded = sharded
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._protocol: PubSubConnection | None = None
        self._ready = asyncio.Event()
        self.backoff = Backoff(REDIS_RECONNECT)
        self.reconnects = 0
        #: round trip of the last heartbeat PING, for /status and /metrics
        self.ping_latency_s: float | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def connect(self) -> PubSubConnection:
        """Open and authenticate one connection; raises on any failure."""
        config = self._config
        loop = asyncio.get_running_loop()
        protocol = PubSubConnection(self._registry, sharded=self._sharded)
        ssl_context = self._ssl_context
        host, port = await redis_address(config)  # asks each sentinel in turn in Sentinel mode
        async with asyncio.timeout(config.connect_timeout_s):
            await loop.create_connection(
                lambda: protocol,
                host,
                port,
                ssl=ssl_context,
                server_hostname=config.host if ssl_context is not None else None,
            )
            try:
                if config.password is not None:
                    auth = (
                        (config.username, config.password)
                        if config.username
                        else (config.password,)
                    )
                    await protocol.request("AUTH", *auth)
                await protocol.request("CLIENT", "SETNAME", "notify-gateway-subscriber")
            except BaseException:
                protocol.abort()
                raise
        return protocol

    async def run(self) -> None:
        """Connect, serve and reconnect until cancelled.

        Raises :class:`RedisSetupError` when the very first connection fails for a
        reason retrying cannot fix (wrong password, ACL, untrusted certificate): at
        start that is a configuration error. Later the same failures are retried, as
        an unreachable Redis always is, with the diagnosis logged.
        """
        loop = asyncio.get_running_loop()
        connected_once = False
        while True:
            try:
                protocol = await self.connect()
            except (OSError, TimeoutError, RedisReplyError) as exc:
                diagnosis = await refine(diagnose(exc, self._config), self._config)
                if diagnosis.fatal and not connected_once:
                    raise RedisSetupError(diagnosis) from exc
                delay = self.backoff.next_delay()
                log.warning(
                    "redis_connect_failed",
                    redis=self._config.address,
                    cause=diagnosis.cause,
                    error=diagnosis.message,
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            started = loop.time()
            connected_once = True
            self._protocol = protocol
            self._registry.on_connected(protocol)
            self._ready.set()
            log.info("redis_connected", redis=self._config.address)
            try:
                reason = await self._watch(protocol)
            finally:
                protocol.close()
                self._ready.clear()
                self._protocol = None
                self._registry.on_disconnected()
            self.reconnects += 1
            self.backoff.lived(loop.time() - started)
            delay = self.backoff.next_delay()
            log.warning(
                "redis_disconnected",
                redis=self._config.address,
                reason=reason,
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def _watch(self, protocol: PubSubConnection) -> str:
        """Ping until the connection fails; return why it ended."""
        while not protocol.lost.done():
            done, _ = await asyncio.wait({protocol.lost}, timeout=self._ping_interval_s)
            if done:
                break
            loop = asyncio.get_running_loop()
            sent = loop.time()
            pong = protocol.request("PING")
            # A PONG queued behind a backlog of messages is late, not lost: while bytes
            # keep arriving, Redis is alive.
            while not (await asyncio.wait({pong}, timeout=self._ping_timeout_s))[0]:
                if loop.time() - protocol.last_read >= self._ping_timeout_s:
                    pong.cancel()  # settled now: the abort must not fail it unobserved
                    protocol.abort()
                    return f"no PONG within {self._ping_timeout_s:g}s"
            if pong.exception() is not None:  # the link failed: ConnectionError, or a reply
                break
            self.ping_latency_s = loop.time() - sent
        exc = protocol.lost.result() if protocol.lost.done() else None
        if exc is not None:
            return describe(exc)
        return (
            "closed by Redis (restart, CLIENT KILL, timeout, or the pubsub "
            "client-output-buffer-limit was exceeded)"
        )
