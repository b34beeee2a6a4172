"""What both publishers share: settings, constructors and error translation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Self

from notify_publisher.errors import redis_errors
from notify_publisher.operations import Operation, Operations
from notify_publisher.settings import PublisherSettings

__all__ = ["PublisherBase"]


class PublisherBase:
    """Constructors and settings common to :class:`Publisher` and :class:`AsyncPublisher`."""

    def __init__(self, settings: PublisherSettings | None = None) -> None:
        self.settings = settings or PublisherSettings()
        self._operations = Operations(self.settings)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A publisher for the Redis at ``url``; ``options`` as :meth:`PublisherSettings.from_url`.

        ``session_prefix``, ``max_payload_bytes``, ``max_channel_length``, ``max_retries``
        and ``connect_timeout_s`` default to the gateway's defaults. Raises
        :class:`ValueError` for a malformed URL or option.
        """
        return cls(PublisherSettings.from_url(url, **options))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """A publisher configured by the gateway's variables (``REDIS_URL``, ``REDIS_*``,
        ``GATEWAY_SESSION_PREFIX``, ``GATEWAY_MAX_MESSAGE_BYTES``, ...), from ``env`` or
        the process environment. Raises :class:`~gateway.config.ConfigError` naming a
        variable that is wrong.
        """
        return cls(PublisherSettings.from_env(os.environ if env is None else env))

    def _errors(self, operation: Operation[Any]) -> AbstractContextManager[None]:
        redis = self.settings.redis
        return redis_errors(redis.address, operation.name, redis.max_retries + 1)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.settings.redis.url()}>"
