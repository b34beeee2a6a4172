"""Gateway-to-gateway commands on the reserved control channel (pure).

Publishers revoke a session with ``PUBLISH __notify_gateway__:control
'{"type":"revoke","session":"<sha256 hex of the token>"}'``: every gateway closes that
session's sockets with 4001. The message carries a digest, never the token.
"""

from __future__ import annotations

import dataclasses
import re

import orjson

__all__ = ["Revoke", "parse_control", "revoke_message"]

_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True, slots=True)
class Revoke:
    digest: str


def revoke_message(digest: str) -> bytes:
    """The control message that revokes the session with this token digest."""
    return orjson.dumps({"type": "revoke", "session": digest})


def parse_control(payload: bytes) -> Revoke | None:
    """Decode a control message; None for anything not understood."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("type") != "revoke":
        return None
    digest = obj.get("session")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        return None
    return Revoke(digest)
