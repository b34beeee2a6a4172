"""Where Redis is and how to talk to it, from the Redis-convention variables (pure).

``REDIS_URL`` (or ``REDIS_HOST``/``PORT``/``USERNAME``/``PASSWORD``/``DB``), ``REDIS_TLS*``,
``REDIS_CLUSTER`` and ``REDIS_SENTINEL*``: the gateway and every producer read them the
same way, with :func:`load_redis_config`.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from notify_wire.env import ConfigError, parse_bool, parse_int, parse_list, read
from notify_wire.errors import describe

__all__ = ["DEFAULT_REDIS_URL", "RedisConfig", "host_port", "load_redis_config"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


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
        return host_port(self.host, self.port)

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
            hosts = ",".join(host_port(host, port) for host, port in self.sentinels)
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
                f"({describe(exc)}): point it at a PEM file"
            ) from None
        if self.tls_cert_path:
            try:
                context.load_cert_chain(self.tls_cert_path, self.tls_key_path)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"REDIS_TLS_CERT_PATH={self.tls_cert_path} / REDIS_TLS_KEY_PATH="
                    f"{self.tls_key_path}: cannot load the client certificate and key "
                    f"({describe(exc)}): use PEM files that match (the key may be in the "
                    "certificate file)"
                ) from None
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_sentinels(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    sentinels = []
    for item in parse_list(raw):
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
    sentinels = read(env, "REDIS_SENTINELS", none, _parse_sentinels)
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
    config = _parse_redis_url(url) if url else _split_variables(env)
    tls = config.tls or read(env, "REDIS_TLS", False, parse_bool)
    if config.tls and env.get("REDIS_TLS", "").strip().lower() in ("0", "false", "no", "off"):
        raise ConfigError(
            "REDIS_URL uses rediss:// (TLS) but REDIS_TLS=false: remove REDIS_TLS or use redis://"
        )
    cluster = read(env, "REDIS_CLUSTER", False, parse_bool)
    if cluster and config.db != 0:
        raise ConfigError(
            "REDIS_CLUSTER=true but a database other than 0 is selected: Redis Cluster has "
            "only database 0; remove the /N from REDIS_URL or REDIS_DB"
        )
    config = dataclasses.replace(
        config,
        **_tls_files(env, tls),
        connect_timeout_s=read(
            env,
            "REDIS_CONNECT_TIMEOUT",
            5.0,
            lambda n, r: parse_int(n, r, minimum=1) / 1000,
        ),
        max_retries=read(env, "REDIS_MAX_RETRIES", 3, lambda n, r: parse_int(n, r, minimum=0)),
        cluster=cluster,
    )
    return _load_sentinel(env, config)


def _split_variables(env: Mapping[str, str]) -> RedisConfig:
    host = env.get("REDIS_HOST", "").strip()
    return RedisConfig(
        host=host or "localhost",
        port=read(env, "REDIS_PORT", 6379, lambda n, r: parse_int(n, r, minimum=1, maximum=65535)),
        username=env.get("REDIS_USERNAME") or None,
        password=env.get("REDIS_PASSWORD") or None,
        db=read(env, "REDIS_DB", 0, lambda n, r: parse_int(n, r, minimum=0)),
        explicit=bool(host),
    )


def _tls_files(env: Mapping[str, str], tls: bool) -> dict[str, Any]:
    """``tls`` and the ``tls_*`` fields of :class:`RedisConfig`, checked against each other."""
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
    tls_verify = read(env, "REDIS_TLS_REJECT_UNAUTHORIZED", True, parse_bool)
    if not tls_verify and not tls:
        # Whoever turned verification off expected TLS: never carry on in plaintext.
        raise ConfigError(
            "REDIS_TLS_REJECT_UNAUTHORIZED=false is set but TLS is off: set REDIS_TLS=true "
            "or use a rediss:// URL (or remove the variable)"
        )
    return {
        "tls": tls,
        "tls_ca_path": paths["REDIS_TLS_CA_PATH"],
        "tls_cert_path": paths["REDIS_TLS_CERT_PATH"],
        "tls_key_path": paths["REDIS_TLS_KEY_PATH"],
        "tls_verify": tls_verify,
    }


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
