"""Many clients authenticating at once (a reconnect storm after a restart)."""

from __future__ import annotations

import asyncio

from gateway.server import Gateway
from tests.conftest import MakeSession, ws_url
from tests.support.ws import connect_authed


async def test_more_concurrent_logins_than_pool_connections_all_get_welcome(
    gateway: Gateway, make_session: MakeSession
) -> None:
    # The session-lookup pool holds 16 connections; 60 lookups at once must queue, not fail.
    tokens = await asyncio.gather(*(make_session(str(i)) for i in range(60)))
    opened = await asyncio.gather(*(connect_authed(ws_url(gateway), t) for t in tokens))
    assert sorted(welcome["user"] for _, welcome in opened) == sorted(str(i) for i in range(60))
    await asyncio.gather(*(ws.close() for ws, _ in opened))
