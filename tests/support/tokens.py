"""Every session token the tests issue, so the suite can prove none reached a log."""

from __future__ import annotations

import secrets

__all__ = ["ISSUED", "new_token"]

ISSUED: set[str] = set()


def new_token() -> str:
    token = secrets.token_urlsafe(24)
    ISSUED.add(token)
    return token
