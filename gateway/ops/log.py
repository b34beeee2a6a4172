"""structlog set-up: one JSON object per line on stdout (console lines on a terminal),
secrets redacted.

Configured once by :func:`configure_logging`; modules get loggers with
``structlog.get_logger(name)`` and bind ``conn``/``user`` per connection. Records
that libraries send through the standard :mod:`logging` module (websockets,
asyncio's "Exception in callback", Python warnings) are re-emitted through the
same processors as events named ``library_log``, so every stdout line has one shape.
The event names, levels and fields are listed in docs/logging.md (checked by a test).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, BinaryIO

import orjson
import structlog

__all__ = ["LIBRARY_EVENT", "configure_logging", "redact_secrets"]

#: the event name of records from the standard logging module
LIBRARY_EVENT = "library_log"

MASK = "***"

# Field names that hold secrets whatever their value looks like (matched anywhere in the name).
_SECRET_KEY = re.compile(r"token|passw|secret|authorization|cookie|api_?key|credential", re.I)
_SECRET_WORD = r"(?:token|passw|secret|api_?key)"
#: the longest URL password matched only when its ``@`` follows; a longer run after
#: ``scheme://user:`` is masked whether or not an ``@`` follows (over-redaction, never a leak)
_URL_PASSWORD_SCAN = 256
# Each pattern's `lead` is kept and what follows it is masked.
#
# Linear time, whatever the text (a 30,000-character user id took seconds with the
# earlier patterns): a match can start only at a literal anchor (``://``, ``"``, a keyword)
# or at the start of a run of key characters; an unbounded repeat is possessive (``*+``,
# ``++``, no backtracking) and either ends the pattern (what it consumes is part of the
# match, never scanned again) or stops at the next anchor; anything else is bounded.
# tests/test_logging.py counts the steps of a backtracking model of each pattern.
_SCRUBBERS = tuple(
    re.compile(pattern, re.I)
    for pattern in (
        # scheme://user:password@host (the character before :// belongs to a scheme)
        rf"(?P<lead>://(?<=[a-z0-9+.-]://)[^:/@\s]*+:)"
        rf"(?:[^@\s]{{1,{_URL_PASSWORD_SCAN}}}+(?=@)|[^@\s]{{{_URL_PASSWORD_SCAN + 1}}}[^@\s]*+)",
        # an Authorization header, whatever the scheme (Bearer, Basic...)
        r"(?P<lead>authorization[\"']?\s*+[:=]\s*+[\"']?)[^\"'\r\n,}]++",
        # a bearer token anywhere in text
        r"(?P<lead>\bbearer\s++)[^\s\"',}]++",
        # token=..., password=... in query strings and key=value text: the key is the
        # whole run of word characters and dashes, tried once from its first character
        rf"(?<![\w-])(?P<lead>(?>[\w-]*?{_SECRET_WORD})[\w-]*+=)[^&\s\"',;]++",
        # "token": "..." inside JSON text (a client frame echoed in an error, say)
        rf"(?P<lead>\"(?>[\w-]*?{_SECRET_WORD})[\w-]*+\"\s*+:\s*+\")[^\"]*+",
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


class _LibraryHandler(logging.Handler):
    """Re-emits standard :mod:`logging` records as ``library_log`` structlog events."""

    def __init__(self) -> None:
        super().__init__()
        self._log = structlog.get_logger("gateway.library")

    def emit(self, record: logging.LogRecord) -> None:
        # Custom numeric levels map to the standard level at or below them.
        level = min(max(record.levelno // 10 * 10, logging.DEBUG), logging.CRITICAL)
        try:
            self._log.log(
                level,
                LIBRARY_EVENT,
                message=record.getMessage().rstrip(),
                logger=record.name,
                exc_info=record.exc_info or False,
            )
        except Exception:
            self.handleError(record)


def configure_logging(level: str = "info", fmt: str = "json", file: BinaryIO | None = None) -> None:
    """Send structured events to stdout (or ``file``) as JSON lines, or console lines.

    ``fmt`` ``auto`` is console lines when stdout is a terminal, JSON otherwise; console
    lines are coloured only on a terminal. Records of the standard :mod:`logging` module
    go through the same processors and sink; websockets' own records below WARNING are
    dropped, as the gateway logs connections itself.
    """
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    terminal = file is None and sys.stdout.isatty()
    if fmt == "auto":
        fmt = "console" if terminal else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=terminal)
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
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [_LibraryHandler()]
    root.setLevel(numeric_level)
    logging.getLogger("websockets").setLevel(max(numeric_level, logging.WARNING))
    logging.captureWarnings(True)
