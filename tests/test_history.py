"""History and recovery end to end: real Redis streams, real gateways, real clients."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from websockets.asyncio.client import ClientConnection

from gateway.server import Gateway
from notify_wire.history import PUBLISH_SCRIPT, HistoryKeys
from tests.conftest import MakeGateway, MakeSession, ws_url
from tests.support.history import PREFIX, publish_with_history
from tests.support.ws import connect_authed, recv_json, request


async def subscribe(ws: ClientConnection, channel: str, **since: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
    if since:
        frame["since"] = since
    reply = await request(ws, frame)
    assert reply["type"] == "subscribed", reply
    return reply


async def test_history_messages_carry_offset_and_epoch(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    _, _, epoch = await publish_with_history(redis, "public:h1", '"before"')
    ws, _ = await connect_authed(ws_url(gateway), await make_session("1"))
    async with ws:
        reply = await subscribe(ws, "public:h1")
        assert (reply["offset"], reply["epoch"]) == (1, epoch)
        assert "recovered" not in reply
        receivers, offset, _ = await publish_with_history(redis, "public:h1", '{"n":2}')
        assert (receivers, offset) == (1, 2)
        assert await recv_json(ws) == {
            "type": "message",
            "channel": "public:h1",
            "data": {"n": 2},
            "offset": 2,
            "epoch": epoch,
        }


async def test_reconnect_with_since_gets_exactly_the_missed_messages_then_live(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    token = await make_session("2")
    ws, _ = await connect_authed(ws_url(gateway), token)
    reply = await subscribe(ws, "public:h2")
    assert reply.get("offset") is None  # no history yet
    _, _, epoch = await publish_with_history(redis, "public:h2", "1")
    assert (await recv_json(ws))["offset"] == 1
    await ws.close()
    for n in (2, 3, 4):
        await publish_with_history(redis, "public:h2", str(n))
    ws, _ = await connect_authed(ws_url(gateway), token)
    async with ws:
        reply = await subscribe(ws, "public:h2", offset=1, epoch=epoch)
        assert (reply["recovered"], reply["offset"], reply["epoch"]) == (True, 4, epoch)
        missed = [await recv_json(ws) for _ in range(3)]
        assert [(m["offset"], m["data"]) for m in missed] == [(2, 2), (3, 3), (4, 4)]
        await publish_with_history(redis, "public:h2", "5")
        assert (await recv_json(ws))["offset"] == 5
        assert await request(ws, {"type": "ping"}) == {"type": "pong"}  # nothing else queued


async def test_unknown_epoch_and_too_old_offset_are_not_recovered(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_REPLAY="5")
    for n in range(250):
        _, _, epoch = await publish_with_history(redis, "public:h3", str(n), maxlen=10)
    ws, _ = await connect_authed(ws_url(gateway), await make_session("3"))
    async with ws:
        stale = await subscribe(ws, "public:h3", offset=3, epoch="0badc0de")
        assert (stale["recovered"], stale["offset"], stale["epoch"]) == (False, 250, epoch)
        await request(ws, {"type": "unsubscribe", "channel": "public:h3"})
        too_many = await subscribe(ws, "public:h3", offset=200, epoch=epoch)  # 50 > max replay
        assert too_many["recovered"] is False
        await request(ws, {"type": "unsubscribe", "channel": "public:h3"})
        recent = await subscribe(ws, "public:h3", offset=247, epoch=epoch)
        assert recent["recovered"] is True
        assert [(await recv_json(ws))["offset"] for _ in range(3)] == [248, 249, 250]


async def test_trimmed_window_is_not_recovered(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    for n in range(300):
        _, _, epoch = await publish_with_history(redis, "public:h4", str(n), maxlen=10)
    ws, _ = await connect_authed(ws_url(gateway), await make_session("4"))
    async with ws:
        reply = await subscribe(ws, "public:h4", offset=0, epoch=epoch)  # offset 1 was trimmed
        assert reply["recovered"] is False


async def test_since_on_a_plain_channel_is_not_recovered(
    gateway: Gateway, make_session: MakeSession
) -> None:
    ws, _ = await connect_authed(ws_url(gateway), await make_session("5"))
    async with ws:
        reply = await subscribe(ws, "public:plain", offset=3, epoch="abc")
        assert reply == {"type": "subscribed", "channel": "public:plain", "recovered": False}
        bad = await request(
            ws, {"type": "subscribe", "channel": "public:x", "since": {"offset": -1}, "ref": 1}
        )
        assert (bad["code"], bad["ref"]) == ("bad_request", 1)


async def test_subscriber_reconnect_replays_instead_of_gap(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    """CLIENT KILL TYPE pubsub while a producer publishes with history at a steady rate."""
    ws, _ = await connect_authed(ws_url(gateway), await make_session("6"))
    await subscribe(ws, "public:h6")
    total = 300

    async def produce() -> None:
        for n in range(1, total + 1):
            await publish_with_history(redis, "public:h6", str(n))
            if n in (100, 200):
                await redis.client_kill_filter(_type="pubsub")
            await asyncio.sleep(0.002)  # a steady rate, not synchronisation

    producer = asyncio.create_task(produce())
    offsets = []
    while len(offsets) < total:
        frame = await recv_json(ws, timeout_s=10)
        assert frame["type"] == "message", frame  # never a gap: history fills it
        offsets.append(frame["offset"])
    await producer
    assert offsets == list(range(1, total + 1))
    assert gateway.subscriber.reconnects == 2
    await ws.close()


async def test_client_moved_to_another_gateway_resumes_without_loss(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    first, second = await gateway_factory(), await gateway_factory()
    token = await make_session("7")
    ws, _ = await connect_authed(ws_url(first), token)
    await subscribe(ws, "public:h7")
    seen = []
    for n in range(1, 6):
        _, _, epoch = await publish_with_history(redis, "public:h7", str(n))
        seen.append((await recv_json(ws))["offset"])
    await ws.close()  # the load balancer moves the client
    for n in range(6, 11):
        await publish_with_history(redis, "public:h7", str(n))
    ws, _ = await connect_authed(ws_url(second), token)
    async with ws:
        reply = await subscribe(ws, "public:h7", offset=seen[-1], epoch=epoch)
        assert reply["recovered"] is True
        seen += [(await recv_json(ws))["offset"] for _ in range(5)]
        await publish_with_history(redis, "public:h7", "11")
        seen.append((await recv_json(ws))["offset"])
    assert seen == list(range(1, 12))


async def test_quiet_history_channel_is_recovered_after_a_subscriber_reconnect(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    await publish_with_history(redis, "public:h8", "1")
    ws, _ = await connect_authed(ws_url(gateway), await make_session("8"))
    async with ws:
        await subscribe(ws, "public:h8")  # no message has passed through the gateway yet
        await redis.client_kill_filter(_type="pubsub")
        await publish_with_history(redis, "public:h8", "2")  # may fall into the outage
        frame = await recv_json(ws)
        assert (frame["type"], frame.get("offset")) == ("message", 2)  # replayed, not a gap


async def test_a_forged_envelope_cannot_rewind_a_channel_or_replay_it_twice(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    """A plain PUBLISH of an envelope with a known epoch and an old offset (issue 13)."""
    ws, _ = await connect_authed(ws_url(gateway), await make_session("9"))
    async with ws:
        await subscribe(ws, "public:h9")
        for n in range(1, 6):
            _, _, epoch = await publish_with_history(redis, "public:h9", str(n))
            assert (await recv_json(ws))["offset"] == n
        for forged in (1, 5):  # behind the position, and at it (a duplicate)
            envelope = b'\x00ngh1 %d %s {"forged":true}' % (forged, epoch.encode())
            await redis.publish("public:h9", envelope)
        await redis.client_kill_filter(_type="pubsub")
        await publish_with_history(redis, "public:h9", "6")  # may fall into the outage
        frame = await recv_json(ws)
        assert (frame["offset"], frame["data"]) == (6, 6)  # recovered from 5, not from 1
        assert await request(ws, {"type": "ping"}) == {"type": "pong"}  # no 2-5 again
    assert gateway.hub.dropped["stale_offset"] == 2


async def test_the_history_script_refuses_an_epoch_gateways_would_drop(redis: Redis) -> None:
    keys = HistoryKeys.for_channel(PREFIX, "public:h10")
    with pytest.raises(ResponseError, match="epoch must be 1 to 32 lowercase hex digits"):
        await redis.eval(
            PUBLISH_SCRIPT, 2, keys.meta, keys.stream, "public:h10", "1", 10, 60, 'ab"},"x'
        )
    assert await redis.exists(keys.meta, keys.stream) == 0


async def test_a_replay_larger_than_the_replay_byte_limit_is_not_recovered(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    """Issue 13: 1000 x 100 KB and since offset 0 took 200 MB of gateway memory for one request."""
    gateway = await gateway_factory(GATEWAY_MAX_REPLAY_BYTES="400000")
    for _ in range(10):
        _, _, epoch = await publish_with_history(redis, "public:h11", b'"%s"' % (b"x" * 99_000))
    ws, _ = await connect_authed(ws_url(gateway), await make_session("11"))
    async with ws:
        whole = await subscribe(ws, "public:h11", offset=0, epoch=epoch)  # ~1 MB missed
        assert (whole["recovered"], whole["offset"]) == (False, 10)
        assert await request(ws, {"type": "ping"}) == {"type": "pong"}  # no replay follows
        await request(ws, {"type": "unsubscribe", "channel": "public:h11"})
        tail = await subscribe(ws, "public:h11", offset=7, epoch=epoch)  # ~300 KB: fits
        assert (tail["recovered"], tail["offset"]) == (True, 10)
        assert [(await recv_json(ws))["offset"] for _ in range(3)] == [8, 9, 10]


async def test_many_channels_are_recovered_a_few_at_a_time_none_forgotten(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    channels = [f"public:many-{n}" for n in range(12)]  # three times the replays read at once
    for channel in channels:
        await publish_with_history(redis, channel, "1")
    ws, _ = await connect_authed(ws_url(gateway), await make_session("12"))
    async with ws:
        for channel in channels:
            await subscribe(ws, channel)
        await redis.client_kill_filter(_type="pubsub")
        for channel in channels:
            await publish_with_history(redis, channel, "2")  # some fall into the outage
        frames = [await recv_json(ws, timeout_s=10) for _ in channels]
        assert sorted((f["type"], f["channel"], f["offset"]) for f in frames) == sorted(
            ("message", channel, 2) for channel in channels
        )


async def test_a_subscribe_without_since_delivers_nothing_at_or_before_its_position(
    gateway: Gateway, make_session: MakeSession, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message published after Redis confirmed the subscription but before the gateway read
    the channel's position is held for the client; the reply's offset already covers it, so it
    must not follow the reply (found by the soak: subscribed offset N, then message N)."""
    await publish_with_history(redis, "public:h-first", '"old"')
    read, on_message = gateway.history.read, gateway.hub.on_message
    arrived = asyncio.Event()

    def note_message(channel: bytes, payload: bytes) -> None:
        on_message(channel, payload)
        arrived.set()

    async def read_after_a_publish(channel: str, since: Any) -> Any:
        await publish_with_history(redis, "public:h-first", '"meanwhile"')
        await arrived.wait()  # held for the joining client
        return await read(channel, since)

    monkeypatch.setattr(gateway.hub, "on_message", note_message)
    monkeypatch.setattr(gateway.history, "read", read_after_a_publish)
    ws, _ = await connect_authed(ws_url(gateway), await make_session("first"))
    async with ws:
        reply = await subscribe(ws, "public:h-first")
        assert reply["offset"] == 2
        monkeypatch.undo()
        await publish_with_history(redis, "public:h-first", '"next"')
        message = await recv_json(ws)
        assert (message["offset"], message["data"]) == (3, "next")


async def test_a_copy_arriving_late_on_the_pubsub_link_is_not_delivered_after_the_replay(
    gateway: Gateway, make_session: MakeSession, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history read (on a pooled connection) can answer before the pub/sub connection has
    delivered a message published ahead of it; the client must not get that message again
    live after its replay (found by the soak: offset N after N)."""
    _, _, epoch = await publish_with_history(redis, "public:h-late", "1")
    read = gateway.history.read
    protocol = gateway.subscriber._protocol
    assert protocol is not None
    link = protocol._transport
    assert link is not None

    async def read_with_a_copy_in_flight(channel: str, since: Any) -> Any:
        link.pause_reading()  # the copy of message 2 waits in the socket, unread
        await publish_with_history(redis, "public:h-late", "2")
        return await read(channel, since)

    monkeypatch.setattr(gateway.history, "read", read_with_a_copy_in_flight)
    ws, _ = await connect_authed(ws_url(gateway), await make_session("late"))
    async with ws:
        reply = await subscribe(ws, "public:h-late", offset=0, epoch=epoch)
        assert (reply["recovered"], reply["offset"]) == (True, 2)
        assert [(await recv_json(ws))["offset"] for _ in range(2)] == [1, 2]  # the replay
        monkeypatch.undo()
        link.resume_reading()  # the late copy of 2 arrives now
        await publish_with_history(redis, "public:h-late", "3")
        assert (await recv_json(ws))["offset"] == 3


async def test_a_copy_arriving_late_after_a_reconnect_is_not_delivered_after_the_recovery(
    gateway: Gateway, make_session: MakeSession, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race for the gateway's own recovery of a channel after its pub/sub
    connection came back: the replay, then the late live copy, must not both arrive."""
    await publish_with_history(redis, "public:h-late2", "1")
    ws, _ = await connect_authed(ws_url(gateway), await make_session("late2"))
    async with ws:
        await subscribe(ws, "public:h-late2")
        read = gateway.history.read
        loop = asyncio.get_running_loop()

        async def read_with_a_copy_in_flight(channel: str, since: Any) -> Any:
            protocol = gateway.subscriber._protocol
            assert protocol is not None
            assert protocol._transport is not None
            protocol._transport.pause_reading()  # the copy of message 2 waits, unread
            await publish_with_history(redis, "public:h-late2", "2")
            replay = await read(channel, since)
            loop.call_soon(protocol._transport.resume_reading)  # it arrives right after
            return replay

        monkeypatch.setattr(gateway.history, "read", read_with_a_copy_in_flight)
        # The start-up ACL check subscribes on connections of its own: let it finish first.
        await asyncio.wait_for(gateway.access_checked.wait(), timeout=10)
        assert await redis.client_kill_filter(_type="pubsub") == 1
        assert (await recv_json(ws))["offset"] == 2  # recovered
        monkeypatch.undo()
        await publish_with_history(redis, "public:h-late2", "3")
        assert (await recv_json(ws))["offset"] == 3
