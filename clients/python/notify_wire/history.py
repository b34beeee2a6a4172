"""Per-channel history: the stream layout, the atomic publish script and the envelope (pure).

A channel published with history has two keys sharing the channel as hash tag (one
Redis Cluster slot):

- ``{prefix}{<channel>}:meta``: a hash with ``epoch`` (random id of this stream's life)
  and ``offset`` (last offset given out);
- ``{prefix}{<channel>}:stream``: a stream of the last messages, entry id ``<offset>-0``,
  field ``d`` holding the payload, trimmed approximately to the configured size.

:data:`PUBLISH_SCRIPT` increments the offset, appends, refreshes the retention TTL and
publishes an envelope in one atomic step, so a reader can always tell "same stream,
later offset" from "data was lost" (the epoch changed, or the offset fell out of the
window). The envelope is the payload prefixed with ``\\x00ngh1 <offset> <epoch> ``: no
JSON text starts with a NUL byte, so plain publishes are never mistaken for one.

Pub/sub does not say who published a message, so whoever may ``PUBLISH`` on a channel can
write an envelope there: the Redis ACL is what keeps envelopes to the producers' script
(docs/publishing.md). The gateway still checks each one (:func:`open_envelope`): an offset
from 1 to 2**53 - 1 (exact in JavaScript), an epoch of 1 to 32 lowercase hex digits, the
form :func:`position_problem` accepts back from clients.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = [
    "ENVELOPE_PREFIX",
    "MAX_OFFSET",
    "PUBLISH_SCRIPT",
    "READ_SCRIPT",
    "Envelope",
    "HistoryKeys",
    "Position",
    "open_envelope",
    "position_problem",
]

ENVELOPE_PREFIX = b"\x00ngh1 "
#: the largest offset an envelope may carry: the largest integer a JavaScript number holds exactly
MAX_OFFSET = 2**53 - 1
_EPOCH = re.compile(r"[0-9a-f]{1,32}")
# An offset of at most 16 digits without a leading zero, an epoch, and the data after a space.
_ENVELOPE = re.compile(re.escape(ENVELOPE_PREFIX) + rb"([1-9][0-9]{0,15}) ([0-9a-f]{1,32}) ")
# The prefix as a Lua string literal (the NUL byte escaped), for the publish script.
_LUA_PREFIX = ENVELOPE_PREFIX.decode().replace("\x00", "\\0")

# KEYS: meta, stream. ARGV: channel, payload, maxlen, retention seconds, candidate epoch,
# and the publish command: PUBLISH, or SPUBLISH on a cluster (the channel hashes to the slot
# of its own keys, whose hash tag is the channel). A candidate epoch gateways would refuse
# is an error here, where the producer sees it, not a silent drop in every gateway.
PUBLISH_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[5]
  if #epoch > 32 or not string.match(epoch, '^[0-9a-f]+$') then
    return redis.error_reply('ERR history epoch must be 1 to 32 lowercase hex digits')
  end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], offset .. '-0', 'd', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local envelope = '$PREFIX' .. offset .. ' ' .. epoch .. ' ' .. ARGV[2]
return {redis.call(ARGV[6] or 'PUBLISH', ARGV[1], envelope), offset, epoch}
""".replace("$PREFIX", _LUA_PREFIX)

# KEYS: meta, stream. ARGV: first stream id wanted ('' for none), most entries, most bytes of
# data. Answers {meta, entries, over}: the entries are read in pages of 16 and given up as soon
# as their data passes the byte limit (over = 1, no entries), so neither Redis nor the gateway
# holds more than the limit and a page for one replay, however big the stream's messages are.
# One script rather than MULTI: it runs the same on a single Redis and on a cluster.
READ_SCRIPT = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
if ARGV[1] == '' then return {meta, {}, 0} end
local want, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local entries, size, from = {}, 0, ARGV[1]
while #entries < want do
  local count = math.min(16, want - #entries)
  local page = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', count)
  for _, entry in ipairs(page) do
    size = size + #entry[2][2]
    if size > budget then return {meta, {}, 1} end
    entries[#entries + 1] = entry
  end
  if #page < count then break end
  from = '(' .. page[#page][1]
end
return {meta, entries, 0}
"""


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryKeys:
    meta: str
    stream: str

    @classmethod
    def for_channel(cls, prefix: str, channel: str) -> HistoryKeys:
        tag = f"{prefix}{{{channel}}}"
        return cls(meta=f"{tag}:meta", stream=f"{tag}:stream")


#: ``(offset, epoch, data)`` of a history message: a plain tuple, the fan-out opens one
#: per message (a dataclass would cost about 250 ns more each)
Envelope = tuple[int, str, bytes]


def open_envelope(payload: bytes) -> Envelope | None:
    """The history envelope of a payload that starts with :data:`ENVELOPE_PREFIX`.

    None when the rest is not a valid envelope: the caller drops such a message.
    """
    found = _ENVELOPE.match(payload)
    if found is None:
        return None
    offset = int(found[1])  # at most 16 digits: never near int()'s digit limit
    if offset > MAX_OFFSET:
        return None
    return offset, found[2].decode(), payload[found.end() :]


@dataclasses.dataclass(frozen=True, slots=True)
class Position:
    """Where a client stands in a channel's history (the ``since`` of a subscribe)."""

    offset: int
    epoch: str


def position_problem(since: object) -> str | None:
    """What is wrong with a ``since`` object, or None when it is a valid position."""
    if not isinstance(since, dict):
        return "since must be an object {offset, epoch}"
    offset, epoch = since.get("offset"), since.get("epoch")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        return "since.offset must be a whole number from 0 to 2**53 - 1"
    if not isinstance(epoch, str) or not _EPOCH.fullmatch(epoch):
        return "since.epoch must be the epoch string the gateway sent"
    return None
