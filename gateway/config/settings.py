"""What a gateway process is configured with: frozen dataclasses (pure).

The defaults here are the documented ones (README configuration table); the settings
producers share with gateways take theirs from :class:`~notify_wire.shared.SharedSettings`.
"""

from __future__ import annotations

import dataclasses

from notify_wire.redis_config import RedisConfig, host_port
from notify_wire.shared import SharedSettings

__all__ = [
    "FD_RESERVE",
    "MAX_WORKERS",
    "MIN_ADMIN_TOKEN_LENGTH",
    "Admission",
    "GatewaySettings",
    "Limits",
]

_SHARED = SharedSettings()

#: open files kept for everything but client sockets: Redis, logs, listening sockets, headroom
FD_RESERVE = 1024


#: upper bound of GATEWAY_WORKERS: beyond it a typo is likelier than a machine that big
MAX_WORKERS = 512


MIN_ADMIN_TOKEN_LENGTH = 16


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits; each one is enforced with its own error or close code."""

    max_frame_bytes: int = 64 * 1024
    max_message_bytes: int = _SHARED.max_message_bytes
    max_buffer_bytes: int = 1024 * 1024
    max_subscriptions: int = 128
    max_channel_length: int = _SHARED.max_channel_length
    rate_per_second: float = 50.0
    rate_burst: int = 100
    rate_strikes: int = 10
    #: every WebSocket frame counts here (pings, pongs, fragments, before and after login)
    frame_rate_per_second: float = 200.0
    frame_burst: int = 1000
    max_body_bytes: int = 64 * 1024
    #: largest stored session value read at login; bigger ones are refused (4001) unparsed
    max_session_bytes: int = _SHARED.max_session_bytes
    #: longest ``userId``: it is in every log line and in the channel ``user:{id}``
    max_user_id_length: int = _SHARED.max_user_id_length


@dataclasses.dataclass(frozen=True, slots=True)
class Admission:
    """Who may connect: caps counted per process, and per user/IP across instances in Redis."""

    #: without GATEWAY_MAX_CONNECTIONS: what the open-file limit allows (see connections_for)
    max_connections: int = 100_000
    max_connections_per_user: int = 20
    max_attempts_per_user: int = 60
    max_attempts_per_ip: int = 0  # 0: off (behind a load balancer every client shares an IP)
    trusted_proxy_header: str | None = None
    allowed_origins: tuple[str, ...] = ()  # empty: any origin
    key_prefix: str = _SHARED.key_prefix


@dataclasses.dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the gateway process is configured with."""

    redis: RedisConfig = dataclasses.field(default_factory=RedisConfig)
    host: str = "127.0.0.1"
    port: int = 8765
    public_channels: tuple[str, ...] = ("notifications", "public:*")
    session_prefix: str = _SHARED.session_prefix
    auth_timeout_s: float = 10.0
    heartbeat_s: float = 20.0
    redis_ping_s: float = 1.0
    redis_ping_timeout_s: float = 2.0
    shutdown_timeout_s: float = 10.0
    handshake_timeout_s: float = 10.0
    session_recheck_s: float = 30.0
    compression: bool = False
    history_prefix: str = _SHARED.history_prefix
    history_size: int = _SHARED.history_size  # used by producers publishing with history
    history_retention_s: int = _SHARED.history_retention_s
    max_replay: int = 1000
    #: frame bytes one replay may hold and send (unset: GATEWAY_MAX_BUFFER_BYTES)
    max_replay_bytes: int = 1024 * 1024
    log_level: str = "info"
    #: ``auto``: console lines on a terminal, JSON otherwise (decided by gateway.ops.log)
    log_format: str = "auto"
    workers: int = 1
    #: bearer token guarding /metrics and /status; None leaves them open
    admin_token: str | None = dataclasses.field(default=None, repr=False)
    limits: Limits = dataclasses.field(default_factory=Limits)
    admission: Admission = dataclasses.field(default_factory=Admission)

    def local_address(self, port: int | None = None) -> str:
        """``host:port`` a client on this machine connects to (a wildcard host as loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return host_port(host, self.port if port is None else port)
