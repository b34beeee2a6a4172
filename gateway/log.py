"""structlog set-up: one JSON object per line on stdout, secrets redacted.

Configured once by :func:`configure_logging`; modules get loggers with
``structlog.get_logger(name)`` and bind ``conn``/``user`` per connection. Records
that libraries send through the standard :mod:`logging` module (websockets,
asyncio's "Exception in callback", Python warnings) go through the same
processors, as events named ``library_log``, so every stdout line has one shape.
The event names, levels and fields are listed in docs/logging.md (checked by a test).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

__all__ = ["LIBRARY_EVENT", "configure_logging", "redact_secrets"]

#: the event name of records from the standard logging module
LIBRARY_EVENT = "library_log"

MASK = "***"

# Field names that hold secrets whatever their value looks like (matched anywhere in the name).
_SECRET_KEY = re.compile(r"token|passw|secret|authorization|cookie|api_?key|credential", re.I)
_SECRET_WORD = r"[\w-]*(?:token|passw|secret|api_?key)[\w-]*"
# Each pattern's `lead` is kept and what follows it is masked.
_SCRUBBERS = tuple(
    re.compile(pattern, re.I)
    for pattern in (
        # scheme://user:password@host
        r"(?P<lead>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)",
        # an Authorization header, whatever the scheme (Bearer, Basic...)
        r"(?P<lead>authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}]+",
        # a bearer token anywhere in text
        r"(?P<lead>\bbearer\s+)[^\s\"',}]+",
        # token=..., password=... in query strings and key=value text
        rf"(?P<lead>\b{_SECRET_WORD}=)[^&\s\"',;]+",
        # "token": "..." inside JSON text (a client frame echoed in an error, say)
        rf"(?P<lead>\"{_SECRET_WORD}\"\s*:\s*\")[^\"]*",
    )
)


@functools.lru_cache(maxsize=512)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for pattern in _SCRUBBERS:
            value = pattern.sub(rf"\g<lead>{MASK}", value)
        return value
    if isinstance(value, dict):
        return {k: MASK if _secret_key(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask secret-named fields (nested too), passwords in URLs, and credentials in text."""
    for key, value in event_dict.items():
        if _secret_key(key):
            event_dict[key] = MASK
        elif isinstance(value, str | dict | list | tuple):
            event_dict[key] = _scrub(value)
    return event_dict


def _library_record(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A stdlib record: a fixed event name, its text in ``message``, its logger's name."""
    event_dict["message"] = str(event_dict["event"]).rstrip()
    event_dict["event"] = LIBRARY_EVENT
    event_dict["logger"] = event_dict["_record"].name
    return event_dict


def _orjson_text(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(obj, **kwargs).decode()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send structured events to stdout as JSON lines or coloured console output.

    The root :mod:`logging` logger writes to stdout through the same processors;
    websockets' own records below WARNING are dropped, as the gateway logs
    connections itself.
    """
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Any] = [structlog.processors.format_exc_info, redact_secrets]
    renderer: Any
    library_renderer: Any
    if fmt == "console":
        renderer = library_renderer = structlog.dev.ConsoleRenderer()
        logger_factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        library_renderer = structlog.processors.JSONRenderer(serializer=_orjson_text)
        logger_factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=[*shared, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_library_record, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                library_renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    logging.getLogger("websockets").setLevel(max(numeric_level, logging.WARNING))
    logging.captureWarnings(True)
