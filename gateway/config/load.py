"""Building :class:`~gateway.config.settings.GatewaySettings` from the environment (pure).

:func:`load_settings` reads each variable once, through the parsers of
:mod:`notify_wire.env`; a wrong value raises :class:`~notify_wire.env.ConfigError` naming
the variable and the fix. The functions take plain mappings, so they are unit-tested with
dicts.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping

from gateway.config.settings import (
    FD_RESERVE,
    MAX_WORKERS,
    MIN_ADMIN_TOKEN_LENGTH,
    Admission,
    GatewaySettings,
    Limits,
)
from notify_wire.env import (
    ConfigError,
    parse_choice,
    parse_int,
    parse_list,
    parse_positive,
    read,
)
from notify_wire.redis_config import load_redis_config
from notify_wire.shared import SharedSettings, load_shared_settings

__all__ = ["connections_for", "load_settings", "parse_workers"]


def _parse_origins(name: str, raw: str) -> tuple[str, ...]:
    origins = parse_list(raw)
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise ConfigError(
                f"{name} entry {origin!r} is not an origin: use scheme://host[:port], "
                "e.g. https://app.example.com"
            )
    return origins


def connections_for(open_files: int) -> int:
    """The default connection cap under an open-file limit: all of it but a reserve."""
    return open_files - min(FD_RESERVE, open_files // 2)


def _load_admission(
    env: Mapping[str, str], shared: SharedSettings, open_files: int | None
) -> Admission:
    d = Admission()
    if open_files is not None:
        d = dataclasses.replace(d, max_connections=connections_for(open_files))
    header = env.get("GATEWAY_TRUSTED_PROXY_HEADER", "").strip() or None
    if header is not None and not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise ConfigError(
            "GATEWAY_TRUSTED_PROXY_HEADER must be a header name such as X-Forwarded-For"
        )

    def count(name: str, default: int, minimum: int) -> int:
        return read(env, name, default, _integer(minimum))

    return Admission(
        max_connections=count("GATEWAY_MAX_CONNECTIONS", d.max_connections, 1),
        max_connections_per_user=count(
            "GATEWAY_MAX_CONNECTIONS_PER_USER", d.max_connections_per_user, 1
        ),
        max_attempts_per_user=count("GATEWAY_MAX_ATTEMPTS_PER_USER", d.max_attempts_per_user, 1),
        max_attempts_per_ip=count("GATEWAY_MAX_ATTEMPTS_PER_IP", d.max_attempts_per_ip, 0),
        trusted_proxy_header=header,
        allowed_origins=read(env, "GATEWAY_ALLOWED_ORIGINS", (), _parse_origins),
        key_prefix=shared.key_prefix,
    )


def parse_workers(name: str, raw: str) -> int:
    """A worker count, or ``auto``: the CPUs this process may run on."""
    if raw.strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    try:
        return parse_int(name, raw, minimum=1, maximum=MAX_WORKERS)
    except ConfigError:
        raise ConfigError(
            f"{name}={raw!r} is not valid: use auto (one per CPU) or a number "
            f"from 1 to {MAX_WORKERS}"
        ) from None


def _parse_admin_token(name: str, raw: str) -> str:
    # Never echo the value: it is a secret.
    token = raw.strip()
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ConfigError(
            f"{name} must be printable ASCII without spaces (it travels in an HTTP header): "
            "generate one with `openssl rand -hex 32`"
        )
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{name} is too short ({len(token)} characters): use at least "
            f"{MIN_ADMIN_TOKEN_LENGTH}, e.g. `openssl rand -hex 32`"
        )
    return token


def _load_max_replay_bytes(env: Mapping[str, str], max_buffer_bytes: int) -> int:
    # A replay is written to the client at once: past its buffer limit it would be a 4008.
    value = read(
        env,
        "GATEWAY_MAX_REPLAY_BYTES",
        max_buffer_bytes,
        lambda n, r: parse_int(n, r, minimum=1024),
    )
    if value > max_buffer_bytes:
        raise ConfigError(
            f"GATEWAY_MAX_REPLAY_BYTES={value} is more than GATEWAY_MAX_BUFFER_BYTES="
            f"{max_buffer_bytes}: a replay is written to the client at once and must fit in its "
            "buffer; lower it or raise GATEWAY_MAX_BUFFER_BYTES"
        )
    return value


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str, str], int]:
    return lambda n, r: parse_int(n, r, minimum=minimum, maximum=maximum)


def _rate(name: str, raw: str) -> float:
    return parse_positive(name, raw, unit="frames per second")


def _load_limits(env: Mapping[str, str], shared: SharedSettings) -> Limits:
    d = Limits()
    return Limits(
        max_frame_bytes=read(env, "GATEWAY_MAX_FRAME_BYTES", d.max_frame_bytes, _integer(64)),
        max_buffer_bytes=read(env, "GATEWAY_MAX_BUFFER_BYTES", d.max_buffer_bytes, _integer(4096)),
        max_message_bytes=shared.max_message_bytes,
        max_subscriptions=read(env, "GATEWAY_MAX_SUBSCRIPTIONS", d.max_subscriptions, _integer(1)),
        max_channel_length=shared.max_channel_length,
        rate_per_second=read(env, "GATEWAY_RATE_LIMIT", d.rate_per_second, _rate),
        rate_burst=read(env, "GATEWAY_RATE_BURST", d.rate_burst, _integer(1)),
        rate_strikes=read(env, "GATEWAY_RATE_STRIKES", d.rate_strikes, _integer(1)),
        frame_rate_per_second=read(env, "GATEWAY_FRAME_RATE_LIMIT", d.frame_rate_per_second, _rate),
        frame_burst=read(env, "GATEWAY_FRAME_RATE_BURST", d.frame_burst, _integer(1)),
        max_body_bytes=read(env, "GATEWAY_MAX_BODY_BYTES", d.max_body_bytes, _integer(0)),
        max_session_bytes=shared.max_session_bytes,
        max_user_id_length=shared.max_user_id_length,
    )


def _public_channels(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("GATEWAY_PUBLIC_CHANNELS")
    if raw is None:
        return GatewaySettings().public_channels
    return parse_list(raw)  # explicitly empty: no public channels at all


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return read(env, name, default, parse_positive)


def _load_timing(env: Mapping[str, str]) -> dict[str, float]:
    """The intervals and timeouts, in seconds, by field name."""
    d = GatewaySettings()
    fields = {
        "auth_timeout_s": "GATEWAY_AUTH_TIMEOUT",
        "heartbeat_s": "GATEWAY_HEARTBEAT_SECONDS",
        "redis_ping_s": "GATEWAY_REDIS_PING_SECONDS",
        "redis_ping_timeout_s": "GATEWAY_REDIS_PING_TIMEOUT_SECONDS",
        "handshake_timeout_s": "GATEWAY_HANDSHAKE_TIMEOUT",
        "session_recheck_s": "GATEWAY_SESSION_RECHECK_SECONDS",
        "shutdown_timeout_s": "GATEWAY_SHUTDOWN_TIMEOUT",
    }
    return {field: _seconds(env, name, getattr(d, field)) for field, name in fields.items()}


def load_settings(env: Mapping[str, str], *, open_files: int | None = None) -> GatewaySettings:
    """Build and validate the gateway settings from an environment mapping.

    ``open_files`` is the process's open-file limit, when it has one: the default of
    ``GATEWAY_MAX_CONNECTIONS`` then follows it (:func:`connections_for`).
    """
    d = GatewaySettings()
    shared = load_shared_settings(env)
    limits = _load_limits(env, shared)
    return GatewaySettings(
        redis=load_redis_config(env),
        host=env.get("GATEWAY_HOST", "").strip() or d.host,
        port=read(env, "GATEWAY_PORT", d.port, _integer(0, 65535)),
        public_channels=_public_channels(env),
        session_prefix=shared.session_prefix,
        **_load_timing(env),
        compression=read(env, "GATEWAY_COMPRESSION", "off", parse_choice(("off", "deflate")))
        == "deflate",
        admission=_load_admission(env, shared, open_files),
        history_prefix=shared.history_prefix,
        history_size=shared.history_size,
        history_retention_s=shared.history_retention_s,
        max_replay=read(env, "GATEWAY_MAX_REPLAY", d.max_replay, _integer(1)),
        max_replay_bytes=_load_max_replay_bytes(env, limits.max_buffer_bytes),
        log_level=read(
            env, "GATEWAY_LOG_LEVEL", "info", parse_choice(("debug", "info", "warning", "error"))
        ),
        log_format=read(
            env, "GATEWAY_LOG_FORMAT", "auto", parse_choice(("auto", "json", "console"))
        ),
        workers=read(env, "GATEWAY_WORKERS", d.workers, parse_workers),
        admin_token=read(env, "GATEWAY_ADMIN_TOKEN", None, _parse_admin_token),
        limits=limits,
    )
