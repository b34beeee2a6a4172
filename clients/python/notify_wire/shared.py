"""The settings producers and gateways must agree on, read from the same variables (pure).

A publisher configured like the gateways it feeds stores sessions where they look, keeps
history where they read it and refuses up front what they would drop or refuse. Both sides
read these variables with :func:`load_shared_settings`, so the names, defaults and checks
have one owner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from notify_wire.env import ConfigError, parse_int, read
from notify_wire.sessions import MAX_SESSION_BYTES, MAX_USER_ID_LENGTH

__all__ = ["SharedSettings", "load_shared_settings"]

#: longest channel name a setting may allow (``GATEWAY_MAX_CHANNEL_LENGTH``)
MAX_CHANNEL_LENGTH_LIMIT: Final = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class SharedSettings:
    #: Redis key prefix of sessions (``GATEWAY_SESSION_PREFIX``)
    session_prefix: str = "session:"
    #: Redis key prefix of channel history (``GATEWAY_HISTORY_PREFIX``)
    history_prefix: str = "notify-gateway:history:"
    #: messages kept per channel published with history (``GATEWAY_HISTORY_SIZE``)
    history_size: int = 1000
    #: seconds a channel's history lives after its last message
    history_retention_s: int = 24 * 3600
    #: Redis key prefix of the shared counters (``GATEWAY_LIMIT_KEY_PREFIX``)
    key_prefix: str = "notify-gateway:"
    #: largest message payload (``GATEWAY_MAX_MESSAGE_BYTES``: gateways drop bigger ones)
    max_message_bytes: int = 1024 * 1024
    #: longest channel name (``GATEWAY_MAX_CHANNEL_LENGTH``: clients cannot subscribe longer)
    max_channel_length: int = 200
    #: largest stored session value (``GATEWAY_MAX_SESSION_BYTES``: gateways refuse bigger)
    max_session_bytes: int = MAX_SESSION_BYTES
    #: longest user id (``GATEWAY_MAX_USER_ID_LENGTH``: gateways refuse longer)
    max_user_id_length: int = MAX_USER_ID_LENGTH


def _prefix(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default)
    if not value.strip():
        raise ConfigError(f"{name} is empty: leave it unset for {default!r}")
    return value


def load_shared_settings(env: Mapping[str, str]) -> SharedSettings:
    """The shared settings from ``env``; :class:`ConfigError` names a wrong variable."""
    d = SharedSettings()

    def integer(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        return read(
            env, name, default, lambda n, r: parse_int(n, r, minimum=minimum, maximum=maximum)
        )

    return SharedSettings(
        session_prefix=_prefix(env, "GATEWAY_SESSION_PREFIX", d.session_prefix),
        history_prefix=env.get("GATEWAY_HISTORY_PREFIX", "").strip() or d.history_prefix,
        history_size=integer("GATEWAY_HISTORY_SIZE", d.history_size, 1),
        history_retention_s=integer("GATEWAY_HISTORY_RETENTION_SECONDS", d.history_retention_s, 1),
        key_prefix=_prefix(env, "GATEWAY_LIMIT_KEY_PREFIX", d.key_prefix),
        max_message_bytes=integer("GATEWAY_MAX_MESSAGE_BYTES", d.max_message_bytes, 64),
        max_channel_length=integer(
            "GATEWAY_MAX_CHANNEL_LENGTH", d.max_channel_length, 1, MAX_CHANNEL_LENGTH_LIMIT
        ),
        max_session_bytes=integer(
            "GATEWAY_MAX_SESSION_BYTES", d.max_session_bytes, 64, 1024 * 1024
        ),
        max_user_id_length=integer("GATEWAY_MAX_USER_ID_LENGTH", d.max_user_id_length, 1, 1024),
    )
