"""Turning a channel and data into the exact bytes a gateway will deliver (pure).

Every value goes through ``orjson.dumps``: dicts, lists, dataclasses, datetimes (RFC 3339),
UUIDs, enums, numbers and ``str`` alike, so a ``str`` arrives as a JSON string. ``bytes``
are taken as JSON already encoded and sent verbatim once checked to parse, which is how
the gateway decides to embed them rather than wrap them in a string.
"""

from __future__ import annotations

from typing import Any

import orjson

from notify_publisher.settings import PublisherSettings
from notify_wire.channels import channel_problem

__all__ = ["encode_message"]


def encode_message(channel: str, data: Any, settings: PublisherSettings) -> bytes:
    """The payload to publish on ``channel``; raises before anything reaches Redis.

    Raises :class:`ValueError` for a channel no client could subscribe to, for
    ``bytes`` that are not JSON, and for a payload larger than
    ``settings.max_payload_bytes``; :class:`TypeError` for data orjson cannot
    serialise.
    """
    problem = channel_problem(channel, settings.max_channel_length)
    if problem is not None:
        shown = repr(channel)
        raise ValueError(f"{problem} (got {shown if len(shown) <= 60 else shown[:56] + '...'})")
    if isinstance(data, bytes):
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(
                f"bytes published to {channel!r} must be encoded JSON ({exc}); "
                "pass a str to send text"
            ) from None
        payload = data
    else:
        try:
            payload = orjson.dumps(data)
        except orjson.JSONEncodeError as exc:
            raise TypeError(f"data for {channel!r} cannot be serialised to JSON: {exc}") from None
    if len(payload) > settings.max_payload_bytes:
        raise ValueError(
            f"payload for {channel!r} is {len(payload)} bytes; the maximum is "
            f"{settings.max_payload_bytes} (GATEWAY_MAX_MESSAGE_BYTES), and gateways drop "
            "bigger messages"
        )
    return payload
