"""Every library call as Redis commands plus a reading of their replies (pure, no I/O).

:class:`Publisher` and :class:`AsyncPublisher` differ only in how they send an
:class:`Operation`; validation, encoding and the meaning of replies live here once.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from notify_publisher.payload import encode_message
from notify_publisher.sessions import (
    check_token,
    check_ttl,
    decode_session,
    new_token,
    session_record,
)
from notify_publisher.settings import PublisherSettings
from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.control import revoke_message
from notify_wire.history import PUBLISH_SCRIPT, HistoryKeys
from notify_wire.sessions import session_digest

__all__ = ["Command", "Operation", "Operations"]

T = TypeVar("T")

Command = tuple[str | bytes | int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Operation(Generic[T]):
    """Commands to send in one round trip and how their replies make the result.

    ``atomic`` wraps them in MULTI/EXEC: all run or none does.
    """

    name: str
    commands: Sequence[Command]
    result: Callable[[list[Any]], T]
    atomic: bool = False

    def one_at_a_time(self, cluster: bool) -> bool:
        """Send the commands one by one rather than in a pipeline: a lone command needs
        none, and a cluster spreads the commands over slots (one at a time, not atomic)."""
        return cluster or (len(self.commands) == 1 and not self.atomic)


def _receivers_of(reply: Any) -> int:
    # PUBLISH answers the count; the history script answers [count, offset, epoch].
    return int(reply[0] if isinstance(reply, list) else reply)


def _receivers(replies: list[Any]) -> int:
    return _receivers_of(replies[0])


def _all_receivers(replies: list[Any]) -> list[int]:
    return [_receivers_of(reply) for reply in replies]


def _first_bool(replies: list[Any]) -> bool:
    return bool(replies[0])


def _first_session(replies: list[Any]) -> dict[str, Any] | None:
    raw = replies[0]
    return None if raw is None else decode_session(raw)


class Operations:
    """Builds the :class:`Operation` of each call, validating its arguments first."""

    __slots__ = ("settings",)

    def __init__(self, settings: PublisherSettings) -> None:
        self.settings = settings

    def publish(self, channel: str, data: Any, history: bool = False) -> Operation[int]:
        command = self._publish_command(
            channel, encode_message(channel, data, self.settings), history
        )
        return Operation(str(command[0]), [command], _receivers)

    def publish_many(
        self, items: Iterable[tuple[str, Any]], history: bool = False
    ) -> Operation[list[int]]:
        commands: list[Command] = []
        for index, item in enumerate(items):
            try:
                channel, data = item
                payload = encode_message(channel, data, self.settings)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"item {index}: {exc}") from None
            commands.append(self._publish_command(channel, payload, history))
        name = "EVAL" if history else self._publish_name
        return Operation(name, commands, _all_receivers, atomic=True)

    def _publish_command(self, channel: str, payload: bytes, history: bool) -> Command:
        if not history:
            return (self._publish_name, channel, payload)
        # Append to the channel's stream and publish, atomically (notify_wire/history.py).
        keys = HistoryKeys.for_channel(self.settings.history_prefix, channel)
        return (
            "EVAL", PUBLISH_SCRIPT, 2, keys.meta, keys.stream, channel, payload,
            self.settings.history_size, self.settings.history_retention_s,
            secrets.token_hex(8), self._publish_name,
        )  # fmt: skip

    @property
    def _publish_name(self) -> str:
        # Gateways on a cluster read sharded pub/sub: SPUBLISH stays on the slot's master.
        return "SPUBLISH" if self.settings.redis.cluster else "PUBLISH"

    def create_session(
        self, user_id: str | int, ttl: int, channels: Iterable[str], extra: dict[str, Any]
    ) -> Operation[str]:
        record = session_record(
            user_id,
            channels,
            extra,
            max_bytes=self.settings.max_session_bytes,
            max_user_id_length=self.settings.max_user_id_length,
        )
        token = new_token()
        set_command = ("SET", self._key(token), record, "EX", check_ttl(ttl))
        return Operation("SET", [set_command], lambda _replies: token)

    def get_session(self, token: str) -> Operation[dict[str, Any] | None]:
        return Operation("GET", [("GET", self._key(token))], _first_session)

    def refresh_session(self, token: str, ttl: int) -> Operation[bool]:
        command = ("EXPIRE", self._key(token), check_ttl(ttl))
        return Operation("EXPIRE", [command], _first_bool)

    def revoke_session(self, token: str) -> Operation[bool]:
        commands: list[Command] = [
            ("DEL", self._key(token)),
            # Published even when the key is already gone: sockets opened before it
            # expired or was deleted elsewhere are still open.
            (self._publish_name, CONTROL_CHANNEL, revoke_message(session_digest(token))),
        ]
        return Operation(f"DEL+{self._publish_name}", commands, _first_bool, atomic=True)

    def _key(self, token: str) -> str:
        return self.settings.session_prefix + check_token(token)
