"""Every library call as Redis commands plus a reading of their replies (pure, no I/O).

:class:`Publisher` and :class:`AsyncPublisher` differ only in how they send an
:class:`Operation`; validation, encoding and the meaning of replies live here once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from clients.payload import encode_message
from clients.sessions import check_token, check_ttl, decode_session, new_token, session_record
from clients.settings import PublisherSettings
from gateway.channels import CONTROL_CHANNEL
from gateway.control import revoke_message
from gateway.session import session_digest

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


def _first_int(replies: list[Any]) -> int:
    return int(replies[0])


def _ints(replies: list[Any]) -> list[int]:
    return [int(reply) for reply in replies]


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

    def publish(self, channel: str, data: Any) -> Operation[int]:
        payload = encode_message(channel, data, self.settings)
        return Operation("PUBLISH", [("PUBLISH", channel, payload)], _first_int)

    def publish_many(self, items: Iterable[tuple[str, Any]]) -> Operation[list[int]]:
        commands: list[Command] = []
        for index, item in enumerate(items):
            try:
                channel, data = item
                commands.append(("PUBLISH", channel, encode_message(channel, data, self.settings)))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"item {index}: {exc}") from None
        return Operation("PUBLISH", commands, _ints, atomic=True)

    def create_session(
        self, user_id: str | int, ttl: int, channels: Iterable[str], extra: dict[str, Any]
    ) -> Operation[str]:
        record = session_record(user_id, channels, extra)
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
            ("PUBLISH", CONTROL_CHANNEL, revoke_message(session_digest(token))),
        ]
        return Operation("DEL+PUBLISH", commands, _first_bool, atomic=True)

    def _key(self, token: str) -> str:
        return self.settings.session_prefix + check_token(token)
