"""Exceptions as text: the one way a failure becomes part of a message or a log field."""

from __future__ import annotations

import os
import ssl

__all__ = ["describe"]


def describe(exc: BaseException, limit: int = 200) -> str:
    """A log-safe, one-line description of ``exc``, without a final full stop.

    ``timed out`` for a timeout, an OS error's own words (``Connection refused``), a TLS
    error's reason, else the first line of its text (at most ``limit`` characters), else
    the name of its type. Messages that may echo a secret are scrubbed by their callers.
    """
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        # The errno's own words: asyncio's "Connect call failed ('h', 1)" names no cause.
        return os.strerror(exc.errno) if exc.errno else str(exc.strerror)
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0][:limit].rstrip(".")
