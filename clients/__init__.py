"""Producer-side library for notify-gateway: publish messages, manage sessions.

>>> from clients import Publisher
>>> with Publisher.from_env() as publisher:                    # doctest: +SKIP
...     publisher.publish("user:42", {"type": "new_message"})

See docs/publishing.md.
"""

from clients.aio import AsyncPublisher
from clients.errors import PublisherError, RedisRefusedError, RedisUnavailableError
from clients.settings import PublisherSettings
from clients.sync import Publisher

__all__ = [
    "AsyncPublisher",
    "Publisher",
    "PublisherError",
    "PublisherSettings",
    "RedisRefusedError",
    "RedisUnavailableError",
]
