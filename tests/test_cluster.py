"""Redis Cluster: sharded pub/sub keeps each channel on its slot's master, through failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
from redis.asyncio.cluster import RedisCluster
from websockets.asyncio.client import ClientConnection

from notify_publisher import AsyncPublisher, Publisher
from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.control import revoke_message
from notify_wire.sessions import session_digest
from tests.conftest import MakeGateway, ws_url
from tests.support.cluster import RedisClusterProcesses
from tests.support.tokens import new_token
from tests.support.ws import close_code, connect_authed, recv_json, request, wait_until

CHANNELS = [f"public:shard-{i}" for i in range(12)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterProcesses]:
    processes = RedisClusterProcesses(masters=3).start()
    yield processes
    processes.cleanup()


@pytest.fixture
async def client(cluster: RedisClusterProcesses) -> AsyncIterator[RedisCluster]:
    redis = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    yield redis
    await redis.aclose()


async def session(redis: RedisCluster, user: str) -> str:
    token = new_token()
    await redis.set(f"session:{token}", orjson.dumps({"userId": user}), ex=60)
    return token


async def subscribed(url: str, token: str, channels: list[str]) -> ClientConnection:
    ws, _ = await connect_authed(url, token)
    for channel in channels:
        assert (await request(ws, {"type": "subscribe", "channel": channel}))[
            "type"
        ] == "subscribed"
    return ws


async def test_channels_spread_across_masters_and_reach_clients_on_two_gateways(
    cluster: RedisClusterProcesses, client: RedisCluster, gateway_factory: MakeGateway
) -> None:
    first = await gateway_factory(cluster.url, REDIS_CLUSTER="true")
    second = await gateway_factory(cluster.url, REDIS_CLUSTER="true")
    a = await subscribed(ws_url(first), await session(client, "a"), CHANNELS)
    b = await subscribed(ws_url(second), await session(client, "b"), CHANNELS)
    per_master = [cluster.shard_channels(node) & set(CHANNELS) for node in cluster.masters()]
    assert set().union(*per_master) == set(CHANNELS)
    assert sum(1 for owned in per_master if owned) >= 2  # really spread over several masters
    for channel in CHANNELS:
        assert await client.spublish(channel, orjson.dumps(channel)) == 2  # one per gateway
    for ws in (a, b):
        got = {(await recv_json(ws))["data"] for _ in CHANNELS}
        assert got == set(CHANNELS)
        await ws.close()


async def test_revocation_reaches_gateways_through_the_sharded_control_channel(
    cluster: RedisClusterProcesses, client: RedisCluster, gateway_factory: MakeGateway
) -> None:
    gateway = await gateway_factory(cluster.url, REDIS_CLUSTER="true")
    token = await session(client, "r")
    ws, _ = await connect_authed(ws_url(gateway), token)
    assert await client.spublish(CONTROL_CHANNEL, revoke_message(session_digest(token))) == 1
    assert await close_code(ws) == 4001


async def test_slot_migration_resubscribes_on_the_new_owner(
    cluster: RedisClusterProcesses, client: RedisCluster, gateway_factory: MakeGateway
) -> None:
    gateway = await gateway_factory(cluster.url, REDIS_CLUSTER="true")
    channel = "public:migrating"
    ws = await subscribed(ws_url(gateway), await session(client, "m"), [channel])
    slot = client.keyslot(channel)
    source = client.nodes_manager.get_node_from_slot(slot)
    target = next(n for n in client.get_primaries() if n.name != source.name)
    source_id = cluster.cli(int(source.port), "CLUSTER", "MYID").strip()
    target_id = cluster.cli(int(target.port), "CLUSTER", "MYID").strip()
    cluster.cli(int(target.port), "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
    cluster.cli(int(source.port), "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
    for keys in (cluster.cli(int(source.port), "CLUSTER", "GETKEYSINSLOT", str(slot), "100"),):
        assert not keys.split()  # the channel's slot holds no keys here: nothing to MIGRATE
    for node in client.get_primaries():
        cluster.cli(int(node.port), "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
    cluster.wait_ok()
    assert await recv_json(ws, timeout_s=10) == {"type": "gap", "channel": channel}

    async def on_target() -> bool:
        return channel in cluster.shard_channels(
            next(n for n in cluster.nodes if n.port == int(target.port))
        )

    await wait_until(on_target, timeout_s=10)
    await client.nodes_manager.initialize()
    assert await client.spublish(channel, '"moved"') == 1
    assert (await recv_json(ws))["data"] == "moved"
    await ws.close()


async def test_master_failover_resubscribes_on_the_promoted_replica(
    gateway_factory: MakeGateway,
) -> None:
    processes = RedisClusterProcesses(masters=3, replicas=1).start()
    try:
        client = RedisCluster(host="127.0.0.1", port=processes.nodes[0].port)
        gateway = await gateway_factory(processes.url, REDIS_CLUSTER="true")
        ws = await subscribed(ws_url(gateway), await session(client, "f"), CHANNELS)
        victim_node = client.nodes_manager.get_node_from_slot(client.keyslot(CHANNELS[0]))
        victim = next(n for n in processes.nodes if n.port == int(victim_node.port))
        lost = {
            c
            for c in CHANNELS
            if client.nodes_manager.get_node_from_slot(client.keyslot(c)).name == victim_node.name
        }
        victim.kill()
        gaps = set()
        async with asyncio.timeout(30):
            while gaps != lost:
                frame = await recv_json(ws, timeout_s=30)
                assert frame["type"] == "gap", frame
                gaps.add(frame["channel"])
        await wait_until(lambda: _ready(gateway), timeout_s=30)
        await client.nodes_manager.initialize()
        for channel in CHANNELS:
            await client.spublish(channel, orjson.dumps(channel))
        got = {(await recv_json(ws, timeout_s=10))["data"] for _ in CHANNELS}
        assert got == set(CHANNELS)
        await ws.close()
        await client.aclose()
    finally:
        processes.cleanup()


async def _ready(gateway: object) -> bool:
    return bool(gateway.subscriber.ready)  # type: ignore[attr-defined]


async def test_sessions_limits_and_rechecks_work_on_a_cluster(
    cluster: RedisClusterProcesses, client: RedisCluster, gateway_factory: MakeGateway
) -> None:
    gateway = await gateway_factory(
        cluster.url,
        REDIS_CLUSTER="true",
        GATEWAY_SESSION_RECHECK_SECONDS="0.2",
        GATEWAY_MAX_CONNECTIONS_PER_USER="1",
        GATEWAY_MAX_ATTEMPTS_PER_IP="100",
    )
    token, other = await session(client, "c1"), await session(client, "c2")
    ws, _ = await connect_authed(ws_url(gateway), token)
    kept, _ = await connect_authed(ws_url(gateway), other)
    await client.delete(f"session:{token}")
    assert await close_code(ws) == 4001  # the re-check pipelines EXISTS across slots
    assert await request(kept, {"type": "ping"}) == {"type": "pong"}  # leases renewed fine
    assert await client.zcard("notify-gateway:{u:c2}:conns") == 1
    await kept.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_publisher_library_on_a_cluster(
    cluster: RedisClusterProcesses, client: RedisCluster, gateway_factory: MakeGateway, kind: str
) -> None:
    gateway = await gateway_factory(cluster.url, REDIS_CLUSTER="true")
    sync = Publisher.from_url(cluster.url, cluster=True) if kind == "sync" else None
    aio = AsyncPublisher.from_url(cluster.url, cluster=True) if kind == "async" else None

    async def call(name: str, *args: object, **kwargs: object) -> object:
        if sync is not None:
            return await asyncio.to_thread(getattr(sync, name), *args, **kwargs)
        assert aio is not None
        return await getattr(aio, name)(*args, **kwargs)

    try:
        token = str(await call("create_session", f"lib-{kind}"))
        channel = f"public:lib-cluster-{kind}"
        ws = await subscribed(ws_url(gateway), token, [channel])
        assert await call("publish", channel, {"via": "spublish"}) == 1
        assert (await recv_json(ws))["data"] == {"via": "spublish"}
        assert await call("publish", channel, "kept", history=True) == 1
        assert (await recv_json(ws))["offset"] == 1
        assert await call("revoke_session", token) is True
        assert await close_code(ws) == 4001
    finally:
        if sync is not None:
            sync.close()
        if aio is not None:
            await aio.close()


async def test_a_denied_channel_costs_only_that_channel_on_its_shard(
    cluster: RedisClusterProcesses, client: RedisCluster, gateway_factory: MakeGateway
) -> None:
    """Two channels of one slot go in one SSUBSCRIBE: Redis refuses it whole (issue 13)."""
    slots = {client.keyslot(f"public:ok-{i}"): f"public:ok-{i}" for i in range(3000)}
    denied = next(
        f"public:denied-{j}" for j in range(3000) if client.keyslot(f"public:denied-{j}") in slots
    )
    allowed = slots[client.keyslot(denied)]
    everything = ["on", ">pw", "~*", "&*", "+@all"]
    for node in cluster.masters():  # ACLs are per node
        cluster.cli(node.port, "ACL", "SETUSER", "acl-gateway", "reset", *everything)
    try:
        url = f"redis://acl-gateway:pw@127.0.0.1:{cluster.nodes[0].port}/0"
        gateway = await gateway_factory(url, REDIS_CLUSTER="true")
        ws = await subscribed(ws_url(gateway), await session(client, "acl"), [allowed, denied])
        for node in cluster.masters():  # disconnects the node's subscriber: it re-subscribes
            cluster.cli(
                node.port, "ACL", "SETUSER", "acl-gateway", "resetchannels",
                "&public:ok-*", f"&{CONTROL_CHANNEL}",
            )  # fmt: skip
        frames = [await recv_json(ws, timeout_s=10) for _ in range(2)]
        assert {"type": "gap", "channel": allowed} in frames
        (refused,) = [f for f in frames if f["type"] == "error"]
        assert (refused["code"], repr(denied) in refused["message"]) == ("unavailable", True)

        async def resubscribed() -> bool:
            return allowed in set().union(*map(cluster.shard_channels, cluster.masters()))

        await wait_until(resubscribed, timeout_s=10)
        assert await client.spublish(allowed, '"still allowed"') == 1
        assert (await recv_json(ws))["data"] == "still allowed"
        await ws.close()
        await gateway.stop()  # before its user goes
    finally:
        for node in cluster.masters():
            cluster.cli(node.port, "ACL", "DELUSER", "acl-gateway")
