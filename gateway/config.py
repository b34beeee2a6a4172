"""Settings, read once from the environment and validated.

Nothing else in the project reads ``os.environ``: :func:`load_settings` turns an
environment mapping into frozen dataclasses, and every problem becomes a
:class:`ConfigError` whose message names the variable and says how to fix it.
The functions are pure so they are unit-tested with plain dicts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import ssl
from collections.abc import Callable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "Admission",
    "ConfigError",
    "ConfigWarning",
    "GatewaySettings",
    "Limits",
    "RedisConfig",
    "config_warnings",
    "connections_for",
    "known_variables",
    "load_redis_config",
    "load_settings",
    "parse_workers",
]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message says which and how to fix it."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


#: Kubernetes injects ``<SERVICE>_PORT=tcp://10.0.0.7:6379`` and friends for every Service
#: of the namespace (service links): a Service named ``redis`` or ``gateway`` collides.
_SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://", re.I)
_SERVICE_LINK_NAME = re.compile(r".+_(SERVICE_(HOST|PORT)(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)")


def _parse_int(name: str, raw: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        if _SERVICE_LINK_VALUE.match(raw.strip()):
            raise ConfigError(
                f"{name}={raw!r} looks like a Kubernetes service link (a Service named "
                f"{name.split('_')[0].lower()!r}): set enableServiceLinks: false in the pod "
                "spec, or rename the Service"
            ) from None
        raise ConfigError(
            f"{name}={raw!r} is not a whole number: use one {_bounds(minimum, maximum)}"
        ) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{name}={value} is out of range: it must be {_bounds(minimum, maximum)}")
    return value


def _bounds(minimum: int, maximum: int | None) -> str:
    return f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"


def _parse_positive(name: str, raw: str, *, unit: str = "seconds") -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of {unit}: set it to e.g. 10") from None
    if not 0 < value < float("inf"):  # also rejects NaN
        raise ConfigError(f"{name}={raw!r} is out of range: it must be more than 0 {unit}")
    return value


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _get(env: Mapping[str, str], name: str, default: T, parse: Callable[[str, str], T]) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return parse(name, raw)


@dataclasses.dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where Redis is and how to talk to it.

    ``explicit`` is false when neither ``REDIS_URL`` nor ``REDIS_HOST`` was set: the
    gateway may then start an embedded redis-server if nothing answers locally.
    """

    host: str = "localhost"
    port: int = 6379
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    db: int = 0
    tls: bool = False
    tls_ca_path: str | None = None
    tls_cert_path: str | None = None
    tls_key_path: str | None = None
    tls_verify: bool = True
    connect_timeout_s: float = 5.0
    max_retries: int = 3
    cluster: bool = False
    explicit: bool = False
    #: Sentinel mode: the master's address is asked of these on every (re)connect
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 literals bracketed), or the Sentinel master name, for messages."""
        if self.sentinels:
            return f"{self.sentinel_master} (sentinel)"
        return _host_port(self.host, self.port)

    def url(self, *, redact: bool = True) -> str:
        """The connection URL; the password is masked unless ``redact`` is false.

        In Sentinel mode this is a ``redis+sentinel://`` description for logs.
        """
        scheme = "rediss" if self.tls else "redis"
        if self.sentinels:
            scheme = "redis+sentinel"
        auth = ""
        if self.password is not None:
            secret = "***" if redact else quote(self.password, safe="")
            auth = f"{quote(self.username or '', safe='')}:{secret}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        if self.sentinels:
            hosts = ",".join(_host_port(host, port) for host, port in self.sentinels)
            return f"{scheme}://{auth}{hosts}/{self.sentinel_master}/{self.db}"
        return f"{scheme}://{auth}{self.address}/{self.db}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for connections, or None for plaintext.

        Reads the certificate files, so a missing or unreadable one is a
        :class:`ConfigError` naming its variable.
        """
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.tls_ca_path)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"REDIS_TLS_CA_PATH={self.tls_ca_path}: cannot load a CA certificate from it "
                f"({_reason(exc)}): point it at a PEM file"
            ) from None
        if self.tls_cert_path:
            try:
                context.load_cert_chain(self.tls_cert_path, self.tls_key_path)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"REDIS_TLS_CERT_PATH={self.tls_cert_path} / REDIS_TLS_KEY_PATH="
                    f"{self.tls_key_path}: cannot load the client certificate and key "
                    f"({_reason(exc)}): use PEM files that match (the key may be in the "
                    "certificate file)"
                ) from None
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or "not a valid certificate"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_sentinels(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    sentinels = []
    for item in _parse_list(raw):
        host, sep, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"{name} entry {item!r} is not host:port: use e.g. "
                "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
            )
        sentinels.append((host, int(port)))
    return tuple(sentinels)


def _load_sentinel(env: Mapping[str, str], config: RedisConfig) -> RedisConfig:
    none: tuple[tuple[str, int], ...] = ()
    sentinels = _get(env, "REDIS_SENTINELS", none, _parse_sentinels)
    master = env.get("REDIS_SENTINEL_MASTER", "").strip()
    password = env.get("REDIS_SENTINEL_PASSWORD") or None
    if not sentinels:
        if master:
            raise ConfigError("REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS: set both")
        return config
    if not master:
        raise ConfigError(
            "REDIS_SENTINELS is set without REDIS_SENTINEL_MASTER: set it to the name the "
            "sentinels monitor (sentinel monitor <name> ...), e.g. mymaster"
        )
    # The master's address comes from the sentinels alone; a second source would be ignored.
    for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT"):
        if env.get(name, "").strip():
            raise ConfigError(
                f"REDIS_SENTINELS and {name} are both set: with Sentinel the master's address "
                f"comes from the sentinels; unset {name} and use REDIS_USERNAME, "
                "REDIS_PASSWORD and REDIS_DB for the master's credentials and database"
            )
    if config.tls:
        raise ConfigError("REDIS_TLS is not supported with REDIS_SENTINELS yet: unset one of them")
    if config.cluster:
        raise ConfigError(
            "REDIS_SENTINELS and REDIS_CLUSTER=true are both set: a Redis Cluster fails over by "
            "itself; unset one of them"
        )
    return dataclasses.replace(
        config,
        explicit=True,
        sentinels=sentinels,
        sentinel_master=master,
        sentinel_password=password,
    )


def load_redis_config(env: Mapping[str, str]) -> RedisConfig:
    """Build the Redis settings from ``REDIS_URL``, the split ``REDIS_*`` variables, or
    ``REDIS_SENTINELS``."""
    url = env.get("REDIS_URL", "").strip()
    if url:
        config = _parse_redis_url(url)
    else:
        host = env.get("REDIS_HOST", "").strip()
        config = RedisConfig(
            host=host or "localhost",
            port=_get(
                env, "REDIS_PORT", 6379, lambda n, r: _parse_int(n, r, minimum=1, maximum=65535)
            ),
            username=env.get("REDIS_USERNAME") or None,
            password=env.get("REDIS_PASSWORD") or None,
            db=_get(env, "REDIS_DB", 0, lambda n, r: _parse_int(n, r, minimum=0)),
            explicit=bool(host),
        )
    tls = config.tls or _get(env, "REDIS_TLS", False, _parse_bool)
    if config.tls and env.get("REDIS_TLS", "").strip().lower() in ("0", "false", "no", "off"):
        raise ConfigError(
            "REDIS_URL uses rediss:// (TLS) but REDIS_TLS=false: remove REDIS_TLS or use redis://"
        )
    paths: dict[str, str | None] = {}
    for name in ("REDIS_TLS_CA_PATH", "REDIS_TLS_CERT_PATH", "REDIS_TLS_KEY_PATH"):
        value = env.get(name, "").strip() or None
        if value is not None and not tls:
            raise ConfigError(
                f"{name} is set but TLS is off: set REDIS_TLS=true or use a rediss:// URL"
            )
        paths[name] = value
    if paths["REDIS_TLS_KEY_PATH"] and not paths["REDIS_TLS_CERT_PATH"]:
        raise ConfigError("REDIS_TLS_KEY_PATH is set without REDIS_TLS_CERT_PATH: set both")
    cluster = _get(env, "REDIS_CLUSTER", False, _parse_bool)
    if cluster and config.db != 0:
        raise ConfigError(
            "REDIS_CLUSTER=true but a database other than 0 is selected: Redis Cluster has "
            "only database 0; remove the /N from REDIS_URL or REDIS_DB"
        )
    tls_verify = _get(env, "REDIS_TLS_REJECT_UNAUTHORIZED", True, _parse_bool)
    if not tls_verify and not tls:
        # Whoever turned verification off expected TLS: never carry on in plaintext.
        raise ConfigError(
            "REDIS_TLS_REJECT_UNAUTHORIZED=false is set but TLS is off: set REDIS_TLS=true "
            "or use a rediss:// URL (or remove the variable)"
        )
    config = dataclasses.replace(
        config,
        tls=tls,
        tls_ca_path=paths["REDIS_TLS_CA_PATH"],
        tls_cert_path=paths["REDIS_TLS_CERT_PATH"],
        tls_key_path=paths["REDIS_TLS_KEY_PATH"],
        tls_verify=tls_verify,
        connect_timeout_s=_get(
            env,
            "REDIS_CONNECT_TIMEOUT",
            5.0,
            lambda n, r: _parse_int(n, r, minimum=1) / 1000,
        ),
        max_retries=_get(env, "REDIS_MAX_RETRIES", 3, lambda n, r: _parse_int(n, r, minimum=0)),
        cluster=cluster,
    )
    return _load_sentinel(env, config)


def _parse_redis_url(url: str) -> RedisConfig:
    # Never echo the URL itself: it may carry a password.
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket, say
        raise ConfigError(
            "REDIS_URL is not a valid URL: use redis://host:6379/0 (IPv6: redis://[::1]:6379/0)"
        ) from None
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            "REDIS_URL must start with redis:// or rediss:// (TLS), e.g. redis://localhost:6379/0"
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigError("REDIS_URL has an invalid port: use redis://host:6379") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError("REDIS_URL path must be a database number, e.g. redis://host:6379/0")
    return RedisConfig(
        host=parts.hostname or "localhost",
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        db=int(path) if path else 0,
        tls=parts.scheme == "rediss",
        explicit=True,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits; each one is enforced with its own error or close code."""

    max_frame_bytes: int = 64 * 1024
    max_message_bytes: int = 1024 * 1024
    max_buffer_bytes: int = 1024 * 1024
    max_subscriptions: int = 128
    max_channel_length: int = 200
    rate_per_second: float = 50.0
    rate_burst: int = 100
    rate_strikes: int = 10
    #: every WebSocket frame counts here (pings, pongs, fragments, before and after login)
    frame_rate_per_second: float = 200.0
    frame_burst: int = 1000
    max_body_bytes: int = 64 * 1024
    #: largest stored session value read at login; bigger ones are refused (4001) unparsed
    max_session_bytes: int = 16 * 1024
    #: longest ``userId``: it is in every log line and in the channel ``user:{id}``
    max_user_id_length: int = 128


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
    key_prefix: str = "notify-gateway:"


@dataclasses.dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the gateway process is configured with."""

    redis: RedisConfig = dataclasses.field(default_factory=RedisConfig)
    host: str = "127.0.0.1"
    port: int = 8765
    public_channels: tuple[str, ...] = ("notifications", "public:*")
    session_prefix: str = "session:"
    auth_timeout_s: float = 10.0
    heartbeat_s: float = 20.0
    redis_ping_s: float = 1.0
    redis_ping_timeout_s: float = 2.0
    shutdown_timeout_s: float = 10.0
    handshake_timeout_s: float = 10.0
    session_recheck_s: float = 30.0
    compression: bool = False
    history_prefix: str = "notify-gateway:history:"
    history_size: int = 1000  # used by producers publishing with history
    history_retention_s: int = 24 * 3600
    max_replay: int = 1000
    #: frame bytes one replay may hold and send (unset: GATEWAY_MAX_BUFFER_BYTES)
    max_replay_bytes: int = 1024 * 1024
    log_level: str = "info"
    #: ``auto``: console lines on a terminal, JSON otherwise (decided by gateway.log)
    log_format: str = "auto"
    workers: int = 1
    #: bearer token guarding /metrics and /status; None leaves them open
    admin_token: str | None = dataclasses.field(default=None, repr=False)
    limits: Limits = dataclasses.field(default_factory=Limits)
    admission: Admission = dataclasses.field(default_factory=Admission)

    def local_address(self, port: int | None = None) -> str:
        """``host:port`` a client on this machine connects to (a wildcard host as loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return _host_port(host, self.port if port is None else port)


def _parse_origins(name: str, raw: str) -> tuple[str, ...]:
    origins = _parse_list(raw)
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise ConfigError(
                f"{name} entry {origin!r} is not an origin: use scheme://host[:port], "
                "e.g. https://app.example.com"
            )
    return origins


#: open files kept for everything but client sockets: Redis, logs, listening sockets, headroom
FD_RESERVE = 1024


def connections_for(open_files: int) -> int:
    """The default connection cap under an open-file limit: all of it but a reserve."""
    return open_files - min(FD_RESERVE, open_files // 2)


def _load_admission(env: Mapping[str, str], open_files: int | None) -> Admission:
    d = Admission()
    if open_files is not None:
        d = dataclasses.replace(d, max_connections=connections_for(open_files))
    header = env.get("GATEWAY_TRUSTED_PROXY_HEADER", "").strip() or None
    if header is not None and not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise ConfigError(
            "GATEWAY_TRUSTED_PROXY_HEADER must be a header name such as X-Forwarded-For"
        )
    prefix = env.get("GATEWAY_LIMIT_KEY_PREFIX", d.key_prefix)
    if not prefix:
        raise ConfigError("GATEWAY_LIMIT_KEY_PREFIX is empty: leave it unset for 'notify-gateway:'")

    def count(name: str, default: int, minimum: int) -> int:
        return _get(env, name, default, lambda n, r: _parse_int(n, r, minimum=minimum))

    return Admission(
        max_connections=count("GATEWAY_MAX_CONNECTIONS", d.max_connections, 1),
        max_connections_per_user=count(
            "GATEWAY_MAX_CONNECTIONS_PER_USER", d.max_connections_per_user, 1
        ),
        max_attempts_per_user=count("GATEWAY_MAX_ATTEMPTS_PER_USER", d.max_attempts_per_user, 1),
        max_attempts_per_ip=count("GATEWAY_MAX_ATTEMPTS_PER_IP", d.max_attempts_per_ip, 0),
        trusted_proxy_header=header,
        allowed_origins=_get(env, "GATEWAY_ALLOWED_ORIGINS", (), _parse_origins),
        key_prefix=prefix,
    )


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name}={raw!r} is not valid: use one of {', '.join(choices)}")
        return value

    return parse


#: upper bound of GATEWAY_WORKERS: beyond it a typo is likelier than a machine that big
MAX_WORKERS = 512


def parse_workers(name: str, raw: str) -> int:
    """A worker count, or ``auto``: the CPUs this process may run on."""
    if raw.strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    try:
        return _parse_int(name, raw, minimum=1, maximum=MAX_WORKERS)
    except ConfigError:
        raise ConfigError(
            f"{name}={raw!r} is not valid: use auto (one per CPU) or a number "
            f"from 1 to {MAX_WORKERS}"
        ) from None


MIN_ADMIN_TOKEN_LENGTH = 16


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
    value = _get(
        env,
        "GATEWAY_MAX_REPLAY_BYTES",
        max_buffer_bytes,
        lambda n, r: _parse_int(n, r, minimum=1024),
    )
    if value > max_buffer_bytes:
        raise ConfigError(
            f"GATEWAY_MAX_REPLAY_BYTES={value} is more than GATEWAY_MAX_BUFFER_BYTES="
            f"{max_buffer_bytes}: a replay is written to the client at once and must fit in its "
            "buffer; lower it or raise GATEWAY_MAX_BUFFER_BYTES"
        )
    return value


def load_settings(env: Mapping[str, str], *, open_files: int | None = None) -> GatewaySettings:
    """Build and validate the gateway settings from an environment mapping.

    ``open_files`` is the process's open-file limit, when it has one: the default of
    ``GATEWAY_MAX_CONNECTIONS`` then follows it (:func:`connections_for`).
    """

    def integer(minimum: int, maximum: int | None = None) -> Callable[[str, str], int]:
        return lambda n, r: _parse_int(n, r, minimum=minimum, maximum=maximum)

    defaults = GatewaySettings()
    dl = defaults.limits
    limits = Limits(
        max_frame_bytes=_get(env, "GATEWAY_MAX_FRAME_BYTES", dl.max_frame_bytes, integer(64)),
        max_buffer_bytes=_get(env, "GATEWAY_MAX_BUFFER_BYTES", dl.max_buffer_bytes, integer(4096)),
        max_message_bytes=_get(env, "GATEWAY_MAX_MESSAGE_BYTES", dl.max_message_bytes, integer(64)),
        max_subscriptions=_get(env, "GATEWAY_MAX_SUBSCRIPTIONS", dl.max_subscriptions, integer(1)),
        max_channel_length=_get(
            env, "GATEWAY_MAX_CHANNEL_LENGTH", dl.max_channel_length, integer(1, 1024)
        ),
        rate_per_second=_get(
            env,
            "GATEWAY_RATE_LIMIT",
            dl.rate_per_second,
            lambda n, r: _parse_positive(n, r, unit="frames per second"),
        ),
        rate_burst=_get(env, "GATEWAY_RATE_BURST", dl.rate_burst, integer(1)),
        rate_strikes=_get(env, "GATEWAY_RATE_STRIKES", dl.rate_strikes, integer(1)),
        frame_rate_per_second=_get(
            env,
            "GATEWAY_FRAME_RATE_LIMIT",
            dl.frame_rate_per_second,
            lambda n, r: _parse_positive(n, r, unit="frames per second"),
        ),
        frame_burst=_get(env, "GATEWAY_FRAME_RATE_BURST", dl.frame_burst, integer(1)),
        max_body_bytes=_get(env, "GATEWAY_MAX_BODY_BYTES", dl.max_body_bytes, integer(0)),
        max_session_bytes=_get(
            env, "GATEWAY_MAX_SESSION_BYTES", dl.max_session_bytes, integer(64, 1024 * 1024)
        ),
        max_user_id_length=_get(
            env, "GATEWAY_MAX_USER_ID_LENGTH", dl.max_user_id_length, integer(1, 1024)
        ),
    )
    public = _get(
        env, "GATEWAY_PUBLIC_CHANNELS", defaults.public_channels, lambda n, r: _parse_list(r)
    )
    if (
        env.get("GATEWAY_PUBLIC_CHANNELS") is not None
        and env["GATEWAY_PUBLIC_CHANNELS"].strip() == ""
    ):
        public = ()  # explicitly empty: no public channels at all
    prefix = env.get("GATEWAY_SESSION_PREFIX", defaults.session_prefix)
    if not prefix:
        raise ConfigError("GATEWAY_SESSION_PREFIX is empty: leave it unset for 'session:'")
    ping_s = _get(env, "GATEWAY_REDIS_PING_SECONDS", defaults.redis_ping_s, _parse_positive)
    ping_timeout_s = _get(
        env, "GATEWAY_REDIS_PING_TIMEOUT_SECONDS", defaults.redis_ping_timeout_s, _parse_positive
    )
    return GatewaySettings(
        redis=load_redis_config(env),
        host=env.get("GATEWAY_HOST", "").strip() or defaults.host,
        port=_get(env, "GATEWAY_PORT", defaults.port, integer(0, 65535)),
        public_channels=public,
        session_prefix=prefix,
        auth_timeout_s=_get(env, "GATEWAY_AUTH_TIMEOUT", defaults.auth_timeout_s, _parse_positive),
        heartbeat_s=_get(env, "GATEWAY_HEARTBEAT_SECONDS", defaults.heartbeat_s, _parse_positive),
        redis_ping_s=ping_s,
        redis_ping_timeout_s=ping_timeout_s,
        handshake_timeout_s=_get(
            env, "GATEWAY_HANDSHAKE_TIMEOUT", defaults.handshake_timeout_s, _parse_positive
        ),
        session_recheck_s=_get(
            env, "GATEWAY_SESSION_RECHECK_SECONDS", defaults.session_recheck_s, _parse_positive
        ),
        compression=_get(env, "GATEWAY_COMPRESSION", "off", _parse_choice(("off", "deflate")))
        == "deflate",
        admission=_load_admission(env, open_files),
        history_prefix=env.get("GATEWAY_HISTORY_PREFIX", "").strip() or defaults.history_prefix,
        history_size=_get(env, "GATEWAY_HISTORY_SIZE", defaults.history_size, integer(1)),
        history_retention_s=_get(
            env, "GATEWAY_HISTORY_RETENTION_SECONDS", defaults.history_retention_s, integer(1)
        ),
        max_replay=_get(env, "GATEWAY_MAX_REPLAY", defaults.max_replay, integer(1)),
        max_replay_bytes=_load_max_replay_bytes(env, limits.max_buffer_bytes),
        shutdown_timeout_s=_get(
            env, "GATEWAY_SHUTDOWN_TIMEOUT", defaults.shutdown_timeout_s, _parse_positive
        ),
        log_level=_get(
            env, "GATEWAY_LOG_LEVEL", "info", _parse_choice(("debug", "info", "warning", "error"))
        ),
        log_format=_get(
            env, "GATEWAY_LOG_FORMAT", "auto", _parse_choice(("auto", "json", "console"))
        ),
        workers=_get(env, "GATEWAY_WORKERS", defaults.workers, parse_workers),
        admin_token=_get(env, "GATEWAY_ADMIN_TOKEN", None, _parse_admin_token),
        limits=limits,
    )


class _Recording(Mapping[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        return self._env[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


@functools.cache
def known_variables() -> frozenset[str]:
    """Every variable the settings loader reads: found by watching it read an empty
    environment, so a setting added to :func:`load_settings` is known with no list to edit.
    (The loader reads each of its variables whatever the others say.)"""
    env = _Recording({})
    load_settings(env)
    return frozenset(env.names)


#: the prefixes of the variables that belong to notify-gateway
PREFIXES = ("GATEWAY_", "REDIS_")


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A setting that is valid but probably not what was meant."""

    variable: str
    #: ``unknown_variable`` or ``private_channels_public``
    problem: str
    #: one line saying what happens and what to do
    message: str


def config_warnings(env: Mapping[str, str], settings: GatewaySettings) -> list[ConfigWarning]:
    """What in ``env`` is probably a mistake: unknown ``GATEWAY_*``/``REDIS_*`` names (with
    the closest known one) and public globs that take in the private ``user:`` channels."""
    known = known_variables()
    warnings = []
    for name in sorted(env):
        if _SERVICE_LINK_NAME.fullmatch(name):
            continue  # set by Kubernetes for a Service, not by the operator
        if name.startswith(PREFIXES) and name not in known:
            fix = "see the README configuration table"
            # Compared without the prefix, which every name shares.
            prefix = next(p for p in PREFIXES if name.startswith(p))
            kin = {k.removeprefix(prefix): k for k in known if k.startswith(prefix)}
            close = difflib.get_close_matches(name.removeprefix(prefix), kin, n=1, cutoff=0.7)
            if close:
                fix = f"did you mean {kin[close[0]]}?"
            warnings.append(
                ConfigWarning(
                    name,
                    "unknown_variable",
                    f"{name} is not a notify-gateway setting and is ignored: {fix}",
                )
            )
    for glob in settings.public_channels:
        if _glob_reaches(glob, "user:"):
            warnings.append(
                ConfigWarning(
                    "GATEWAY_PUBLIC_CHANNELS",
                    "private_channels_public",
                    f"GATEWAY_PUBLIC_CHANNELS holds {glob!r}, which matches private user:{{id}} "
                    "channels: every session may read those users' notifications; use "
                    "narrower globs (e.g. public:*)",
                )
            )
    return warnings


def _glob_reaches(glob: str, prefix: str) -> bool:
    """Whether ``glob`` (fnmatch syntax) matches some name that starts with ``prefix``."""
    i = 0
    for char in prefix:
        if i == len(glob):
            return False
        if glob[i] == "*":
            return True
        end = glob.find("]", i + 2) if glob[i] == "[" else -1
        token = glob[i : end + 1] if end != -1 else glob[i]
        if not fnmatchcase(char, token):
            return False
        i += len(token)
    return i < len(glob)  # something more to match after the prefix
