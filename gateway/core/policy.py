"""Who may read which channel (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from notify_wire.channels import user_channel

__all__ = ["ChannelPolicy"]


class ChannelPolicy:
    """Which channels a user may subscribe to.

    A user may read its own channel (:func:`~notify_wire.channels.user_channel`), every
    channel matching one of the operator's public globs, and every channel matching one of
    the session's own globs.
    """

    __slots__ = ("_public",)

    def __init__(self, public_globs: Iterable[str]) -> None:
        self._public = tuple(public_globs)

    def allows(self, user_id: str, session_globs: Iterable[str], channel: str) -> bool:
        """Whether ``channel`` (already validated) may be read by this session."""
        if channel == user_channel(user_id):
            return True
        return any(fnmatchcase(channel, glob) for glob in (*self._public, *session_globs))
