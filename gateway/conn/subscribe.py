"""Subscribing one client to one channel: join, read history, reply, go live."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.exceptions import RedisError

from gateway.conn.connection import ClientConnection
from gateway.core.client import SubscribeChannel
from gateway.core.frames import error_frame, reply_frame
from gateway.core.hub import Hub, SubscriptionRefused
from gateway.services.history import HistoryReader, Replay
from notify_wire.codes import ErrorCode

__all__ = ["SUBSCRIBE_TIMEOUT_S", "Subscribing"]

log = structlog.get_logger("gateway.conn")

#: How long a subscribe may wait for Redis to confirm (e.g. while it reconnects).
SUBSCRIBE_TIMEOUT_S = 10.0


class Subscribing:
    """The subscribe step: nothing lost or doubled between the subscription, the history
    read and live delivery."""

    def __init__(self, hub: Hub, history: HistoryReader) -> None:
        self._hub = hub
        self._history = history

    async def subscribe(self, client: ClientConnection, action: SubscribeChannel) -> None:
        """Join the channel, recover from ``since`` if asked, then reply and go live."""
        structlog.contextvars.bind_contextvars(conn=client.conn_id, user=client.user_id)
        channel, ref = action.channel, action.ref
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await self._hub.join(client, channel)
        except (SubscriptionRefused, TimeoutError) as exc:
            self._hub.leave(client, [channel])
            message = (
                f"Redis refused the subscription: {exc}"
                if isinstance(exc, SubscriptionRefused)
                else "Redis did not confirm the subscription in time; try again"
            )
            client.send(error_frame(ErrorCode.UNAVAILABLE, message, ref))
            return
        log.debug("subscribed", channel=channel)
        replay = None
        try:
            replay = await self._history.read(channel, action.since)
        except RedisError as exc:
            log.warning("history_read_failed", channel=channel, error=type(exc).__name__)
        reply, frames = self._reply(action, replay)
        if replay is None:
            client.send(b"".join([reply, self._hub.activate(client, channel)]))
            return
        client.send(b"".join([reply, *frames]))
        # Copies of messages up to the read's offset may still be on their way on the
        # pub/sub connection: go live once they are in (held, and cut off), not before.
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await self._hub.barrier(channel)
        # The reply says where the client stands: held copies of messages up to there
        # (replayed, or published before the read) must not follow it.
        client.send(self._hub.activate(client, channel, replay.position.offset))

    def _reply(self, action: SubscribeChannel, replay: Replay | None) -> tuple[bytes, list[bytes]]:
        """The ``subscribed`` frame and the replayed frames that follow it."""
        fields: dict[str, object] = {"channel": action.channel}
        if replay is None:
            if action.since is not None:
                fields["recovered"] = False
            return reply_frame("subscribed", action.ref, **fields), []
        self._hub.note_position(action.channel, replay.position)
        fields.update(offset=replay.position.offset, epoch=replay.position.epoch)
        if action.since is None:
            return reply_frame("subscribed", action.ref, **fields), []
        fields["recovered"] = replay.recovered
        return reply_frame("subscribed", action.ref, **fields), replay.frames
