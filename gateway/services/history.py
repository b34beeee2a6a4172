"""Reading channel history back from Redis: client resumes and the gateway's own recovery.

A replay is bounded twice: by messages (``GATEWAY_MAX_REPLAY``) and by bytes
(``GATEWAY_MAX_REPLAY_BYTES``). The read script gives up past the byte limit before the
data leaves Redis, and at most :data:`REPLAY_CONCURRENCY` replays are read at once per
process, so replays hold at most that many times the limit, whatever the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError

from gateway.core.frames import message_frame
from notify_publisher.connect import AnyRedis
from notify_wire.history import READ_SCRIPT, HistoryKeys, Position

__all__ = ["REPLAY_CONCURRENCY", "HistoryReader", "Recoverer", "Replay"]

log = structlog.get_logger("gateway.recovery")

#: replays read (and framed) at once per process; the others wait their turn. It also keeps
#: a recovery storm after a Redis restart from starving live delivery.
REPLAY_CONCURRENCY = 4


@dataclasses.dataclass(frozen=True, slots=True)
class Replay:
    """A channel's latest position and, when ``recovered``, the frames missed since a position.

    ``reason`` says why a replay asked for was not recovered: ``epoch`` (the stream was
    recreated), ``too_many`` (more than ``GATEWAY_MAX_REPLAY`` missed), ``too_large`` (over
    ``GATEWAY_MAX_REPLAY_BYTES``) or ``trimmed`` (out of the stream's window).
    """

    position: Position
    recovered: bool
    frames: list[bytes]
    reason: str | None = None


class HistoryReader:
    """Reads ``meta`` and the stream in one script (both keys live in one slot)."""

    def __init__(
        self, redis: AnyRedis, prefix: str, max_replay: int, max_replay_bytes: int = 1024 * 1024
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._max_replay = max_replay
        self._max_bytes = max_replay_bytes
        self._read = redis.register_script(READ_SCRIPT)
        self._slots = asyncio.Semaphore(REPLAY_CONCURRENCY)

    async def read(self, channel: str, since: Position | None) -> Replay | None:
        """None when the channel has no history; else its position and what ``since`` missed."""
        names = HistoryKeys.for_channel(self._prefix, channel)
        keys = [names.meta, names.stream]
        if since is None:  # the position alone: cheap, no turn to wait for
            results = await self._read(keys=keys, args=["", 0, 0])
            return self._replay(channel, since, results)
        async with self._slots:
            args: list[str | int] = [f"{since.offset + 1}-0", self._max_replay, self._max_bytes]
            return self._replay(channel, since, await self._read(keys=keys, args=args))

    def _replay(self, channel: str, since: Position | None, results: Any) -> Replay | None:
        (epoch, offset), entries, over = results
        if epoch is None or offset is None:
            return None
        latest = Position(int(offset), epoch.decode())
        if since is None:
            return Replay(latest, False, [])
        missed = latest.offset - since.offset
        if since.epoch != latest.epoch or missed < 0:
            return Replay(latest, False, [], "epoch")
        if missed > self._max_replay:
            return Replay(latest, False, [], "too_many")
        if over:
            return Replay(latest, False, [], "too_large")
        entries = entries[:missed]  # (id, [field, value])
        offsets = [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]
        if offsets != list(range(since.offset + 1, latest.offset + 1)):
            return Replay(latest, False, [], "trimmed")  # the window has moved on
        channel_json = orjson.dumps(channel)
        frames = [
            message_frame(channel_json, fields[1], number, latest.epoch)
            for number, (_, fields) in zip(offsets, entries, strict=True)
        ]
        # The script counted the data; a frame adds its head, and escapes data that is not JSON.
        if sum(map(len, frames)) > self._max_bytes:
            return Replay(latest, False, [], "too_large")
        return Replay(latest, True, frames)


class Recoverer:
    """Recovers channels after the subscriber reconnects, :data:`REPLAY_CONCURRENCY` at a time.

    Channels waiting for their turn are a dict entry each, not a task each: a reconnect
    with many history channels costs no more than the registry already holds for them.
    """

    def __init__(
        self,
        reader: HistoryReader,
        finish: Callable[[str, object, Sequence[bytes] | None, int], bool],
        barrier: Callable[[str], Awaitable[None]],
    ) -> None:
        self._reader = reader
        self._finish = finish
        self._barrier = barrier
        # channel -> (position, the registry's ticket for this recovery), in arrival order
        self._pending: dict[str, tuple[Position, object]] = {}
        self._workers: set[asyncio.Task[None]] = set()

    def start(self, channel: str, since: Position, ticket: object) -> None:
        self._pending[channel] = (since, ticket)
        if len(self._workers) < REPLAY_CONCURRENCY:
            task = asyncio.get_running_loop().create_task(self._work())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        while self._pending:
            channel = next(iter(self._pending))
            await self._recover(channel, *self._pending.pop(channel))

    async def _recover(self, channel: str, since: Position, ticket: object) -> None:
        replay: Replay | None = None
        try:
            replay = await self._reader.read(channel, since)
        except RedisError as exc:
            log.warning("history_read_failed", channel=channel, error=type(exc).__name__)
            reason: str | None = "read_failed"
        else:
            reason = "no_history" if replay is None else replay.reason
            # Live copies of replayed messages may still be on their way: finish after them.
            with contextlib.suppress(ConnectionError):
                await self._barrier(channel)
        # Logged only when delivered: meanwhile the connection may have dropped again, or
        # the live messages held for the channel may have passed the limit (a gap already).
        if replay is not None and replay.recovered:
            if self._finish(channel, ticket, replay.frames, replay.position.offset):
                log.info("channel_recovered", channel=channel, messages=len(replay.frames))
        elif self._finish(channel, ticket, None, since.offset):
            log.info("channel_gap", channel=channel, reason=reason)

    async def close(self) -> None:
        self._pending.clear()
        for task in list(self._workers):
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
