"""What the gateway's Redis user may do: checked by ``serve`` at start and by ``doctor``.

Permissions are found out by trying, with the gateway's own credentials: subscribe
to one channel of each kind the gateway reads (then unsubscribe), and read a session
key that does not exist. ``ACL DRYRUN`` would need admin rights the gateway user
should not have.
"""

from __future__ import annotations

import re

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from gateway.channels import CONTROL_CHANNEL
from gateway.config import GatewaySettings
from gateway.diagnose import RedisSetupError, diagnose

__all__ = ["PROBE_NAME", "Probe", "gateway_probes", "probe", "verify_gateway_access"]

#: stands for the variable part of names: no client or backend uses it
PROBE_NAME = "notify-gateway-check"

_GLOB_CLASS = re.compile(r"\[([^\]]*)\]")


def _sample(glob: str) -> str:
    """A channel name matching ``glob`` (``public:*`` -> ``public:notify-gateway-check``)."""
    name = _GLOB_CLASS.sub(lambda m: (m.group(1).lstrip("!^") or "x")[:1], glob)
    return name.replace("*", PROBE_NAME).replace("?", "x")


#: (command, channel or key): one thing the gateway does, for a channel or key of each kind
Probe = tuple[str, str]


def gateway_probes(settings: GatewaySettings) -> list[Probe]:
    """Every command the gateway needs, with a channel or key standing for its kind."""
    channels = [CONTROL_CHANNEL, *map(_sample, settings.public_channels), f"user:{PROBE_NAME}"]
    probes: list[Probe] = [("SUBSCRIBE", channel) for channel in dict.fromkeys(channels)]
    probes.append(("GET", f"{settings.session_prefix}{PROBE_NAME}"))
    return probes


#: seconds to wait for a SUBSCRIBE confirmation (Redis sends it at once)
CONFIRM_TIMEOUT_S = 5.0


async def probe(redis: Redis, command: str, name: str) -> None:
    """Try one command; raises what Redis answered (``NoPermissionError`` when refused)."""
    if command == "GET":
        await redis.get(name)
        return
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(name)
        # The confirmation, or the NOPERM error raised while reading it.
        await pubsub.get_message(timeout=CONFIRM_TIMEOUT_S)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def verify_gateway_access(redis: Redis, settings: GatewaySettings) -> None:
    """Raise :class:`RedisSetupError` if the ACL refuses anything the gateway needs."""
    for command, name in gateway_probes(settings):
        try:
            await probe(redis, command, name)
        except NoPermissionError as exc:
            raise RedisSetupError(diagnose(exc, settings.redis, f"{command} {name}")) from exc
