"""``notify-gateway doctor``: a troubleshooting checklist against the configured Redis.

Connects with the gateway's own settings and credentials and prints one line per
check, ``OK``, ``WARN`` or ``FAIL`` (or JSON with ``--json``). The exit status is 0
when nothing fails. A command the ACL (or a managed service) refuses makes its check
a ``WARN`` saying what could not be checked, never a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from gateway.broker.diagnose import diagnose, user_label
from gateway.broker.probe import refine
from gateway.cli.command import Subcommand
from gateway.config import GatewaySettings, load_settings
from gateway.services.access import PROBE_NAME, gateway_probes
from notify_publisher.connect import redis_kwargs
from notify_wire.redis_config import RedisConfig

__all__ = ["DOCTOR", "Check", "Status", "render", "run_checks"]

#: where the doctor's PUBLISH probe goes: reserved, so no client or gateway reads it
PUBLISH_PROBE_CHANNEL = f"__notify_gateway__:{PROBE_NAME}"
PINGS = 5
SLOW_PING_MS = 20.0
SLOW_COMMAND_MS = 100.0
MEMORY_WARN_RATIO = 0.8
_AUTH_CAUSES = frozenset({"password_required", "wrong_password", "no_password_on_server"})


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _refused(what: str, command: str, exc: RedisError, config: RedisConfig) -> Check:
    """The WARN for a check whose command Redis would not run."""
    if isinstance(exc, NoPermissionError):
        why = f"the ACL of {user_label(config)} refuses {command}"
    elif isinstance(exc, ResponseError) and "unknown command" in str(exc).lower():
        why = f"this Redis disables {command} (managed services often do)"
    else:
        why = diagnose(exc, config).message
    return Check(what, Status.WARN, f"cannot check {what}: {why}")


class _Doctor:
    def __init__(self, settings: GatewaySettings, redis: Redis) -> None:
        self.settings = settings
        self.config = settings.redis
        self.redis = redis
        self.checks: list[Check] = []

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    async def guarded(self, name: str, command: str, check: Callable[[], Awaitable[None]]) -> None:
        try:
            await check()
        except RedisError as exc:
            self.checks.append(_refused(name, command, exc, self.config))

    async def connect(self) -> bool:
        """``reachable`` and ``authenticated``; False when nothing else can be checked."""
        config = self.config
        try:
            await self.redis.ping()
        except RedisError as exc:
            found = await refine(diagnose(exc, config, "PING"), config)
            if found.cause in _AUTH_CAUSES:
                self.add("reachable", Status.OK, f"{config.address} answers")
                self.add("authenticated", Status.FAIL, found.message)
            elif found.cause == "acl_denied":  # logged in, but the gateway needs PING
                self.add("reachable", Status.OK, f"{config.address} answers")
                self.add("acl PING", Status.FAIL, found.message)
            else:
                self.add("reachable", Status.FAIL, found.message)
            return False
        transport = "plaintext"
        if config.tls:
            transport = "TLS, certificate verified" if config.tls_verify else "TLS, NOT verified"
        self.add("reachable", Status.OK, f"{config.address} answers PING ({transport})")
        if config.tls and not config.tls_verify:
            self.add(
                "tls",
                Status.WARN,
                "REDIS_TLS_REJECT_UNAUTHORIZED=false: the server certificate is not checked; "
                "set REDIS_TLS_CA_PATH to its CA instead",
            )
        if config.password is None:
            exposed = not _is_loopback(config.host)
            self.add(
                "authenticated",
                Status.WARN if exposed else Status.OK,
                "no password: Redis accepts anyone who reaches it"
                + ("; use requirepass or an ACL user (docs/redis.md)" if exposed else ""),
            )
        else:
            who = f"ACL user {config.username!r}" if config.username else "the default user"
            self.add("authenticated", Status.OK, f"as {who}")
        return True

    async def version(self) -> None:
        info: dict[str, Any] = await self.redis.info("server")
        raw = str(info.get("redis_version", "0"))
        version = tuple(int(p) for p in raw.split(".")[:2] if p.isdigit())
        if version >= (7, 0):
            self.add("version", Status.OK, f"Redis {raw}: channel ACLs and sharded pub/sub")
        elif version >= (6, 2):
            self.add(
                "version",
                Status.OK,
                f"Redis {raw}: channel ACLs (sharded pub/sub needs 7.0+, not used)",
            )
        else:
            self.add(
                "version",
                Status.WARN,
                f"Redis {raw}: channel ACLs need 6.2+, so the gateway user cannot be limited "
                "to its channels; upgrade",
            )

    async def permissions(self) -> None:
        for probe in gateway_probes(self.redis, self.settings):
            label = f"acl {probe.doing}"
            try:
                await probe.run()
            except RedisError as exc:
                self.add(label, Status.FAIL, diagnose(exc, self.config, probe.doing).message)
            else:
                self.add(label, Status.OK, "allowed")
        await self.publish_refused()

    async def publish_refused(self) -> None:
        """The gateway only reads: a user that may PUBLISH can forge notifications."""
        label = "acl PUBLISH"
        risk = (
            "so a leaked gateway password lets anyone send notifications: use the gateway ACL "
            "of docs/redis.md"
        )
        try:
            user = await self.redis.execute_command("ACL", "WHOAMI")  # type: ignore[no-untyped-call]
            answer = await self.redis.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "DRYRUN", user, "PUBLISH", PUBLISH_PROBE_CHANNEL, "x"
            )
            text = answer.decode() if isinstance(answer, bytes) else str(answer)
            allowed = text == "OK"
        except NoPermissionError:  # no admin rights (as it should be): try for real
            try:
                await self.redis.publish(PUBLISH_PROBE_CHANNEL, b"")  # nobody subscribes to it
                text, allowed = "", True
            except NoPermissionError as refused:
                text, allowed = str(refused), False
        if allowed:
            self.add(label, Status.WARN, f"the gateway's user can PUBLISH, {risk}")
        elif "command" in text:
            self.add(label, Status.OK, "refused, as it should be: the gateway only reads")
        else:
            self.add(label, Status.WARN, f"the PUBLISH command is allowed ({text}), {risk}")

    async def memory(self) -> None:
        info: dict[str, Any] = await self.redis.info("memory")
        limit = int(info.get("maxmemory", 0))
        policy = str(info.get("maxmemory_policy", "unknown"))
        used = int(info.get("used_memory", 0))
        if limit == 0:
            self.add(
                "maxmemory",
                Status.WARN,
                "0 (no limit): Redis grows until the OS kills it; set maxmemory (docs/redis.md)",
            )
        else:
            self.add("maxmemory", Status.OK, _mib(limit))
        if policy == "noeviction":
            self.add(
                "eviction policy",
                Status.OK,
                "noeviction: sessions are never evicted (writes fail with OOM when full)",
            )
        elif policy.startswith(("allkeys-", "volatile-")):
            whom = "any key" if policy.startswith("allkeys-") else "keys with a TTL"
            self.add(
                "eviction policy",
                Status.WARN,
                f"{policy} evicts {whom} under memory pressure, sessions included (users get "
                "logged out): use noeviction where sessions live (docs/redis.md)",
            )
        else:
            self.add("eviction policy", Status.OK, policy)
        share = used / limit if limit else 0.0
        detail = f"{_mib(used)} used" + (f", {share:.0%} of maxmemory" if limit else "")
        status = Status.WARN if share >= MEMORY_WARN_RATIO else Status.OK
        self.add("memory use", status, detail)

    async def output_buffer(self) -> None:
        config = await self.redis.config_get("client-output-buffer-limit")
        words = str(config.get("client-output-buffer-limit", "")).split()
        # "normal 0 0 0 replica 268435456 67108864 60 pubsub 33554432 8388608 60"
        classes = {words[i]: words[i + 1 : i + 4] for i in range(0, len(words) - 3, 4)}
        hard, soft, seconds = (int(x) for x in classes.get("pubsub", ["0", "0", "0"]))
        name = "pubsub output buffer"
        if hard == 0 and soft == 0:
            self.add(
                name,
                Status.WARN,
                "unlimited: a stalled gateway makes Redis buffer its messages without bound; "
                "set client-output-buffer-limit pubsub (docs/redis.md)",
            )
            return
        detail = (
            f"hard {_mib(hard)}, soft {_mib(soft)} for {seconds} s: past it Redis drops the "
            "gateway's subscriber connection (clients get a gap frame)"
        )
        biggest = self.settings.limits.max_message_bytes
        if 0 < hard < biggest:
            self.add(name, Status.WARN, f"{detail}; below GATEWAY_MAX_MESSAGE_BYTES ({biggest})")
        else:
            self.add(name, Status.OK, detail)

    async def slowlog(self) -> None:
        entries: list[dict[str, Any]] = await self.redis.slowlog_get(10)
        if not entries:
            self.add("slowlog", Status.OK, "empty")
            return
        slowest = max(entries, key=lambda e: int(e["duration"]))
        ms = int(slowest["duration"]) / 1000
        command = slowest["command"]
        verb = (command.split() or [b""])[0] if isinstance(command, bytes) else b""
        detail = (
            f"{len(entries)} recent entries, slowest {verb.decode(errors='replace')} "
            f"{ms:.1f} ms (SLOWLOG GET shows them)"
        )
        self.add("slowlog", Status.WARN if ms >= SLOW_COMMAND_MS else Status.OK, detail)

    async def latency(self) -> None:
        times = []
        for _ in range(PINGS):
            started = time.perf_counter()
            await self.redis.ping()
            times.append((time.perf_counter() - started) * 1000)
        median = statistics.median(times)
        detail = f"PING median {median:.2f} ms, max {max(times):.2f} ms ({PINGS} pings)"
        if median > SLOW_PING_MS:
            detail += ": every session lookup pays this; run the gateway near Redis"
        self.add("latency", Status.WARN if median > SLOW_PING_MS else Status.OK, detail)


async def run_checks(settings: GatewaySettings) -> list[Check]:
    """Run the checklist against ``settings.redis``; never raises for a Redis problem."""
    # No retries: the doctor reports what happens on the first try.
    redis = Redis(**redis_kwargs(settings.redis), retry=Retry(NoBackoff(), 0))
    doctor = _Doctor(settings, redis)
    try:
        if await doctor.connect():
            await doctor.guarded("version", "INFO", doctor.version)
            await doctor.permissions()
            await doctor.guarded("memory", "INFO", doctor.memory)
            await doctor.guarded("pubsub output buffer", "CONFIG GET", doctor.output_buffer)
            await doctor.guarded("slowlog", "SLOWLOG", doctor.slowlog)
            await doctor.guarded("latency", "PING", doctor.latency)
    finally:
        await redis.aclose()
    return doctor.checks


def render(checks: list[Check], redis_url: str) -> str:
    """The text report: a header, one line per check, a summary."""
    width = max(len(c.name) for c in checks)
    lines = [f"notify-gateway doctor: {redis_url}"]
    lines += [f"{c.status.value:<5} {c.name:<{width}}  {c.detail}" for c in checks]
    counts = {s: sum(c.status is s for c in checks) for s in Status}
    lines.append(", ".join(f"{n} {s.value}" for s, n in counts.items()))
    return "\n".join(lines) + "\n"


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = load_settings(env)
    settings.redis.ssl_context()  # unreadable certificate files: a configuration error
    checks = asyncio.run(run_checks(settings))
    url = settings.redis.url()
    if args.json:
        report = {
            "redis": url,
            "ok": not any(c.status is Status.FAIL for c in checks),
            "checks": [dataclasses.asdict(c) for c in checks],
        }
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_APPEND_NEWLINE))
        sys.stdout.flush()
    else:
        sys.stdout.write(render(checks, url))
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


DOCTOR = Subcommand(
    "doctor",
    "check the configured Redis: reachability, auth, ACL, memory, latency (--json)",
    _configure,
    _run,
)
