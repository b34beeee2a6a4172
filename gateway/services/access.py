"""What the gateway's Redis user may do: checked by ``serve`` at start and by ``doctor``.

Permissions are found out by trying, with the gateway's own credentials, everything
the gateway does, on names that stand for each kind: subscribe to a channel of each
kind it reads (then unsubscribe), look up a session key and a channel history that
do not exist, and take and release an admission slot for a user no client has.
``ACL DRYRUN`` would need admin rights the gateway user should not have.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.broker.diagnose import RedisSetupError, diagnose
from gateway.config import GatewaySettings
from gateway.services.admission import AdmissionControl
from gateway.services.history import HistoryReader
from notify_wire.channels import CONTROL_CHANNEL, user_channel
from notify_wire.history import Position

__all__ = ["PROBE_NAME", "Probe", "gateway_probes", "verify_gateway_access"]

#: stands for the variable part of names: no client, user or backend uses it
PROBE_NAME = "notify-gateway-check"
#: seconds to wait for a SUBSCRIBE confirmation (Redis sends it at once)
CONFIRM_TIMEOUT_S = 5.0

_GLOB_CLASS = re.compile(r"\[([^\]]*)\]")


def _sample(glob: str) -> str:
    """A channel name matching ``glob`` (``public:*`` -> ``public:notify-gateway-check``)."""
    name = _GLOB_CLASS.sub(lambda m: (m.group(1).lstrip("!^") or "x")[:1], glob)
    return name.replace("*", PROBE_NAME).replace("?", "x")


@dataclasses.dataclass(frozen=True, slots=True)
class Probe:
    """One thing the gateway does; ``run`` raises what Redis answered."""

    #: what is tried, for messages (``SUBSCRIBE notifications``)
    doing: str
    run: Callable[[], Awaitable[object]]


async def _subscribe(redis: Redis, channel: str) -> None:
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(channel)
        # The confirmation, or the NOPERM error raised while reading it.
        await pubsub.get_message(timeout=CONFIRM_TIMEOUT_S)
    finally:
        await pubsub.aclose()


async def _admission_cycle(admission: AdmissionControl) -> None:
    """Take, renew and release a connection slot, as every client connection does."""
    await admission.admit(PROBE_NAME, PROBE_NAME)
    await admission.renew({PROBE_NAME: [PROBE_NAME]})
    await admission.release(PROBE_NAME, PROBE_NAME)


def gateway_probes(redis: Redis, settings: GatewaySettings) -> list[Probe]:
    """Everything the gateway asks of Redis, with a channel or key of each kind."""
    channels = [CONTROL_CHANNEL, *map(_sample, settings.public_channels), user_channel(PROBE_NAME)]
    probes = [Probe("PING", redis.ping)]  # the subscriber's liveness check
    probes += [
        Probe(f"SUBSCRIBE {channel}", functools.partial(_subscribe, redis, channel))
        for channel in dict.fromkeys(channels)
    ]
    session = f"{settings.session_prefix}{PROBE_NAME}"
    probes += [
        Probe(f"GET {session}", lambda: redis.get(session)),
        Probe(f"EXISTS {session}", lambda: redis.exists(session)),
    ]
    reader = HistoryReader(redis, settings.history_prefix, max_replay=1)
    probes.append(
        Probe(
            f"HMGET+XRANGE {settings.history_prefix}*",
            lambda: reader.read(user_channel(PROBE_NAME), Position(0, "0")),
        )
    )
    limits = settings.admission
    admission = AdmissionControl(redis, limits, lease_s=10.0)
    probes.append(
        Probe(
            f"admission scripts on {limits.key_prefix}*",
            lambda: _admission_cycle(admission),
        )
    )
    if limits.max_attempts_per_ip > 0:
        probes.append(
            Probe(f"INCR {limits.key_prefix}ip:*", lambda: admission.check_ip(PROBE_NAME))
        )
    return probes


async def verify_gateway_access(redis: Redis, settings: GatewaySettings) -> None:
    """Raise :class:`RedisSetupError` if the ACL refuses anything the gateway needs, or Redis
    refuses the configuration otherwise (a database it does not have, say)."""
    for probe in gateway_probes(redis, settings):
        try:
            await probe.run()
        except RedisError as exc:
            found = diagnose(exc, settings.redis, probe.doing)
            if found.fatal:
                raise RedisSetupError(found) from exc
            raise
