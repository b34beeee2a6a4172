"""Channel names: the rules every channel follows, shared by the gateway and producers (pure).

A channel name is 1 to ``max_length`` characters from a small safe set. Glob
characters are never allowed (a client subscribes to exact channels, never to a
pattern), and names starting with ``__`` are reserved: Redis uses them for keyspace
notifications and the gateway for its control channel.
"""

from __future__ import annotations

import re

__all__ = [
    "CONTROL_CHANNEL",
    "RESERVED_PREFIX",
    "USER_CHANNEL_PREFIX",
    "channel_problem",
    "user_channel",
]

RESERVED_PREFIX = "__"
#: Gateway-to-gateway commands (session revocation); unreachable for clients.
CONTROL_CHANNEL = "__notify_gateway__:control"
#: ``user:{id}``: a user's private channel (:func:`user_channel`)
USER_CHANNEL_PREFIX = "user:"

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


def user_channel(user_id: str) -> str:
    """The private channel of a user, which its sessions may always read."""
    return USER_CHANNEL_PREFIX + user_id
