"""The logged-in connections of a process, by session: for revocation, re-checks, leases."""

from __future__ import annotations

from collections.abc import Iterator

from gateway.conn.connection import ClientConnection
from notify_wire.sessions import Session

__all__ = ["ConnectionIndex"]


class ConnectionIndex:
    """Logged-in connections by the digest of their session's token."""

    __slots__ = ("_by_digest",)

    def __init__(self) -> None:
        self._by_digest: dict[str, set[ClientConnection]] = {}

    def add(self, client: ClientConnection, session: Session) -> None:
        self._by_digest.setdefault(session.digest, set()).add(client)

    def remove(self, client: ClientConnection, session: Session) -> None:
        peers = self._by_digest.get(session.digest)
        if peers is None:
            return
        peers.discard(client)
        if not peers:
            del self._by_digest[session.digest]

    def of_session(self, digest: str) -> list[ClientConnection]:
        """The connections of one session (a copy: closing them changes the index)."""
        return list(self._by_digest.get(digest, ()))

    def sessions(self) -> list[Session]:
        """One stored session per session open here (each re-checked once)."""
        return [_session(next(iter(peers))) for peers in self._by_digest.values()]

    def clients(self) -> Iterator[ClientConnection]:
        for peers in self._by_digest.values():
            yield from peers

    def leases(self) -> dict[str, list[str]]:
        """``{user: [conn_id, ...]}`` of the connections still open (their leases to renew)."""
        leases: dict[str, list[str]] = {}
        for client in self.clients():
            if not client.closed:
                leases.setdefault(_session(client).user_id, []).append(client.conn_id)
        return leases


def _session(client: ClientConnection) -> Session:
    assert client.state is not None  # only logged-in clients are indexed
    return client.state.session
