"""What a publisher needs to know: where Redis is and the limits the gateways enforce."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from notify_wire.redis_config import RedisConfig, load_redis_config
from notify_wire.shared import SharedSettings, load_shared_settings

__all__ = ["PublisherSettings"]

_SHARED = SharedSettings()
_REDIS = RedisConfig()


@dataclasses.dataclass(frozen=True, slots=True)
class PublisherSettings:
    """Redis connection and the gateway limits a publisher checks before sending.

    The defaults are the gateway's: a publisher configured like the gateways it feeds
    refuses up front what they would drop or refuse.
    """

    redis: RedisConfig = dataclasses.field(default_factory=RedisConfig)
    #: Redis key prefix of sessions (``GATEWAY_SESSION_PREFIX``)
    session_prefix: str = _SHARED.session_prefix
    #: largest payload in bytes (``GATEWAY_MAX_MESSAGE_BYTES``: gateways drop bigger ones)
    max_payload_bytes: int = _SHARED.max_message_bytes
    #: longest channel name (``GATEWAY_MAX_CHANNEL_LENGTH``: clients cannot subscribe longer)
    max_channel_length: int = _SHARED.max_channel_length
    #: Redis key prefix of channel history (``GATEWAY_HISTORY_PREFIX``, as the gateways read it)
    history_prefix: str = _SHARED.history_prefix
    #: messages kept per channel published with history (``GATEWAY_HISTORY_SIZE``; approximate)
    history_size: int = _SHARED.history_size
    #: seconds a channel's history lives after its last message
    #: (``GATEWAY_HISTORY_RETENTION_SECONDS``)
    history_retention_s: int = _SHARED.history_retention_s
    #: largest session value as JSON (``GATEWAY_MAX_SESSION_BYTES``: gateways refuse bigger)
    max_session_bytes: int = _SHARED.max_session_bytes
    #: longest user id (``GATEWAY_MAX_USER_ID_LENGTH``: gateways refuse longer)
    max_user_id_length: int = _SHARED.max_user_id_length

    def __post_init__(self) -> None:
        if not isinstance(self.session_prefix, str) or not self.session_prefix:
            raise ValueError("session_prefix must be a non-empty string, e.g. 'session:'")
        for name in (
            "max_payload_bytes",
            "max_channel_length",
            "history_size",
            "history_retention_s",
            "max_session_bytes",
            "max_user_id_length",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PublisherSettings:
        """The settings of gateways reading ``env``: the same variables, read the same way
        (``REDIS_*`` and the ``GATEWAY_*`` ones producers share, :mod:`notify_wire.shared`).

        Raises :class:`~notify_wire.env.ConfigError` naming the variable that is wrong.
        """
        shared = load_shared_settings(env)
        return cls(
            redis=load_redis_config(env),
            session_prefix=shared.session_prefix,
            max_payload_bytes=shared.max_message_bytes,
            max_channel_length=shared.max_channel_length,
            history_prefix=shared.history_prefix,
            history_size=shared.history_size,
            history_retention_s=shared.history_retention_s,
            max_session_bytes=shared.max_session_bytes,
            max_user_id_length=shared.max_user_id_length,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        session_prefix: str = _SHARED.session_prefix,
        max_payload_bytes: int = _SHARED.max_message_bytes,
        max_channel_length: int = _SHARED.max_channel_length,
        max_retries: int = _REDIS.max_retries,
        connect_timeout_s: float = _REDIS.connect_timeout_s,
        cluster: bool = False,
    ) -> PublisherSettings:
        """Settings for the Redis at ``url`` (``redis://`` or ``rediss://``, as ``REDIS_URL``).

        ``max_retries`` retries follow a transient error, with jittered exponential
        backoff from 50 ms up to 1 s; 0 disables them. ``cluster`` treats ``url`` as any
        node of a Redis Cluster and publishes with SPUBLISH, as the gateways then read.
        """
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, not {max_retries!r}")
        if not 0 < connect_timeout_s < float("inf"):
            raise ValueError(f"connect_timeout_s must be more than 0, not {connect_timeout_s!r}")
        redis = dataclasses.replace(
            load_redis_config({"REDIS_URL": url}),
            max_retries=max_retries,
            connect_timeout_s=connect_timeout_s,
            cluster=cluster,
        )
        return cls(redis, session_prefix, max_payload_bytes, max_channel_length)
