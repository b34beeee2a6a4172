"""The fuzz targets: one function per parser fed from outside, bytes in, :class:`Finding` out.

Each target is a thin adapter: it turns the input bytes into what one entry point takes
(a client frame, a session value, an environment, Redis reply bytes, WebSocket frames, an
HTTP request stream), calls it, and checks the rules a user would notice. When an entry
point is replaced (the HTTP layer, the Redis reply reader), re-point its adapter: the
corpus, the regressions and the rules stay.

Engines, per target (see :data:`TARGETS`): every target runs under Hypothesis in the
suite, with a strategy that builds well-formed-looking inputs; the byte-stream targets
(Redis replies, WebSocket frames, HTTP) are the ones coverage guidance pays off on, since
their interesting states (a reply split mid-bulk, a fragmented message, a pipelined request)
lie deep behind valid prefixes, so they are also run by atheris (``python -m tests.fuzz``).
atheris runs the structured targets too, on the same byte encoding.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable

import orjson
from hypothesis import strategies as st

from gateway.config import Limits, load_settings
from gateway.core.client import ClientState, Close, Reply, SubscribeChannel, UnsubscribeChannel
from gateway.core.hub import Hub
from gateway.core.policy import ChannelPolicy
from notify_wire.control import Revoke, parse_control
from notify_wire.env import ConfigError
from notify_wire.frames import (
    MAX_REF_LENGTH,
    Auth,
    FrameError,
    Ping,
    Subscribe,
    Unsubscribe,
    parse_frame,
)
from notify_wire.history import ENVELOPE_PREFIX, Position, open_envelope, position_problem
from notify_wire.sessions import Session, SessionError, parse_session
from tests.fuzz.harness import (
    Finding,
    check,
    chunks,
    http_exchange,
    parse_server_frames,
    pubsub_feed,
    run,
    ws_exchange,
)

__all__ = ["TARGETS", "Target"]


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    #: builds inputs for the Hypothesis run (the same byte encoding atheris mutates)
    strategy: st.SearchStrategy[bytes]
    #: what the input bytes mean
    encoding: str


def _json(value: object) -> bytes:
    # The standard library's encoder: it writes what orjson refuses (big integers, NaN).
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)

# -- client frames ----------------------------------------------------------------------

_LIMITS = Limits()
_POLICY = ChannelPolicy(("notifications", "public:*"))


def _frame_reply_ok(frame: bytes) -> None:
    frames, partial = parse_server_frames(frame)
    check(not partial and frames, "reply-frame-invalid", repr(frame[:80]))
    for one in frames:
        check(one.opcode == 1 and one.fin, "reply-frame-invalid", repr(frame[:80]))
        obj = orjson.loads(one.payload)
        check(isinstance(obj, dict) and "type" in obj, "reply-frame-invalid", repr(obj))


def fuzz_command(data: bytes) -> None:
    """Byte 0 even: the rest is a text frame (UTF-8, invalid bytes replaced, as the
    connection layer refuses invalid text with 1007); odd: a binary frame."""
    if not data:
        return
    frame: str | bytes = data[1:] if data[0] % 2 else data[1:].decode("utf-8", "replace")
    command = parse_frame(frame)
    check(
        isinstance(command, Auth | Subscribe | Unsubscribe | Ping | FrameError),
        "command-type",
        repr(command),
    )
    if isinstance(frame, bytes):
        check(isinstance(command, FrameError), "binary-accepted", repr(command))
    if isinstance(command, FrameError):
        check(len(command.message) <= 200, "error-message-long", str(len(command.message)))
    ref = getattr(command, "ref", None)
    check(
        ref is None
        or (isinstance(ref, int) and not isinstance(ref, bool))
        or (isinstance(ref, str) and len(ref) <= MAX_REF_LENGTH),
        "ref-invalid",
        repr(ref),
    )
    if isinstance(command, Subscribe) and command.since is not None:
        since = {"offset": command.since.offset, "epoch": command.since.epoch}
        check(position_problem(since) is None, "since-invalid", repr(since))
    # The state machine the frame goes to next: an action, never an exception.
    session = ClientState(Session("42", ("team:*",)), _POLICY, _LIMITS, 0.0, set())
    action = session.receive(frame, now=0.0)
    check(
        isinstance(action, Reply | SubscribeChannel | UnsubscribeChannel | Close),
        "action-type",
        repr(action),
    )
    if isinstance(action, Reply):
        _frame_reply_ok(action.frame)
    elif isinstance(action, SubscribeChannel):
        check(_POLICY.allows("42", ("team:*",), action.channel), "subscribe-not-allowed", "")
    elif isinstance(action, UnsubscribeChannel):
        _frame_reply_ok(action.frame)


_COMMAND_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["auth", "subscribe", "unsubscribe", "ping", "x"]) | _ANY_JSON,
        "channel": st.sampled_from(["user:42", "public:a", "team:7", "__x", "user:43", ""])
        | st.text(max_size=210)
        | _ANY_JSON,
        "ref": st.integers() | st.text(max_size=70) | _ANY_JSON,
        "token": st.text(max_size=20) | _ANY_JSON,
        "since": st.fixed_dictionaries(
            {},
            optional={
                "offset": st.integers(-2, 2**63) | _ANY_JSON,
                "epoch": st.from_regex(r"[0-9a-f]{0,33}", fullmatch=True) | _ANY_JSON,
            },
        )
        | _ANY_JSON,
    },
)
COMMAND_STRATEGY = st.builds(
    lambda binary, obj, raw: bytes([binary]) + (raw if raw is not None else _json(obj)),
    st.integers(0, 1),
    _COMMAND_OBJECTS,
    st.none() | st.binary(max_size=64),
)

# -- session values ---------------------------------------------------------------------


def fuzz_session(data: bytes) -> None:
    try:
        session = parse_session(data)
    except SessionError as exc:
        check(re.fullmatch(r"session_[a-z_]+", exc.reason), "session-reason", exc.reason)
        return
    check(isinstance(session.user_id, str) and session.user_id, "session-user", repr(session))
    check(all(isinstance(c, str) for c in session.channels), "session-channels", repr(session))


SESSION_STRATEGY = st.builds(
    lambda obj, raw: raw if raw is not None else _json(obj),
    st.fixed_dictionaries(
        {},
        optional={
            "userId": st.sampled_from(["42", "", 0, 7]) | _ANY_JSON,
            "channels": st.lists(st.text(max_size=10) | _ANY_JSON, max_size=3) | _ANY_JSON,
        },
    )
    | _ANY_JSON,
    st.none() | st.binary(max_size=64),
)

# -- configuration ----------------------------------------------------------------------

#: every variable load_settings reads (tests/test_config.py holds the README to them)
VARIABLES = (
    "REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_DB",
    "REDIS_TLS", "REDIS_TLS_CA_PATH", "REDIS_TLS_CERT_PATH", "REDIS_TLS_KEY_PATH",
    "REDIS_TLS_REJECT_UNAUTHORIZED", "REDIS_CLUSTER", "REDIS_CONNECT_TIMEOUT",
    "REDIS_MAX_RETRIES", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD",
    "GATEWAY_HOST", "GATEWAY_PORT", "GATEWAY_MAX_FRAME_BYTES", "GATEWAY_MAX_BUFFER_BYTES",
    "GATEWAY_MAX_MESSAGE_BYTES", "GATEWAY_MAX_SUBSCRIPTIONS", "GATEWAY_MAX_CHANNEL_LENGTH",
    "GATEWAY_RATE_LIMIT", "GATEWAY_RATE_BURST", "GATEWAY_RATE_STRIKES",
    "GATEWAY_PUBLIC_CHANNELS", "GATEWAY_SESSION_PREFIX", "GATEWAY_REDIS_PING_SECONDS",
    "GATEWAY_REDIS_PING_TIMEOUT_SECONDS", "GATEWAY_AUTH_TIMEOUT", "GATEWAY_HEARTBEAT_SECONDS",
    "GATEWAY_HANDSHAKE_TIMEOUT", "GATEWAY_SESSION_RECHECK_SECONDS", "GATEWAY_COMPRESSION",
    "GATEWAY_HISTORY_PREFIX", "GATEWAY_HISTORY_SIZE", "GATEWAY_HISTORY_RETENTION_SECONDS",
    "GATEWAY_MAX_REPLAY", "GATEWAY_SHUTDOWN_TIMEOUT", "GATEWAY_LOG_LEVEL", "GATEWAY_LOG_FORMAT",
    "GATEWAY_WORKERS", "GATEWAY_ADMIN_TOKEN", "GATEWAY_TRUSTED_PROXY_HEADER",
    "GATEWAY_LIMIT_KEY_PREFIX", "GATEWAY_MAX_CONNECTIONS", "GATEWAY_MAX_CONNECTIONS_PER_USER",
    "GATEWAY_MAX_ATTEMPTS_PER_USER", "GATEWAY_MAX_ATTEMPTS_PER_IP", "GATEWAY_ALLOWED_ORIGINS",
)  # fmt: skip
_SECRETS = ("REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD", "GATEWAY_ADMIN_TOKEN")


def decode_env(data: bytes) -> dict[str, str]:
    """Lines of the input: byte 0 picks the variable, the rest of the line is its value."""
    env: dict[str, str] = {}
    for line in data.split(b"\n"):
        if line:
            env[VARIABLES[line[0] % len(VARIABLES)]] = line[1:].decode("utf-8", "replace")
    return env


def encode_env(env: dict[str, str]) -> bytes:
    return b"\n".join(bytes([VARIABLES.index(k)]) + v.encode() for k, v in env.items())


def _url_password(url: str) -> str | None:
    match = re.match(r"rediss?://[^:/@]*:([^@/]*)@", url)
    return match.group(1) if match else None


def fuzz_config(data: bytes) -> None:
    env = decode_env(data)
    candidates = [env[name].strip() for name in _SECRETS if name in env]
    candidates.append(_url_password(env.get("REDIS_URL", "").strip()) or "")
    # Long enough not to be a word of a message by chance, and not also another variable's
    # value (which a message may rightly quote).
    others = [v for k, v in env.items() if k not in _SECRETS and k != "REDIS_URL"]
    secrets = [s for s in candidates if len(s) >= 12 and not any(s in v for v in others)]
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        message = str(exc)
        check(
            any(name in message for name in env) or "--workers" in message,
            "config-error-unnamed",
            message,
        )
        for secret in secrets:
            check(secret not in message, "config-error-echoes-secret", "")
        return
    except Exception as exc:
        raise Finding("config-crash", f"{type(exc).__name__}: {exc}") from exc
    shown = settings.redis.url()
    for secret in secrets:
        check(secret not in shown, "config-url-shows-secret", "")


_ODD_VALUES = [
    "", " ", "0", "1", "-1", "true", "off", "auto", "1e400", "nan", "inf", "9" * 5000,
    "redis://localhost:6379/0", "rediss://u:p@h:1/2", "redis://[::1]:6379", "redis://[abc",
    "redis://h:99999", "redis://h:x", "redis://h/abc", "http://h", "redis://:pw@/",
    "a:1,b:2", "[::1]:26379", "h:0", "https://a.example", "https://a.example/x", "X-Real-IP",
]  # fmt: skip
_VALUES = (
    st.sampled_from(_ODD_VALUES)
    | st.integers(-(2**70), 2**70).map(str)
    | st.floats().map(str)
    | st.text(max_size=30)
)
CONFIG_STRATEGY = st.dictionaries(st.sampled_from(VARIABLES), _VALUES, max_size=6).map(
    lambda env: encode_env({k: v.replace("\n", " ") for k, v in env.items()})
)

# -- history envelopes, positions and control messages ---------------------------------


def fuzz_envelope(data: bytes) -> None:
    """Byte 0 odd: the rest follows the envelope prefix; even: the rest is the payload."""
    if not data:
        return
    payload = ENVELOPE_PREFIX + data[1:] if data[0] % 2 else data[1:]
    try:
        envelope = open_envelope(payload)
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            raise Finding("envelope-digits", str(exc)[:80]) from exc
        raise
    if envelope is None:
        return
    offset, epoch, data = envelope
    check(offset >= 0, "envelope-offset-negative", str(offset))
    check(payload.endswith(data), "envelope-data", "")
    # since objects from clients: never an exception, and None only for valid positions.
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if position_problem(obj) is None:
        assert isinstance(obj, dict)
        Position(obj["offset"], obj["epoch"])
    # What the gateway sends a client must be accepted back as its `since`.
    since = {"offset": offset, "epoch": epoch}
    check(position_problem(since) is None, "envelope-position-refused", repr(since)[:120])


ENVELOPE_STRATEGY = st.builds(
    lambda prefix, offset, epoch, data: bytes([prefix]) + offset + b" " + epoch + b" " + data,
    st.integers(0, 1),
    st.integers(0, 2**64).map(lambda n: str(n).encode()) | st.binary(max_size=8),
    st.from_regex(rb"[0-9a-f]{1,32}", fullmatch=True) | st.binary(max_size=8),
    st.binary(max_size=32) | _COMMAND_OBJECTS.map(lambda o: _json(o.get("since"))),
)


def fuzz_control(data: bytes) -> None:
    command = parse_control(data)
    check(command is None or isinstance(command, Revoke), "control-type", repr(command))
    if command is not None:
        check(re.fullmatch(r"[0-9a-f]{64}", command.digest), "control-digest", command.digest)


CONTROL_STRATEGY = st.builds(
    lambda obj, raw: raw if raw is not None else _json(obj),
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.just("revoke") | _ANY_JSON,
            "session": st.from_regex(r"[0-9a-f]{60,66}", fullmatch=True) | _ANY_JSON,
        },
    ),
    st.none() | st.binary(max_size=64),
)

# -- Redis replies ----------------------------------------------------------------------


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def pubsub_message(channel: bytes, payload: bytes, *, sharded: bool = False) -> bytes:
    kind = b"smessage" if sharded else b"message"
    return b"*3\r\n" + _bulk(kind) + _bulk(channel) + _bulk(payload)


def _split_input(data: bytes) -> tuple[int, bytes, bytes]:
    """(flags, chunk cuts, body): byte 0 flags, byte 1 the number of cut bytes (0..15)."""
    if len(data) < 2:
        return (data[0] if data else 0), b"", b""
    count = data[1] % 16
    return data[0], data[2 : 2 + count], data[2 + count :]


def fuzz_redis_replies(data: bytes) -> None:
    """Raw RESP bytes from Redis (or whatever sits on its port), read as the subscriber does.

    Flags: bit 0 sharded, bits 1-2 PINGs awaiting replies. Rules: nothing raises out of
    ``data_received`` (a broken reply aborts the link, logged); the calls do not depend on
    how the bytes were split into reads.
    """
    flags, cuts, body = _split_input(data)
    sharded, pending = bool(flags & 1), (flags >> 1) & 3
    try:
        whole = pubsub_feed([body], sharded=sharded, pending=pending)
        split = pubsub_feed(list(chunks(body, cuts)), sharded=sharded, pending=pending)
    except Finding:
        raise
    except Exception as exc:
        raise Finding("redis-reply-shape", f"{type(exc).__name__}: {exc}"[:160]) from exc
    check(
        (whole.calls, whole.aborted) == (split.calls, split.aborted),
        "redis-reads-split-differently",
        lambda: f"{whole.calls[:3]} vs {split.calls[:3]}",
    )


_REPLIES = [
    b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
    b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n",
    b"+PONG\r\n", b"-ERR no\r\n", b"*0\r\n", b":1\r\n", b"$-1\r\n", b"*-1\r\n",
    b"*3\r\n$9\r\nsubscribe\r\n:1\r\n:1\r\n", b"*1\r\n$7\r\nmessage\r\n",
    b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", b"%1\r\n+a\r\n+b\r\n", b"garbage\r\n",
]  # fmt: skip
REDIS_STRATEGY = st.builds(
    lambda flags, cuts, replies: bytes([flags, len(cuts)]) + cuts + b"".join(replies),
    st.integers(0, 255),
    st.binary(max_size=15),
    st.lists(
        st.sampled_from(_REPLIES)
        | st.builds(pubsub_message, st.binary(max_size=8), st.binary(max_size=40)),
        max_size=6,
    ),
)

# -- the registry behind the reader (what a producer's PUBLISH reaches) ----------------

_CHANNELS = ("a", "b", "c")


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.refused: list[str] = []

    def send(self, data: bytes) -> None:
        self.data += data

    def subscription_refused(self, channel: str, message: str) -> None:
        self.refused.append(channel)


class _Commands:
    def subscribe(self, channels: list[str]) -> None:
        pass

    def unsubscribe(self, channels: list[str]) -> None:
        pass


def decode_publishes(body: bytes) -> list[tuple[bytes, bytes]]:
    """Records of the input: byte 0 picks the channel (or is the channel, from 0xf0 up),
    the rest up to the next ``\\xff\\xff`` is the payload."""
    out = []
    for record in body.split(b"\xff\xff"):
        if record:
            pick = record[0]
            channel = _CHANNELS[pick % 3].encode() if pick < 0xF0 else bytes([pick])
            out.append((channel, record[1:]))
    return out


def fuzz_registry(data: bytes) -> None:
    """PUBLISHes as they reach the gateway: each one a well-formed pub/sub message (Redis
    frames whatever a producer sends), read by the subscriber protocol into the real
    registry, fanned out to readers of three channels.

    Rules: the link survives any payload (no exception, no abort); every reader gets
    complete text frames of JSON objects for its own channel; history offsets a reader
    sees never go back within an epoch.
    """
    _, cuts, body = _split_input(data)
    publishes = decode_publishes(body)
    stream = b"".join(pubsub_message(channel, payload) for channel, payload in publishes)

    async def readers() -> tuple[Hub, dict[str, _Sink]]:
        registry = Hub(max_message_bytes=8192)
        registry.on_connected(_Commands())
        sinks: dict[str, _Sink] = {}
        for name in _CHANNELS:
            sink = sinks[name] = _Sink()
            future = registry.join(sink, name)
            registry.on_subscribed(name)  # Redis confirms
            await future
            registry.activate(sink, name)
        return registry, sinks

    registry, sinks = run(readers)
    try:
        result = pubsub_feed(list(chunks(stream, cuts)), listener=registry)
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            raise Finding("envelope-digits", str(exc)[:80]) from exc
        raise
    check(not result.aborted, "link-aborted", "")
    for name, sink in sinks.items():
        frames, partial = parse_server_frames(bytes(sink.data))
        check(not partial, "fanout-partial-frame", name)
        # Within a run of one epoch offsets only grow (docs/protocol.md: another epoch is
        # taken as it comes; only the current one is remembered).
        last: tuple[str, int] | None = None
        for frame in frames:
            check(frame.opcode == 1 and frame.fin, "fanout-frame", name)
            obj = orjson.loads(frame.payload)
            check(isinstance(obj, dict) and obj.get("channel") == name, "fanout-channel", name)
            check(obj.get("type") == "message", "fanout-type", repr(obj)[:80])
            if "offset" in obj:
                epoch, offset = obj["epoch"], obj["offset"]
                check(
                    last is None or last[0] != epoch or offset > last[1],
                    "envelope-rewind",
                    f"{name}: offset {offset} after {last} in epoch {epoch!r}",
                )
                last = (epoch, offset)


def _publish_record(channel: int, payload: bytes) -> bytes:
    return bytes([channel]) + payload.replace(b"\xff\xff", b"\xff")


REGISTRY_STRATEGY = st.builds(
    lambda cuts, records: bytes([0, len(cuts)]) + cuts + b"\xff\xff".join(records),
    st.binary(max_size=15),
    st.lists(
        st.builds(
            _publish_record,
            st.integers(0, 255),
            st.binary(max_size=40)
            | _ANY_JSON.map(_json)
            | st.builds(
                lambda offset, epoch, rest: ENVELOPE_PREFIX + offset + b" " + epoch + b" " + rest,
                st.integers(0, 20).map(lambda n: str(n).encode()) | st.binary(max_size=6),
                st.sampled_from([b"ab", b"cd", b"", b"z\x80"]),
                st.binary(max_size=10),
            ),
        ),
        max_size=6,
    ),
)

# -- WebSocket frames -------------------------------------------------------------------

#: close codes the server may send of its own accord (docs/protocol.md); others are echoes
_SERVER_CLOSE_CODES = {1000, 1001, 1002, 1007, 1008, 1009, 1011}


def mask_frame(fin: bool, opcode: int, payload: bytes, key: bytes, rsv: int = 0) -> bytes:
    """A client frame as RFC 6455 has it (masked)."""
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0x0F])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + length.to_bytes(2)
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def fuzz_ws_frames(data: bytes) -> None:
    """Client frames after a successful upgrade. Flags: bit 0 permessage-deflate.

    Rules: no exception; the server writes only well-formed frames and nothing after its
    close frame; its own close codes are documented ones; text messages are whole strings
    within the size limit; the outcome does not depend on how the bytes were split.
    """
    flags, cuts, body = _split_input(data)
    compression = bool(flags & 1)
    whole = ws_exchange([body], compression=compression)
    split = ws_exchange(list(chunks(body, cuts)), compression=compression)
    # How the bytes were split may decide which of two faults closes the connection: the
    # gateway checks a text message's UTF-8 after the protocol has read the rest of the same
    # read (a later ping is answered, a later fault closes first). So only the state, and
    # the messages handed over up to the first fault, must not depend on it.
    shorter, longer = sorted((whole.messages, split.messages), key=len)
    check(
        whole.state == split.state and longer[: len(shorter)] == shorter,
        "ws-reads-split-differently",
        lambda: f"{whole.written[:40]!r} vs {split.written[:40]!r}",
    )
    frames, partial = parse_server_frames(whole.written)
    check(not partial, "ws-partial-frame", "")
    sent_codes = set()
    for i, frame in enumerate(frames):
        if frame.opcode == 8:
            check(i == len(frames) - 1, "ws-frame-after-close", f"{len(frames) - i - 1} after")
            sent_codes.add(frame.close_code)
    for message in whole.messages:
        size = len(message.encode() if isinstance(message, str) else message)
        check(size <= 64 * 1024, "ws-message-too-big", str(size))
    client_codes = {
        int.from_bytes(bytes(b ^ body[i + 2 + (j % 4)] for j, b in enumerate(body[i + 6 : i + 8])))
        for i in range(len(body) - 8)
        if body[i] & 0x0F == 8
    }
    for code in sent_codes:
        check(
            code is None or code in _SERVER_CLOSE_CODES or code in client_codes,
            "ws-close-code-undocumented",
            str(code),
        )
    check(len(whole.written) <= len(body) + 256, "ws-amplification", str(len(whole.written)))


_WS_FRAME = st.builds(
    mask_frame,
    st.booleans(),
    st.sampled_from([0, 1, 2, 8, 9, 10]) | st.integers(0, 15),
    st.binary(max_size=130)
    | _COMMAND_OBJECTS.map(_json)
    | st.sampled_from([b"\x03\xe8", b"\x03\xe8bye", b"\x0f\xa0", b"\xff", b"\xc3\x28"]),
    st.binary(min_size=4, max_size=4),
    st.integers(0, 7).filter(lambda r: r in (0, 4)) | st.integers(0, 7),
)
WS_STRATEGY = st.builds(
    lambda flags, cuts, frames, tail: bytes([flags, len(cuts)]) + cuts + b"".join(frames) + tail,
    st.integers(0, 1),
    st.binary(max_size=15),
    st.lists(_WS_FRAME, max_size=6),
    st.binary(max_size=4),
)

# -- HTTP requests on the WebSocket port ------------------------------------------------

_ROUTES: dict[str, object] | None = None
_ADMIN_TOKEN = "fuzz-admin-token-0123456789"


def _gateway_responder() -> object:
    """The gateway's own responder (``route_requests`` over its routes), built once.

    The Gateway is never started: Redis is never reached (``/readyz`` answers 503).
    """
    global _ROUTES
    if _ROUTES is None:
        from gateway.server import Gateway

        async def build() -> object:
            settings = load_settings(
                {"REDIS_URL": "redis://127.0.0.1:9/0", "GATEWAY_ADMIN_TOKEN": _ADMIN_TOKEN}
            )
            return Gateway(settings).handler.respond

        _ROUTES = {"respond": run(build)}
    return _ROUTES["respond"]


_REQUEST_LINE = re.compile(rb"([A-Z]+) (/[!-~]*) HTTP/1\.1")
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([ -~]*?)[ \t]*")


def _simple_requests(stream: bytes) -> list[tuple[bytes, bytes, list[bytes]]] | None:
    """The requests in ``stream`` if it is only complete, plain, body-less HTTP/1.1 requests
    (the reference reading the pipelining and method rules are checked against)."""
    heads = stream.split(b"\r\n\r\n")
    if len(heads) < 2 or heads[-1]:
        return None
    requests = []
    for head in heads[:-1]:
        lines = head.split(b"\r\n")
        line = _REQUEST_LINE.fullmatch(lines[0])
        headers = [_HEADER.fullmatch(h) for h in lines[1:]]
        if line is None or not all(headers) or len(head) > 4000:
            return None
        names = [h.group(1).lower() for h in headers if h]
        if b"content-length" in names or b"transfer-encoding" in names or b"upgrade" in names:
            return None
        requests.append((line.group(1), line.group(2), names))
    return requests


def _duplicated_header(stream: bytes) -> bool:
    for head in stream.split(b"\r\n\r\n"):
        names = [line.partition(b":")[0].strip().lower() for line in head.split(b"\r\n")[1:]]
        if len(names) != len(set(names)):
            return True
    return False


def fuzz_http(data: bytes) -> None:
    """Bytes a client sends before (or instead of) the upgrade, answered by the gateway's
    routes. Rules: no 500 (a crash in our code); answers are HTTP/1.1 responses; for a
    stream of plain requests, one answer each, in order, and methods other than GET/HEAD
    not served as GET."""
    _, cuts, body = _split_input(data)
    result = http_exchange(list(chunks(body, cuts)), _gateway_responder())  # type: ignore[arg-type]
    written = result.written
    statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", written)]
    check(written[:9] in (b"", b"HTTP/1.1 "), "http-not-a-response", repr(written[:40]))
    requests = _simple_requests(body)
    if 500 in statuses:
        kind = "http-duplicate-header-500" if _duplicated_header(body) else "http-500"
        raise Finding(kind, repr(body[:120]))
    if requests is None:
        return
    if any(path.partition(b"?")[0] == b"/ws" for _, path, _ in requests):
        return  # an upgrade path: the answer is the handshake's
    # A response that says `Connection: close` (an error, or a request that asked for it)
    # is the last one: requests pipelined behind it are not served.
    heads = [head.lower() for head in re.findall(rb"HTTP/1\.1 \d{3} .*?\r\n\r\n", written, re.S)]
    last = next((i for i, head in enumerate(heads) if b"\r\nconnection: close" in head), None)
    expected = len(requests) if last is None else min(len(requests), last + 1)
    answered = f"{statuses} to {len(requests)} requests"
    check(len(statuses) == expected, "http-pipelined-unanswered", answered)
    for (method, _, _), status in zip(requests, statuses, strict=False):
        check(
            method in (b"GET", b"HEAD") or not 200 <= status < 300,
            "http-method-ignored",
            f"{method!r} got {status}",
        )


_PATHS = ["/healthz", "/readyz", "/metrics", "/status", "/", "/client.js", "/ws", "/nope", "/x?y"]
_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(["Host", "Authorization", "If-None-Match", "Connection", "X-A", "Origin"]),
        st.sampled_from([f"Bearer {_ADMIN_TOKEN}", "Bearer x", "close", "a", "", '"e"']),
    ),
    max_size=4,
)
HTTP_STRATEGY = st.builds(
    lambda cuts, requests, tail: bytes([0, len(cuts)]) + cuts + b"".join(requests) + tail,
    st.binary(max_size=15),
    st.lists(
        st.builds(
            lambda method, path, headers: (
                f"{method} {path} HTTP/1.1\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in [("Host", "a"), *headers])
                + "\r\n"
            ).encode(),
            st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "DELETE"]),
            st.sampled_from(_PATHS),
            _HEADERS,
        ),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([b"", b"", b"GET", b"\r\n", b"\x00"]),
)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("command", fuzz_command, COMMAND_STRATEGY, "byte 0 parity: text/binary frame"),
        Target("session", fuzz_session, SESSION_STRATEGY, "a stored session value"),
        Target("config", fuzz_config, CONFIG_STRATEGY, "lines: variable index byte + value"),
        Target("envelope", fuzz_envelope, ENVELOPE_STRATEGY, "byte 0 odd: after the prefix"),
        Target("control", fuzz_control, CONTROL_STRATEGY, "a control-channel payload"),
        Target("redis-replies", fuzz_redis_replies, REDIS_STRATEGY, "flags, cuts, RESP bytes"),
        Target("registry", fuzz_registry, REGISTRY_STRATEGY, "flags, cuts, publish records"),
        Target("ws-frames", fuzz_ws_frames, WS_STRATEGY, "flags, cuts, client frames"),
        Target("http", fuzz_http, HTTP_STRATEGY, "flags, cuts, request bytes"),
    )
}
