"""Reading channel history back from Redis: client resumes and the gateway's own recovery."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

import orjson
import structlog
from redis.exceptions import RedisError

from gateway.history import READ_SCRIPT, HistoryKeys, Position
from gateway.protocol import message_frame
from gateway.redis_client import AnyRedis

__all__ = ["HistoryReader", "Recoverer", "Replay"]

log = structlog.get_logger("gateway.recovery")


@dataclasses.dataclass(frozen=True, slots=True)
class Replay:
    """A channel's latest position and, when ``recovered``, the frames missed since a position."""

    position: Position
    recovered: bool
    frames: list[bytes]


class HistoryReader:
    """Reads ``meta`` and the stream in one MULTI (both keys live in one slot)."""

    def __init__(self, redis: AnyRedis, prefix: str, max_replay: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._max_replay = max_replay
        self._read = redis.register_script(READ_SCRIPT)

    async def read(self, channel: str, since: Position | None) -> Replay | None:
        """None when the channel has no history; else its position and what ``since`` missed."""
        keys = HistoryKeys.for_channel(self._prefix, channel)
        first = "" if since is None else f"{since.offset + 1}-0"
        results = await self._read(
            keys=[keys.meta, keys.stream], args=[first, self._max_replay + 1]
        )
        epoch, offset = results[0]
        if epoch is None or offset is None:
            return None
        latest = Position(int(offset), epoch.decode())
        if since is None:
            return Replay(latest, False, [])
        missed = latest.offset - since.offset
        if since.epoch != latest.epoch or missed < 0 or missed > self._max_replay:
            return Replay(latest, False, [])
        entries: list[tuple[bytes, list[bytes]]] = results[1][:missed]  # (id, [field, value])
        offsets = [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]
        if offsets != list(range(since.offset + 1, latest.offset + 1)):
            return Replay(latest, False, [])  # trimmed or expired: the window has moved on
        channel_json = orjson.dumps(channel)
        frames = [
            message_frame(channel_json, fields[1], number, latest.epoch)
            for number, (_, fields) in zip(offsets, entries, strict=True)
        ]
        return Replay(latest, True, frames)


class Recoverer:
    """Recovers channels after the subscriber reconnects, a few at a time.

    The semaphore bounds concurrent stream reads, so a recovery storm after a Redis
    restart cannot starve live delivery of the event loop or of Redis.
    """

    def __init__(
        self,
        reader: HistoryReader,
        finish: Callable[[str, Sequence[bytes] | None, int], None],
        concurrency: int = 4,
    ) -> None:
        self._reader = reader
        self._finish = finish
        self._semaphore = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, channel: str, since: Position) -> None:
        task = asyncio.get_running_loop().create_task(self._recover(channel, since))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, channel: str, since: Position) -> None:
        replay: Replay | None = None
        async with self._semaphore:
            try:
                replay = await self._reader.read(channel, since)
            except RedisError as exc:
                log.warning("history_read_failed", channel=channel, error=type(exc).__name__)
        if replay is not None and replay.recovered:
            log.info("channel_recovered", channel=channel, messages=len(replay.frames))
            self._finish(channel, replay.frames, replay.position.offset)
        else:
            log.info("channel_gap", channel=channel)
            self._finish(channel, None, since.offset)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
