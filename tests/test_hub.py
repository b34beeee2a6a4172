"""Hub bookkeeping: one Redis subscription per channel, joins, batching, gaps, recovery.

The sinks here are recording test doubles of the hub's own client interface; the
end-to-end behaviour against real Redis and sockets is in test_gateway.py and test_history.py.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.core.fanout import DropLog
from gateway.core.hub import Hub, SubscriptionRefused
from notify_wire.history import Position


class RecordingSink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.refused: list[str] = []
        self.overflowed: list[int] = []

    def send(self, data: bytes) -> None:
        self.writes.append(data)

    def subscription_refused(self, channel: str, message: str) -> None:
        self.refused.append(channel)

    def overflow(self, buffered: int) -> None:
        self.overflowed.append(buffered)

    def frames(self) -> list[dict[str, object]]:
        return frames_of(b"".join(self.writes))


def frames_of(data: bytes) -> list[dict[str, object]]:
    out = []
    while data:
        size, head = data[1], 2
        if size == 126:
            size, head = int.from_bytes(data[2:4]), 4
        out.append(orjson.loads(data[head : head + size]))
        data = data[head + size :]
    return out


class RecordingRedis:
    def __init__(self) -> None:
        self.commands: list[tuple[str, list[str]]] = []

    def subscribe(self, channels: list[str]) -> None:
        self.commands.append(("SUBSCRIBE", channels))

    def unsubscribe(self, channels: list[str]) -> None:
        self.commands.append(("UNSUBSCRIBE", channels))

    def barrier(self, channel: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)  # nothing is ever in flight here
        return future


def setup(**kwargs: object) -> tuple[Hub, RecordingRedis]:
    hub = Hub(**kwargs)  # type: ignore[arg-type]
    redis = RecordingRedis()
    hub.on_connected(redis)
    return hub, redis


async def live(hub: Hub, sink: RecordingSink, channel: str) -> None:
    """Join and activate, confirming in Redis's place when needed."""
    joined = hub.join(sink, channel)
    if not joined.done():
        hub.on_subscribed(channel)
    await joined
    assert hub.activate(sink, channel) == b""


async def test_one_subscribe_per_channel_resolved_by_confirmation() -> None:
    hub, redis = setup()
    a, b = RecordingSink(), RecordingSink()
    first, second = hub.join(a, "news"), hub.join(b, "news")
    assert redis.commands == [("SUBSCRIBE", ["news"])]
    assert not first.done()
    hub.on_subscribed("news")
    await asyncio.gather(first, second)
    third = hub.join(RecordingSink(), "news")
    assert third.done()  # already confirmed: no new command
    assert redis.commands == [("SUBSCRIBE", ["news"])]


async def test_frames_between_confirmation_and_activation_are_handed_over() -> None:
    hub, _ = setup()
    sink = RecordingSink()
    joined = hub.join(sink, "news")
    hub.on_subscribed("news")
    await joined
    hub.on_message(b"news", b"1")
    hub.flush()
    assert sink.writes == []  # not live yet
    assert [f["data"] for f in frames_of(hub.activate(sink, "news"))] == [1]
    hub.on_message(b"news", b"2")
    hub.flush()
    assert [f["data"] for f in sink.frames()] == [2]


async def test_activation_cutoff_drops_replayed_history_only() -> None:
    hub, _ = setup()
    sink = RecordingSink()
    joined = hub.join(sink, "h")
    hub.on_subscribed("h")
    await joined
    for offset in (4, 5, 6):
        hub.on_message(b"h", b"\x00ngh1 %d e1 %d" % (offset, offset))
    hub.on_message(b"h", b"plain")
    frames = frames_of(hub.activate(sink, "h", cutoff=5))
    assert [(f.get("offset"), f["data"]) for f in frames] == [(6, 6), (None, "plain")]
    assert frames[0]["epoch"] == "e1"


async def test_last_reader_unsubscribes_once() -> None:
    hub, redis = setup()
    a, b = RecordingSink(), RecordingSink()
    await live(hub, a, "news")
    await live(hub, b, "news")
    hub.leave(a, ["news"])
    assert redis.commands[-1] == ("SUBSCRIBE", ["news"])
    hub.leave(b, ["news"])
    assert redis.commands[-1] == ("UNSUBSCRIBE", ["news"])
    hub.on_unsubscribed("news")
    assert hub.subscription_count == 0


async def test_leaving_before_confirmation_unsubscribes_when_confirmed() -> None:
    hub, redis = setup()
    a = RecordingSink()
    joined = hub.join(a, "news")
    hub.leave(a, ["news"])
    assert joined.cancelled()
    hub.on_subscribed("news")
    assert redis.commands == [("SUBSCRIBE", ["news"]), ("UNSUBSCRIBE", ["news"])]


async def test_rejoining_while_unsubscribe_is_in_flight() -> None:
    hub, redis = setup()
    a, b = RecordingSink(), RecordingSink()
    await live(hub, a, "news")
    hub.leave(a, ["news"])
    joined = hub.join(b, "news")
    hub.on_message(b"news", b"1")  # still arriving before the UNSUBSCRIBE took effect
    hub.flush()
    hub.on_unsubscribed("news")
    assert redis.commands[-1] == ("SUBSCRIBE", ["news"])
    hub.on_subscribed("news")
    await joined
    assert hub.activate(b, "news") == b""
    assert b.writes == []


async def test_batch_is_one_write_per_sink() -> None:
    hub, _ = setup()
    a, b = RecordingSink(), RecordingSink()
    await live(hub, a, "x")
    await live(hub, a, "y")
    await live(hub, b, "x")
    for payload in (b"1", b"2"):
        hub.on_message(b"x", payload)
    hub.on_message(b"y", b"3")
    hub.flush()
    assert len(a.writes) == 1
    assert len(b.writes) == 1
    assert [f["data"] for f in a.frames()] == [1, 2, 3]
    assert [f["data"] for f in b.frames()] == [1, 2]
    assert hub.messages_received == 3
    assert hub.deliveries == 5


async def test_mixed_batch_gathers_only_readers_of_several_channels() -> None:
    hub, _ = setup()
    a, b, c = RecordingSink(), RecordingSink(), RecordingSink()
    await live(hub, a, "x")
    await live(hub, a, "y")
    await live(hub, b, "y")
    await live(hub, c, "z")
    for channel, payload in ((b"x", b"1"), (b"z", b"2"), (b"y", b"3"), (b"x", b"4")):
        hub.on_message(channel, payload)
    hub.flush()
    assert [len(s.writes) for s in (a, b, c)] == [1, 1, 1]
    assert [f["data"] for f in a.frames()] == [1, 4, 3]  # channel by channel, in batch order
    assert [f["data"] for f in b.frames()] == [3]
    assert [f["data"] for f in c.frames()] == [2]
    assert hub.deliveries == 5
    hub.leave(a, ["x"])  # a now reads y alone
    hub.on_message(b"x", b"5")
    hub.on_message(b"y", b"6")
    hub.flush()
    assert [f["data"] for f in a.frames()] == [1, 4, 3, 6]
    assert [f["data"] for f in b.frames()] == [3, 6]


async def test_reconnect_resubscribes_in_one_command_and_sends_gaps() -> None:
    hub, _ = setup()
    a = RecordingSink()
    await live(hub, a, "x")
    await live(hub, a, "y")
    hub.on_disconnected()
    fresh = RecordingRedis()
    hub.on_connected(fresh)
    assert fresh.commands == [("SUBSCRIBE", ["x", "y"])]
    hub.on_subscribed("x")
    hub.on_subscribed("y")
    assert a.frames() == [{"type": "gap", "channel": "x"}, {"type": "gap", "channel": "y"}]


async def test_history_channels_are_recovered_instead_of_gapped() -> None:
    started: list[tuple[str, Position, object]] = []
    hub, _ = setup(on_resubscribed=lambda c, p, t: started.append((c, p, t)))
    a = RecordingSink()
    await live(hub, a, "h")
    hub.on_message(b"h", b"\x00ngh1 7 e0 7")
    hub.flush()
    a.writes.clear()
    hub.on_disconnected()
    hub.on_connected(RecordingRedis())
    hub.on_subscribed("h")
    assert [(c, p) for c, p, _ in started] == [("h", Position(7, "e0"))]
    hub.on_message(b"h", b"\x00ngh1 9 e0 9")  # live, while the replay is read
    hub.on_message(b"h", b"\x00ngh1 10 e0 10")
    hub.flush()
    assert a.writes == []
    replay = [b"\x81\x018", b"\x81\x019"]  # frames of offsets 8 and 9, as the reader builds
    hub.finish_recovery("h", started[0][2], replay, cutoff=9)
    assert a.frames() == [
        8,
        9,
        {"type": "message", "channel": "h", "data": 10, "offset": 10, "epoch": "e0"},
    ]


async def test_unrecoverable_history_falls_back_to_a_gap() -> None:
    tickets: list[object] = []
    hub, _ = setup(on_resubscribed=lambda c, p, t: tickets.append(t))
    a = RecordingSink()
    await live(hub, a, "h")
    hub.on_message(b"h", b"\x00ngh1 1 e0 1")
    hub.flush()
    a.writes.clear()
    hub.on_disconnected()
    hub.on_connected(RecordingRedis())
    hub.on_subscribed("h")
    hub.on_message(b"h", b"\x00ngh1 5 e0 5")
    hub.finish_recovery("h", tickets[0], None, cutoff=1)
    assert [f["type"] for f in a.frames()] == ["gap", "message"]


async def test_a_reader_live_during_a_recovery_gets_no_replayed_message_twice() -> None:
    """A client that resumed by itself while the channel was recovering already has what the
    channel's replay holds; it gets only what arrived after it went live (soak finding)."""
    tickets: list[object] = []
    hub, _ = setup(on_resubscribed=lambda c, p, t: tickets.append(t))
    a = RecordingSink()
    await live(hub, a, "h")
    hub.on_message(b"h", b"\x00ngh1 7 e0 7")
    hub.flush()
    hub.on_disconnected()
    hub.on_connected(RecordingRedis())
    hub.on_subscribed("h")  # the channel's recovery from 7 starts
    hub.on_message(b"h", b"\x00ngh1 9 e0 9")  # held for the recovery
    b = RecordingSink()
    await hub.join(b, "h")  # b resumes by itself: its own replay is 8 and 9
    assert hub.activate(b, "h", cutoff=9) == b""
    hub.on_message(b"h", b"\x00ngh1 10 e0 10")  # after b went live
    hub.flush()
    assert b.writes == []  # still held: the channel is recovering
    replay = [b"\x81\x018", b"\x81\x019"]
    assert hub.finish_recovery("h", tickets[0], replay, cutoff=9)
    assert [f if isinstance(f, int) else f["offset"] for f in a.frames()] == [7, 8, 9, 10]
    assert [f["offset"] for f in b.frames()] == [10]


async def test_a_replay_read_for_an_earlier_recovery_does_not_finish_the_current_one() -> None:
    tickets: list[object] = []
    hub, _ = setup(on_resubscribed=lambda c, p, t: tickets.append(t))
    a = RecordingSink()
    await live(hub, a, "h")
    hub.on_message(b"h", b"\x00ngh1 7 e0 7")
    hub.flush()
    for _ in range(2):  # the link drops again while the first replay is being read
        hub.on_disconnected()
        hub.on_connected(RecordingRedis())
        hub.on_subscribed("h")
    first, current = tickets
    a.writes.clear()
    assert not hub.finish_recovery("h", first, [b"\x81\x018"], cutoff=8)
    assert a.writes == []
    assert hub.finish_recovery("h", current, [b"\x81\x018"], cutoff=8)
    assert a.frames() == [8]


async def test_refused_subscription_fails_the_join() -> None:
    hub, _ = setup()
    a = RecordingSink()
    joined = hub.join(a, "secret")
    hub.on_subscribe_refused(["secret"], "NOPERM no permissions")
    with pytest.raises(SubscriptionRefused, match="NOPERM"):
        await joined
    assert hub.subscription_count == 0


async def test_fanout_is_timed_once_per_batch_not_per_delivery() -> None:
    timings: list[float] = []
    hub, _ = setup(observe_fanout=timings.append)
    for _ in range(50):
        await live(hub, RecordingSink(), "x")
    hub.flush()  # nothing from Redis: no observation
    assert timings == []
    for payload in (b"1", b"2", b"3"):
        hub.on_message(b"x", payload)
    hub.flush()
    assert len(timings) == 1
    assert timings[0] >= 0
    assert hub.deliveries == 150


async def test_scrape_time_counts_and_top_channels() -> None:
    hub, _ = setup(internal={"internal": lambda _payload: None})
    hub.on_subscribed("internal")
    a, b, c = RecordingSink(), RecordingSink(), RecordingSink()
    for sink in (a, b, c):
        await live(hub, sink, "busy")
    await live(hub, a, "quiet")
    pending = hub.join(b, "pending")  # Redis has not confirmed yet
    assert hub.subscription_count == 5
    assert hub.redis_channel_count == 3  # "internal", "busy" and "quiet"
    assert hub.top_channels(2) == [("busy", 3), ("pending", 1)]
    # The internal channel has no subscribers: it is not listed.
    assert hub.top_channels(10) == [("busy", 3), ("pending", 1), ("quiet", 1)]
    pending.cancel()


async def test_a_history_position_moves_forward_only_within_its_epoch() -> None:
    hub, _ = setup()
    a = RecordingSink()
    await live(hub, a, "h")
    for offset in (5, 5, 2, 6):
        hub.on_message(b"h", b"\x00ngh1 %d e0 %d" % (offset, offset))
    hub.on_message(b"h", b"\x00ngh1 1 e1 1")  # a new epoch: the stream was recreated
    hub.flush()
    assert [(f["offset"], f["epoch"]) for f in a.frames()] == [(5, "e0"), (6, "e0"), (1, "e1")]
    assert hub.dropped == {"stale_offset": 2}
    assert sum(hub.dropped.values()) == 2


def test_drop_log_lets_one_line_a_second_through_per_reason_and_counts_the_rest() -> None:
    drops = DropLog(interval_s=1.0)
    assert drops.allow("bad_envelope", now=10.0) == 0
    assert drops.allow("bad_envelope", now=10.5) is None
    assert drops.allow("oversized", now=10.6) == 0  # each reason has its own budget
    assert drops.allow("bad_envelope", now=10.9) is None
    assert drops.allow("bad_envelope", now=11.0) == 2  # two left out since the last line
    assert drops.allow("bad_envelope", now=11.1) is None


async def test_a_refused_subscribe_of_several_channels_is_asked_again_one_by_one() -> None:
    hub, _ = setup(internal={"control": lambda _payload: None})
    a, b = RecordingSink(), RecordingSink()
    await live(hub, a, "allowed")
    await live(hub, b, "denied")
    hub.on_disconnected()
    fresh = RecordingRedis()
    hub.on_connected(fresh)
    assert fresh.commands == [("SUBSCRIBE", ["allowed", "control", "denied"])]
    hub.on_subscribe_refused(["allowed", "control", "denied"], "NOPERM one of the channels")
    assert fresh.commands[1:] == [("SUBSCRIBE", [c]) for c in ("allowed", "control", "denied")]
    assert (a.refused, b.refused) == ([], [])  # nobody is told anything yet
    hub.on_subscribed("allowed")
    hub.on_subscribed("control")
    hub.on_subscribe_refused(["denied"], "NOPERM denied")
    assert (a.refused, b.refused) == ([], ["denied"])
    assert hub.refused_internal == {}
    assert hub.redis_channel_count == 2


async def test_a_refused_internal_channel_is_kept_and_reported_until_subscribed() -> None:
    hub, redis = setup(internal={"control": lambda _payload: None})
    hub.on_subscribe_refused(["control"], "NOPERM control")
    assert hub.refused_internal == {"control": "NOPERM control"}
    assert "control" in hub.internal_channels
    hub.on_subscribed("control")  # the retry (after a backoff) went through
    assert hub.refused_internal == {}
    assert hub.redis_channel_count == 1
    assert redis.commands == [("SUBSCRIBE", ["control"])]


async def test_frames_held_for_a_joining_reader_count_against_its_buffer_limit() -> None:
    hub, _ = setup(max_held_bytes=1000)
    slow, quick = RecordingSink(), RecordingSink()
    for sink in (slow, quick):
        joined = hub.join(sink, "news")
        hub.on_subscribed("news")
        await joined
    hub.on_message(b"news", b'"%s"' % (b"x" * 600))
    hub.flush()
    assert hub.activate(quick, "news") != b""  # quick went live after one frame
    hub.on_message(b"news", b'"%s"' % (b"y" * 600))  # slow now holds over 1000 bytes
    hub.flush()
    (held,) = slow.overflowed  # closed with 4008, as a client this far behind
    assert held > 1000
    assert hub.activate(slow, "news") == b""  # nothing held any more
    assert [len(f["data"]) for f in quick.frames()] == [600]  # the live one
    assert quick.overflowed == []


async def test_a_recovery_whose_held_frames_pass_the_limit_turns_into_a_gap_at_once() -> None:
    finished: list[bool] = []
    tickets: list[object] = []
    hub, _ = setup(on_resubscribed=lambda c, p, t: tickets.append(t), max_held_bytes=1000)
    a = RecordingSink()
    await live(hub, a, "h")
    hub.on_message(b"h", b"\x00ngh1 1 e0 1")
    hub.flush()
    a.writes.clear()
    hub.on_disconnected()
    hub.on_connected(RecordingRedis())
    hub.on_subscribed("h")  # recovery starts: live frames are held meanwhile
    for offset in (2, 3):
        hub.on_message(b"h", b'\x00ngh1 %d e0 "%s"' % (offset, b"z" * 600))
    hub.flush()
    assert [(f["type"], f.get("offset")) for f in a.frames()] == [
        ("gap", None),
        ("message", 2),
        ("message", 3),
    ]
    finished.append(hub.finish_recovery("h", tickets[0], [b"late replay"], cutoff=3))
    assert finished == [False]  # the replay read too late is not delivered
    hub.on_message(b"h", b"\x00ngh1 4 e0 4")
    hub.flush()
    assert a.frames()[-1]["offset"] == 4  # live again
