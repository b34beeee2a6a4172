"""The per-connection state machine, fed frames directly (no sockets, no Redis)."""

from __future__ import annotations

import orjson
import pytest

from gateway.config import Limits
from gateway.core.bucket import TokenBucket
from gateway.core.client import (
    Action,
    ClientState,
    Close,
    Reply,
    SubscribeChannel,
    UnsubscribeChannel,
)
from gateway.core.policy import ChannelPolicy
from notify_wire.channels import channel_problem
from notify_wire.codes import CloseReason
from notify_wire.sessions import Session, SessionError, parse_session

POLICY = ChannelPolicy(["notifications", "public:*"])


class Client:
    """The state machine, with the record of held channels kept as the hub keeps it."""

    def __init__(self, limits: Limits | None, channels: tuple[str, ...]) -> None:
        self.held: set[str] = set()
        self.state = ClientState(
            Session("42", channels), POLICY, limits or Limits(), 0.0, self.held
        )

    def receive(self, data: str | bytes, now: float) -> Action:
        action = self.state.receive(data, now)
        if isinstance(action, SubscribeChannel):
            self.held.add(action.channel)  # the hub's join
        elif isinstance(action, UnsubscribeChannel):
            self.held.discard(action.channel)  # the hub's leave
        return action


def client(limits: Limits | None = None, channels: tuple[str, ...] = ()) -> Client:
    return Client(limits, channels)


def reply_of(action: object) -> dict[str, object]:
    assert isinstance(action, Reply), action
    obj = orjson.loads(action.frame[2:] if action.frame[1] < 126 else action.frame[4:])
    assert isinstance(obj, dict)
    return obj


def sub(channel: str, ref: int = 1) -> str:
    return orjson.dumps({"type": "subscribe", "channel": channel, "ref": ref}).decode()


@pytest.mark.parametrize(
    ("session_channels", "channel"),
    [
        ((), "user:42"),
        ((), "notifications"),
        ((), "public:weather"),
        (("team:7:*",), "team:7:alerts"),
    ],
)
def test_allowed_channels_ask_redis(session_channels: tuple[str, ...], channel: str) -> None:
    action = client(channels=session_channels).receive(sub(channel), 0.0)
    assert isinstance(action, SubscribeChannel)
    assert action.channel == channel


@pytest.mark.parametrize(
    ("channel", "code"),
    [
        ("user:43", "forbidden"),
        ("team:8:alerts", "forbidden"),
        ("user:*", "bad_request"),
        ("public:[ab]", "bad_request"),
        ("__keyspace@0__:session:abc", "bad_request"),
        ("__notify_gateway__:control", "bad_request"),
        ("", "bad_request"),
        ("a b", "bad_request"),
        ("x" * 201, "bad_request"),
    ],
)
def test_refused_channels_get_error_frames(channel: str, code: str) -> None:
    frame = reply_of(client(channels=("team:7:*",)).receive(sub(channel, 9), 0.0))
    assert frame["type"] == "error"
    assert frame["code"] == code
    assert frame["ref"] == 9
    assert frame["message"]


def test_subscription_cap() -> None:
    session = client(Limits(max_subscriptions=2))
    assert isinstance(session.receive(sub("public:a"), 0.0), SubscribeChannel)
    assert isinstance(session.receive(sub("public:b"), 0.0), SubscribeChannel)
    assert reply_of(session.receive(sub("public:c"), 0.0))["code"] == "too_many_subscriptions"
    assert isinstance(
        session.receive('{"type":"unsubscribe","channel":"public:a"}', 0.0), UnsubscribeChannel
    )
    assert isinstance(session.receive(sub("public:c"), 0.0), SubscribeChannel)


def test_unsubscribe_of_unknown_channel_is_idempotent() -> None:
    frame = reply_of(client().receive('{"type":"unsubscribe","channel":"public:a","ref":3}', 0.0))
    assert frame == {"type": "unsubscribed", "channel": "public:a", "ref": 3}


def test_ping_pong_echoes_ref() -> None:
    assert reply_of(client().receive('{"type":"ping","ref":"p1"}', 0.0)) == {
        "type": "pong",
        "ref": "p1",
    }


def test_rate_limit_errors_then_closes() -> None:
    session = client(Limits(rate_per_second=1, rate_burst=2, rate_strikes=3))
    ping = '{"type":"ping"}'
    assert reply_of(session.receive(ping, 0.0))["type"] == "pong"
    assert reply_of(session.receive(ping, 0.0))["type"] == "pong"
    assert reply_of(session.receive(ping, 0.0))["code"] == "rate_limited"
    assert reply_of(session.receive(ping, 0.0))["code"] == "rate_limited"
    assert session.receive(ping, 0.0) == Close(CloseReason.MESSAGE_RATE)


def test_a_rate_limited_frame_gets_its_ref_back() -> None:
    session = client(Limits(rate_per_second=1, rate_burst=1, rate_strikes=10))
    assert reply_of(session.receive('{"type":"ping","ref":1}', 0.0)) == {"type": "pong", "ref": 1}
    refused = reply_of(session.receive('{"type":"subscribe","channel":"public:a","ref":"s1"}', 0.0))
    assert (refused["code"], refused["ref"]) == ("rate_limited", "s1")
    # Frames without a valid ref are refused without one, never with an exception.
    for frame in ["not json", "[1]", '{"ref":true}', b"\x00"]:
        assert "ref" not in reply_of(session.receive(frame, 0.0))


def test_already_authenticated_echoes_the_ref() -> None:
    reply = reply_of(client().receive('{"type":"auth","token":"abcdefgh","ref":7}', 0.0))
    assert (reply["code"], reply["message"], reply["ref"]) == (
        "bad_request",
        "already authenticated",
        7,
    )


def test_token_bucket_refills_with_time() -> None:
    bucket = TokenBucket(rate=10, capacity=1, now=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(0.05)
    assert bucket.take(0.2)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"nope", "session_not_json"),
        (b"[1]", "session_not_object"),
        (b"{}", "session_without_user"),
        (b'{"userId": true}', "session_without_user"),
        (b'{"userId": "1", "channels": "a*"}', "session_channels_not_list"),
    ],
)
def test_unusable_sessions(raw: bytes, reason: str) -> None:
    with pytest.raises(SessionError, match=reason):
        parse_session(raw)


def test_numeric_user_ids_become_strings() -> None:
    assert parse_session(b'{"userId": 42, "channels": ["a:*"], "name": "x"}') == Session(
        "42", ("a:*",)
    )


def test_channel_problem_accepts_ordinary_names() -> None:
    for name in ("user:42", "orders.eu-west", "a/b@c", "room#1"):
        assert channel_problem(name) is None
