"""Sharded pub/sub over Redis Cluster (Redis 7+): SSUBSCRIBE each channel on its slot's owner.

Each channel's traffic stays on the node that owns its hash slot, so adding masters adds
pub/sub capacity. :class:`ClusterSubscriber` stands where the single-node
:class:`~gateway.subscriber.Subscriber` does: the registry sends it SUBSCRIBE and
UNSUBSCRIBE requests, and it routes them to one supervised connection per master
(:class:`_Node`, each a :class:`~gateway.subscriber.Subscriber` speaking SSUBSCRIBE).

When a node's connection drops (a master killed, a failover) its channels are handed
back to the registry as lost (their readers get a recovery or a ``gap``), the slot map
is refreshed until the cluster answers, and each channel is subscribed again on its
current owner. When a slot moves, Redis itself unsubscribes the slot's channels
(``sunsubscribe``): the registry asks for them again and they are routed afresh; a
``MOVED`` answer refreshes the slot map and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.broker.subscriber import PubSubConnection, Subscriber
from gateway.core.hub import Hub
from notify_wire.backoff import REDIS_RECONNECT, Backoff
from notify_wire.redis_config import RedisConfig

__all__ = ["ClusterSubscriber"]

log = structlog.get_logger("gateway.cluster")

_REROUTE_ERRORS = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")


class _Node:
    """One master: a supervised sharded pub/sub connection and the channels routed to it."""

    def __init__(self, cluster: ClusterSubscriber, address: str, config: RedisConfig) -> None:
        self._cluster = cluster
        self.address = address
        self.channels: set[str] = set()
        self.protocol: PubSubConnection | None = None
        self.subscriber = Subscriber(
            config,
            self,
            ping_interval_s=cluster.ping_interval_s,
            ping_timeout_s=cluster.ping_timeout_s,
            sharded=True,
        )
        self.task = asyncio.get_running_loop().create_task(self.subscriber.run())

    # -- what the registry asked for ----------------------------------------

    def subscribe(self, channels: Iterable[str]) -> None:
        fresh = [c for c in channels if c not in self.channels]
        self.channels.update(fresh)
        if self.protocol is not None:
            self._send_by_slot(fresh)

    def unsubscribe(self, channels: Iterable[str]) -> None:
        gone = [c for c in channels if c in self.channels]
        self.channels.difference_update(gone)
        if self.protocol is not None and gone:
            for group in self._cluster.by_slot(gone):
                self.protocol.unsubscribe(group)

    def _send_by_slot(self, channels: Iterable[str]) -> None:
        assert self.protocol is not None
        for group in self._cluster.by_slot(channels):  # one slot per SSUBSCRIBE
            self.protocol.subscribe(group)

    # -- PubSubListener: what the connection reports --------------------------

    def on_connected(self, redis: PubSubConnection) -> None:
        self.protocol = redis
        if self.channels:
            self._send_by_slot(sorted(self.channels))

    def on_disconnected(self) -> None:
        self.protocol = None
        self._cluster.node_lost(self)

    def on_message(self, channel: bytes, payload: bytes) -> None:
        self._cluster.registry.on_message(channel, payload)

    def message_failed(self, channel: bytes, error: Exception) -> None:
        self._cluster.registry.message_failed(channel, error)

    def flush(self) -> None:
        self._cluster.registry.flush()

    def on_subscribed(self, channel: str) -> None:
        self._cluster.registry.on_subscribed(channel)

    def on_unsubscribed(self, channel: str) -> None:
        self.channels.discard(channel)
        self._cluster.registry.on_unsubscribed(channel)

    def on_subscribe_refused(self, channels: list[str], message: str) -> None:
        self.channels.difference_update(channels)
        if message.startswith(_REROUTE_ERRORS):
            self._cluster.reroute(channels)
        else:
            self._cluster.registry.on_subscribe_refused(channels, message)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class ClusterSubscriber:
    """Routes the registry's subscriptions to the masters that own their slots."""

    def __init__(
        self,
        config: RedisConfig,
        registry: Hub,
        topology: RedisCluster,
        *,
        ping_interval_s: float = 1.0,
        ping_timeout_s: float = 2.0,
    ) -> None:
        self._config = config
        self.registry = registry
        self._topology = topology
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self._nodes: dict[str, _Node] = {}
        self._owner: dict[str, _Node] = {}  # channel -> node it was sent to
        self._lost: set[str] = set()  # channels waiting for a fresh slot map
        self._refresh = asyncio.Event()
        self._ready = asyncio.Event()
        self.reconnects = 0

    @property
    def ready(self) -> bool:
        """The slot map is known and every node that carries channels is connected."""
        return (
            self._ready.is_set()
            and not self._lost
            and all(node.protocol is not None for node in self._nodes.values() if node.channels)
        )

    @property
    def ping_latency_s(self) -> float | None:
        """The slowest connected node's last heartbeat round trip (for /status and /metrics)."""
        latencies = [
            node.subscriber.ping_latency_s
            for node in self._nodes.values()
            if node.protocol is not None and node.subscriber.ping_latency_s is not None
        ]
        return max(latencies, default=None)

    async def wait_ready(self) -> None:
        await self._ready.wait()
        while not self.ready:  # noqa: ASYNC110 - a condition over every node's connection
            await asyncio.sleep(0.01)

    def by_slot(self, channels: Iterable[str]) -> list[list[str]]:
        groups: dict[int, list[str]] = {}
        for channel in channels:
            groups.setdefault(self._topology.keyslot(channel), []).append(channel)
        return list(groups.values())

    def _node_for(self, channel: str) -> _Node:
        node = self._topology.nodes_manager.get_node_from_slot(self._topology.keyslot(channel))
        address = f"{node.host}:{node.port}"
        found = self._nodes.get(address)
        if found is None:
            config = dataclasses.replace(self._config, host=node.host, port=int(node.port))
            found = self._nodes[address] = _Node(self, address, config)
        return found

    # -- RedisCommands: what the registry asks for ---------------------------

    def subscribe(self, channels: list[str]) -> None:
        if not self._ready.is_set():
            self._lost.update(channels)  # routed once the slot map is loaded
            return
        for channel in channels:
            node = self._node_for(channel)
            self._owner[channel] = node
            node.subscribe([channel])

    def barrier(self, channel: str) -> asyncio.Future[None]:
        """:meth:`PubSubConnection.barrier` on the connection that carries ``channel``."""
        node = self._owner.get(channel)
        if node is None or node.protocol is None:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError(f"no connection carries {channel!r}"))
            return failed
        return node.protocol.barrier(channel)

    def unsubscribe(self, channels: list[str]) -> None:
        self._lost.difference_update(channels)
        for channel in channels:
            node = self._owner.pop(channel, None)
            if node is not None:
                node.unsubscribe([channel])

    # -- failures ------------------------------------------------------------

    def node_lost(self, node: _Node) -> None:
        lost = list(node.channels)
        node.channels.clear()
        for channel in lost:
            self._owner.pop(channel, None)
        self.reroute(self.registry.on_lost(lost))
        self.reconnects += 1

    def reroute(self, channels: Iterable[str]) -> None:
        """Subscribe these again once the slot map has been refreshed."""
        self._lost.update(channels)
        self._refresh.set()

    async def run(self) -> None:
        """Keep the slot map fresh and every channel on its owner, until cancelled."""
        backoff = Backoff(REDIS_RECONNECT)
        try:
            while True:
                try:
                    if self._ready.is_set():
                        await self._topology.nodes_manager.initialize()
                    else:
                        await self._topology.initialize()  # slot map and command table
                except (RedisError, OSError) as exc:
                    delay = backoff.next_delay()
                    log.warning(
                        "redis_cluster_unavailable",
                        error=str(exc)[:200],
                        retry_in_s=round(delay, 3),
                    )
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                if not self._ready.is_set():
                    self._ready.set()
                    log.info("redis_cluster_connected", masters=len(self._masters()))
                    self.registry.on_connected(self)
                self._rehome()
                lost, self._lost = sorted(self._lost), set()
                wanted = self.registry.internal_channels
                self.subscribe([c for c in lost if c in wanted or self.registry.subscribers(c)])
                self._refresh.clear()
                # While something is not where it should be, look again every second.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if self.ready else 1.0):
                        await self._refresh.wait()
                await asyncio.sleep(0.05)  # let a failover's burst of errors arrive together
        finally:
            await asyncio.gather(*(node.close() for node in self._nodes.values()))

    def _rehome(self) -> None:
        """Move channels off nodes that are no longer masters; retire idle ones."""
        masters = self._masters()
        for address, node in list(self._nodes.items()):
            if address in masters:
                continue
            moved = list(node.channels)
            node.channels.clear()
            for channel in moved:
                self._owner.pop(channel, None)
            self._lost.update(moved)
            del self._nodes[address]
            asyncio.get_running_loop().create_task(node.close())

    def _masters(self) -> set[str]:
        return {
            f"{n.host}:{n.port}"
            for n in self._topology.nodes_manager.nodes_cache.values()
            if n.server_type == "primary"
        }
