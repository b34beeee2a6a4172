"""One-line diagnoses of Redis connection and command failures (pure).

:func:`diagnose` maps an exception (raised by the gateway's own pub/sub connection
or by redis-py) and the :class:`~gateway.config.RedisConfig` it was raised under to a
:class:`Diagnosis`: a short ``cause`` code for logs, a ``message`` that names the
cause and the fix in one line, and whether retrying can help. Messages name the
address, the user and the variables to change, never a password.

Redis error replies are recognised by their code (``WRONGPASS``, ``NOPERM``...):
the gateway's connection keeps it in the text, redis-py strips it and raises a
subclass instead, so both are normalised to ``(code, text)`` first.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Iterator

from redis import exceptions as rx

from notify_wire.redis_config import RedisConfig

__all__ = [
    "Diagnosis",
    "RedisReplyError",
    "RedisSetupError",
    "diagnose",
    "tls_to_plaintext_port",
    "user_label",
]

ACL_DOCS = "docs/redis.md"


@dataclasses.dataclass(frozen=True, slots=True)
class Diagnosis:
    """Why a Redis operation failed and what to do about it."""

    #: short, stable code for logs and ``--json`` (``wrong_password``, ``tls_untrusted``...)
    cause: str
    #: one line naming the cause and the fix; never a secret
    message: str
    #: a configuration error: retrying with the same settings cannot succeed
    fatal: bool


class RedisReplyError(Exception):
    """Redis answered a command with an error reply; the text starts with its code."""


class RedisSetupError(Exception):
    """Redis refused the gateway's configuration at start; serving is pointless."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(diagnosis.message)
        self.diagnosis = diagnosis


# redis-py strips the error code from the message and raises one of these instead.
_REDIS_PY_CODES: tuple[tuple[type[Exception], str], ...] = (
    (rx.NoPermissionError, "NOPERM"),
    (rx.OutOfMemoryError, "OOM"),
    (rx.ReadOnlyError, "READONLY"),
    (rx.BusyLoadingError, "LOADING"),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _reply(exc: BaseException) -> tuple[str, str] | None:
    """``(code, text)`` of a Redis error reply, or None for other failures."""
    if isinstance(exc, RedisReplyError):
        code, _, text = str(exc).partition(" ")
        return code, text
    if not isinstance(exc, rx.ResponseError | rx.AuthenticationError | rx.BusyLoadingError):
        return None
    text = str(exc)
    status = getattr(exc, "status_code", None)  # recent redis-py versions keep the code here
    if isinstance(status, str) and status:
        return status, text
    for kind, code in _REDIS_PY_CODES:
        if isinstance(exc, kind):
            return code, text
    if isinstance(exc, rx.AuthenticationError):
        return ("NOAUTH" if "required" in text.lower() else "WRONGPASS"), text
    code, _, rest = text.partition(" ")
    return (code, rest) if code.isupper() else ("ERR", text)


def user_label(config: RedisConfig) -> str:
    """Who connects, for messages: ``user 'app'`` or ``the default user``."""
    return f"user {config.username!r}" if config.username else "the default user"


def _scrub(text: str, config: RedisConfig) -> str:
    """First line of a server or library message, without the password (some echo args)."""
    line = (text.splitlines() or [""])[0][:300]
    if config.password:
        line = line.replace(config.password, "***")
    return line


def _from_reply(code: str, text: str, config: RedisConfig, doing: str | None) -> Diagnosis:
    return _access_reply(code, text, config, doing) or _state_reply(code, text, config)


def _access_reply(code: str, text: str, config: RedisConfig, doing: str | None) -> Diagnosis | None:
    """Redis refused who we are or what we may do: credentials, ACL, protected mode."""
    at = f"Redis at {config.address}"
    if code == "NOAUTH":
        return Diagnosis(
            "password_required",
            f"{at} requires a password and none is configured (NOAUTH): put it in REDIS_URL "
            "(redis://:PASSWORD@host:port, or redis://USER:PASSWORD@host:port for an ACL user) "
            "or set REDIS_PASSWORD",
            fatal=True,
        )
    if "called without any password configured" in text or "no password is set" in text:
        return Diagnosis(
            "no_password_on_server",
            f"a password is configured but {at} has none for the default user: remove it from "
            "REDIS_URL/REDIS_PASSWORD, or set requirepass (or an ACL user) on Redis",
            fatal=True,
        )
    if code == "WRONGPASS" or text.lower().startswith("invalid password"):
        fix = (
            "check REDIS_USERNAME/REDIS_PASSWORD or USER:PASSWORD in REDIS_URL, and that the "
            "ACL user exists and is 'on'"
            if config.username
            else "check REDIS_PASSWORD or :PASSWORD in REDIS_URL; for an ACL user set its name too"
        )
        return Diagnosis(
            "wrong_password",
            f"{at} rejected {user_label(config)} with the configured password (WRONGPASS): {fix}",
            fatal=True,
        )
    # Inside a Lua script a refusal is an ERR reply that names the script line only.
    if code == "NOPERM" or "user executing the script can't run" in text:
        what = f" ({doing})" if doing else ""
        return Diagnosis(
            "acl_denied",
            f"the ACL of {user_label(config)} at {config.address} refuses it{what}: "
            f"{_scrub(text, config).rstrip('.')}{' (NOPERM)' if code == 'NOPERM' else ''}: "
            "grant it as in "
            f"the ACL lines of {ACL_DOCS}",
            fatal=True,
        )
    if code == "DENIED":
        return Diagnosis(
            "protected_mode",
            f"{at} is in protected mode and accepts only loopback clients without a password: "
            "give it a password (requirepass or an ACL user) and configure it here",
            fatal=True,
        )
    return None


def _state_reply(code: str, text: str, config: RedisConfig) -> Diagnosis:
    """Redis cannot serve now, or not this way: memory, loading, replica, databases."""
    at = f"Redis at {config.address}"
    if code == "OOM":
        return Diagnosis(
            "out_of_memory",
            f"{at} is out of memory (OOM): used memory passed maxmemory and its "
            "maxmemory-policy frees nothing for this write: raise maxmemory or free memory "
            f"(notify-gateway doctor shows both; see {ACL_DOCS})",
            fatal=False,
        )
    if code == "LOADING":
        return Diagnosis(
            "loading",
            f"{at} is loading its dataset into memory (LOADING): it answers once the load "
            "finishes; retrying",
            fatal=False,
        )
    if code == "READONLY":
        return Diagnosis(
            "read_only_replica",
            f"{at} is a read-only replica (READONLY): point REDIS_URL at the primary "
            "(on a managed service, the primary or writer endpoint)",
            fatal=True,
        )
    if "DB index is out of range" in text:
        return Diagnosis(
            "db_out_of_range",
            f"{at} has no database {config.db} (DB index is out of range): set REDIS_DB (or "
            "the /N of REDIS_URL) below the server's `databases` setting (16 unless its "
            "redis.conf says otherwise)",
            fatal=True,
        )
    if "max number of clients" in text:
        return Diagnosis(
            "max_clients",
            f"{at} refuses new connections: maxclients is reached; raise maxclients or find "
            "who holds the connections (CLIENT LIST)",
            fatal=False,
        )
    return Diagnosis(
        "redis_error",
        f"{at} answered with an error: {_scrub(f'{code} {text}', config)}",
        fatal=False,
    )


def _client_cert_required(config: RedisConfig) -> Diagnosis:
    return Diagnosis(
        "tls_client_cert_required",
        f"Redis at {config.address} requires a client certificate (tls-auth-clients yes): set "
        "REDIS_TLS_CERT_PATH and REDIS_TLS_KEY_PATH",
        fatal=True,
    )


def _from_tls(exc: ssl.SSLError, config: RedisConfig) -> Diagnosis:
    addr = config.address
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = (
            f"the CA in REDIS_TLS_CA_PATH ({config.tls_ca_path})"
            if config.tls_ca_path
            else "the system CAs (REDIS_TLS_CA_PATH unset)"
        )
        reason = exc.verify_message or exc.reason or "verification failed"
        fix = (
            f"connect with a name the certificate holds, not {config.host!r}"
            if "mismatch" in str(reason)
            else "set REDIS_TLS_CA_PATH to the CA that signed the server's certificate"
        )
        return Diagnosis(
            "tls_untrusted",
            f"the TLS certificate of {addr} failed verification against {ca}: {reason}: {fix}",
            fatal=True,
        )
    reason = (exc.reason or "").upper()
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED" or (
        "HANDSHAKE_FAILURE" in reason and not config.tls_cert_path
    ):
        return _client_cert_required(config)
    if reason in ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE"):
        return Diagnosis(
            "tls_client_cert_rejected",
            f"Redis at {addr} rejected the client certificate in REDIS_TLS_CERT_PATH "
            f"({exc.reason}): it must be signed by the CA in Redis's tls-ca-cert-file",
            fatal=True,
        )
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return tls_to_plaintext_port(config, exc.reason)
    return Diagnosis(
        "tls_failed",
        f"TLS with {addr} failed: {exc.reason or _scrub(str(exc), config)}: check the REDIS_TLS_* "
        "settings against the server's tls-* settings",
        fatal=True,
    )


def tls_to_plaintext_port(config: RedisConfig, evidence: str) -> Diagnosis:
    """TLS is on but the port speaks plaintext RESP (``evidence`` says how that was seen).

    A plaintext Redis usually waits for a line end that a TLS hello never sends, so the
    handshake times out: whoever sees the timeout asks in plaintext (:mod:`gateway.probe`).
    """
    return Diagnosis(
        "tls_to_plaintext_port",
        f"{config.address} does not speak TLS ({evidence}): use redis:// (no TLS) or the "
        "server's TLS port",
        fatal=True,
    )


def _from_os(exc: OSError, config: RedisConfig) -> Diagnosis:
    addr = config.address
    if isinstance(exc, socket.gaierror):
        return Diagnosis(
            "dns_failed",
            f"cannot resolve the Redis host {config.host!r} ({exc.strerror}): check the host in "
            "REDIS_URL or REDIS_HOST, and DNS",
            fatal=False,
        )
    if isinstance(exc, ConnectionRefusedError):
        return Diagnosis(
            "connection_refused",
            f"connection refused by {addr}: is Redis running and listening on that port? "
            "Check REDIS_URL (or REDIS_HOST/REDIS_PORT)",
            fatal=False,
        )
    if isinstance(exc, ConnectionError):  # reset or closed before Redis answered
        if config.tls and not config.tls_cert_path:
            # TLS 1.3 finishes the client's side of the handshake before the server checks
            # the client certificate: a refusal shows as this close (or as the alert above).
            return _client_cert_required(config)
        hint = (
            "if that port speaks TLS, use rediss:// or REDIS_TLS=true"
            if not config.tls
            else "check that Redis accepts the client certificate"
        )
        return Diagnosis(
            "connection_closed",
            f"Redis at {addr} closed the connection before answering: {hint}; otherwise see "
            "the Redis log",
            fatal=False,
        )
    return Diagnosis(
        "unreachable",
        f"cannot reach {addr}: {exc.strerror or type(exc).__name__}: check the address, the "
        "network and firewalls",
        fatal=False,
    )


def _timeout(config: RedisConfig) -> Diagnosis:
    hint = (
        " (with TLS on, a plaintext port never answers the handshake: is it the TLS port?)"
        if config.tls
        else ""
    )
    return Diagnosis(
        "timeout",
        f"no answer from {config.address} within {config.connect_timeout_s:g} s{hint}: check "
        "the address, firewalls and security groups, or raise REDIS_CONNECT_TIMEOUT (ms)",
        fatal=False,
    )


def diagnose(exc: BaseException, config: RedisConfig, doing: str | None = None) -> Diagnosis:
    """The one-line diagnosis of ``exc``; ``doing`` names the command tried (for NOPERM)."""
    chain = list(_chain(exc))
    for item in chain:
        reply = _reply(item)
        if reply is not None:
            return _from_reply(*reply, config, doing)
    for item in chain:
        if isinstance(item, ssl.SSLError):
            return _from_tls(item, config)
    for item in chain:
        if isinstance(item, TimeoutError | rx.TimeoutError):
            return _timeout(config)
        if isinstance(item, OSError):
            return _from_os(item, config)
    return Diagnosis(
        "error",
        f"Redis at {config.address}: {type(exc).__name__}: {_scrub(str(exc), config)}",
        fatal=False,
    )
