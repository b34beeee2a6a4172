"""Producer-side library for notify-gateway: publish messages, manage sessions.

>>> from clients import Publisher
>>> with Publisher.from_env() as publisher:                    # doctest: +SKIP
...     publisher.publish("user:42", {"type": "new_message"})

See docs/publishing.md.
"""

from notify_publisher.aio import AsyncPublisher
from notify_publisher.errors import PublisherError, RedisRefusedError, RedisUnavailableError
from notify_publisher.settings import PublisherSettings
from notify_publisher.sync import Publisher

__all__ = [
    "AsyncPublisher",
    "Publisher",
    "PublisherError",
    "PublisherSettings",
    "RedisRefusedError",
    "RedisUnavailableError",
]
