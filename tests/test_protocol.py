"""Wire frames: parsing never raises, and the bytes we write are valid RFC 6455 frames."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from gateway.core.frames import message_frame, text_frame
from notify_wire.codes import ErrorCode
from notify_wire.frames import FrameError, Ping, Subscribe, Unsubscribe, parse_frame


def decode_server_frame(data: bytes) -> Frame:
    """Parse bytes as a client would, with the websockets library's own frame parser."""
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_text_frame_lengths_parse_back(size: int) -> None:
    payload = b"x" * size
    frame = decode_server_frame(text_frame(payload))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data == payload


def test_message_frame_embeds_json_verbatim_and_wraps_other_payloads() -> None:
    channel = orjson.dumps("news")
    as_json = orjson.loads(decode_server_frame(message_frame(channel, b'{"a": [1, 2]}')).data)
    assert as_json == {"type": "message", "channel": "news", "data": {"a": [1, 2]}}
    as_text = orjson.loads(decode_server_frame(message_frame(channel, b"hello there")).data)
    assert as_text["data"] == "hello there"
    not_utf8 = orjson.loads(decode_server_frame(message_frame(channel, b"\xff\xfeok")).data)
    assert not_utf8["data"] == "\ufffd\ufffdok"


@pytest.mark.parametrize("size", [0, 83, 84, 200, 65_493, 65_494])
def test_message_frame_is_the_text_frame_of_its_json(size: int) -> None:
    # Sizes either side of the 7-, 16- and 64-bit length encodings, with and without history.
    data = orjson.dumps("x" * size)
    channel = orjson.dumps("c")
    plain = b'{"type":"message","channel":"c","data":' + data
    assert message_frame(channel, data) == text_frame(plain + b"}")
    history = plain + b',"offset":12,"epoch":"e1"}'
    assert message_frame(channel, data, 12, "e1") == text_frame(history)


def test_commands_parse_with_refs() -> None:
    assert parse_frame('{"type":"subscribe","channel":"a","ref":1}') == Subscribe("a", 1)
    assert parse_frame('{"type":"unsubscribe","channel":"a","ref":"x"}') == Unsubscribe("a", "x")
    assert parse_frame('{"type":"ping"}') == Ping(None)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x00binary", "binary frames"),
        ("not json", "not valid JSON"),
        ("[1,2]", "JSON object"),
        ('{"channel":"a"}', "'type'"),
        ('{"type":"dance"}', "unknown type"),
        ('{"type":"subscribe"}', "'channel'"),
        ('{"type":"subscribe","channel":"a","ref":true}', "ref must be"),
        ('{"type":"ping","ref":{"a":1}}', "ref must be"),
    ],
)
def test_bad_frames_become_bad_request(data: str | bytes, fragment: str) -> None:
    result = parse_frame(data)
    assert isinstance(result, FrameError)
    assert result.code is ErrorCode.BAD_REQUEST
    assert fragment in result.message


@given(st.one_of(st.binary(max_size=256), st.text(max_size=256)))
def test_any_input_parses_without_raising(data: str | bytes) -> None:
    result = parse_frame(data)
    assert result is not None


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["type", "channel", "ref", "token"]), children, max_size=4
            )
        ),
        max_leaves=12,
    )
)
def test_any_json_value_parses_without_raising(value: object) -> None:
    assert parse_frame(json.dumps(value)) is not None
