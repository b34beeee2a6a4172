"""structlog set-up: one JSON object per line on stdout, secrets redacted.

Configured once by :func:`configure_logging`; modules get loggers with
``structlog.get_logger(name)`` and bind ``conn``/``user`` per connection.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, BinaryIO

import orjson
import structlog

__all__ = ["configure_logging", "redact_secrets"]

_SECRET_KEYS = frozenset({"token", "password", "authorization", "secret", "admin_token"})
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.I)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"']+")


def _scrub(text: str) -> str:
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
    return _BEARER.sub(r"\1***", text)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask secret-named fields, passwords in URLs and bearer tokens in strings."""
    for key, value in event_dict.items():
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = _scrub(value)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "json", file: BinaryIO | None = None) -> None:
    """Send structured events to stdout (or ``file``) as JSON lines, or coloured console output."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer()
        logger_factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        logger_factory = structlog.BytesLoggerFactory(file or sys.stdout.buffer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
