"""Channel names and who may read them: pure rules, shared with the publisher library.

A channel name is 1 to ``max_length`` characters from a small safe set. Glob
characters are never allowed (a client subscribes to exact channels, never to a
pattern), and names starting with ``__`` are reserved: Redis uses them for keyspace
notifications and the gateway for its control channel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

__all__ = [
    "CONTROL_CHANNEL",
    "RESERVED_PREFIX",
    "ChannelPolicy",
    "channel_problem",
]

RESERVED_PREFIX = "__"
#: Gateway-to-gateway commands (session revocation); unreachable for clients.
CONTROL_CHANNEL = "__notify_gateway__:control"

_ALLOWED = re.compile(r"[A-Za-z0-9_.:@/+=#~-]+")
_GLOB = re.compile(r"[*?\[\]]")


def channel_problem(channel: object, max_length: int = 200) -> str | None:
    """Say what is wrong with a channel name, or return None when it is valid."""
    if not isinstance(channel, str):
        return "channel must be a string"
    if not channel:
        return "channel must not be empty"
    if len(channel) > max_length:
        return f"channel is {len(channel)} characters long; the maximum is {max_length}"
    if _GLOB.search(channel):
        return "channel must be an exact name: glob patterns (*, ?, [ ]) are not allowed"
    if channel.startswith(RESERVED_PREFIX):
        return "channels starting with '__' are reserved (Redis keyspace events, gateway control)"
    if not _ALLOWED.fullmatch(channel):
        return "channel may only contain letters, digits and _ . : @ / + = # ~ -"
    return None


class ChannelPolicy:
    """Which channels a user may subscribe to.

    A user may read ``user:{user_id}``, every channel matching one of the operator's
    public globs, and every channel matching one of the session's own globs.
    """

    __slots__ = ("_public",)

    def __init__(self, public_globs: Iterable[str]) -> None:
        self._public = tuple(public_globs)

    def allows(self, user_id: str, session_globs: Iterable[str], channel: str) -> bool:
        """Whether ``channel`` (already validated) may be read by this session."""
        if channel == f"user:{user_id}":
            return True
        return any(fnmatchcase(channel, glob) for glob in (*self._public, *session_globs))
