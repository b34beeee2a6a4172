"""Every session token the tests issue, so the suite can prove none reached a log."""

from __future__ import annotations

import secrets

__all__ = ["ISSUED", "issued", "new_token"]

ISSUED: set[str] = set()


def new_token() -> str:
    return issued(secrets.token_urlsafe(24))


def issued(token: str) -> str:
    """Record a token issued elsewhere (the publisher library, the CLI) for the log check."""
    ISSUED.add(token)
    return token
