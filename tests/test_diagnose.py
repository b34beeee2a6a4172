"""Diagnoses of Redis failures, fed the exceptions the gateway and redis-py raise."""

from __future__ import annotations

import ast
import inspect
import re
import socket
import ssl

import pytest
from redis import exceptions as rx

from gateway.broker.diagnose import RedisReplyError, diagnose
from notify_publisher.connect import async_redis
from notify_wire.redis_config import RedisConfig, load_redis_config
from tests.support.process import ROOT

PLAIN = load_redis_config({"REDIS_URL": "redis://:hunter2@cache.internal:6380/0"})
USER = load_redis_config({"REDIS_URL": "redis://app:hunter2@cache.internal:6380/0"})
TLS = load_redis_config(
    {"REDIS_URL": "rediss://app:hunter2@cache.internal:6380", "REDIS_TLS_CA_PATH": "/etc/ca.pem"}
)


def lost(cause: BaseException | None) -> ConnectionError:
    """What the gateway's pub/sub connection raises when the socket goes away."""
    error = ConnectionError("Redis connection lost")
    error.__cause__ = cause
    return error


def ssl_error(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    error.reason = reason
    return error


def verify_error(message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_message = message
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    return error


def wrapped(inner: BaseException) -> rx.ConnectionError:
    """redis-py's way: its own exception raised while handling the OSError."""
    try:
        raise inner
    except BaseException:
        try:
            raise rx.ConnectionError("Error connecting to cache.internal:6380.") from None
        except rx.ConnectionError as outer:
            outer.__context__ = inner
            return outer


CASES: list[tuple[str, BaseException, RedisConfig, str, bool, tuple[str, ...]]] = [
    (
        "refused",
        ConnectionRefusedError(111, "Connect call failed"),
        PLAIN,
        "connection_refused",
        False,
        ("cache.internal:6380", "is Redis running"),
    ),
    (
        "refused-redis-py",
        wrapped(ConnectionRefusedError(111, "Connection refused")),
        PLAIN,
        "connection_refused",
        False,
        ("cache.internal:6380",),
    ),
    (
        "dns",
        socket.gaierror(-2, "Name or service not known"),
        PLAIN,
        "dns_failed",
        False,
        ("'cache.internal'", "Name or service not known", "REDIS_HOST"),
    ),
    ("timeout", TimeoutError(), PLAIN, "timeout", False, ("5 s", "REDIS_CONNECT_TIMEOUT")),
    ("timeout-tls", TimeoutError(), TLS, "timeout", False, ("TLS port",)),
    (
        "timeout-redis-py",
        rx.TimeoutError("Timeout connecting to server"),
        PLAIN,
        "timeout",
        False,
        ("cache.internal:6380",),
    ),
    (
        "noauth",
        RedisReplyError("NOAUTH Authentication required."),
        PLAIN,
        "password_required",
        True,
        ("NOAUTH", "REDIS_PASSWORD"),
    ),
    (
        "noauth-redis-py",
        rx.AuthenticationError("Authentication required."),
        PLAIN,
        "password_required",
        True,
        ("NOAUTH",),
    ),
    (
        "wrongpass",
        RedisReplyError("WRONGPASS invalid username-password pair or user is disabled."),
        PLAIN,
        "wrong_password",
        True,
        ("WRONGPASS", "the default user", "REDIS_PASSWORD"),
    ),
    (
        "wrongpass-user-redis-py",
        rx.AuthenticationError("invalid username-password pair or user is disabled."),
        USER,
        "wrong_password",
        True,
        ("user 'app'", "REDIS_USERNAME"),
    ),
    (
        "no-password-on-server",
        rx.AuthenticationError(
            "AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        ),
        PLAIN,
        "no_password_on_server",
        True,
        ("requirepass",),
    ),
    (
        "noperm-command",
        RedisReplyError("NOPERM this user has no permissions to run the 'client|setname' command"),
        USER,
        "acl_denied",
        True,
        ("user 'app'", "'client|setname'", "docs/redis.md"),
    ),
    (
        "noperm-channel-redis-py",
        rx.NoPermissionError(
            "this user has no permissions to access one of the channels used as arguments"
        ),
        USER,
        "acl_denied",
        True,
        ("SUBSCRIBE public:x", "channels"),
    ),
    (
        "refused-inside-a-script",
        rx.ResponseError(
            "The user executing the script can't run this command or subcommand script: "
            "403779aa, on @user_script:5."
        ),
        USER,
        "acl_denied",
        True,
        ("user 'app'", "@user_script:5", "docs/redis.md"),
    ),
    (
        "tls-untrusted",
        verify_error("self-signed certificate in certificate chain"),
        TLS,
        "tls_untrusted",
        True,
        ("self-signed certificate", "/etc/ca.pem", "REDIS_TLS_CA_PATH"),
    ),
    (
        "tls-hostname",
        verify_error("Hostname mismatch, certificate is not valid for 'cache.internal'."),
        TLS,
        "tls_untrusted",
        True,
        ("Hostname mismatch", "a name the certificate holds"),
    ),
    (
        "tls-client-cert-required",
        lost(ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED")),
        TLS,
        "tls_client_cert_required",
        True,
        ("REDIS_TLS_CERT_PATH", "REDIS_TLS_KEY_PATH"),
    ),
    (
        "tls-client-cert-rejected",
        ssl_error("TLSV1_ALERT_UNKNOWN_CA"),
        TLS,
        "tls_client_cert_rejected",
        True,
        ("REDIS_TLS_CERT_PATH",),
    ),
    (
        "tls-to-plaintext",
        ssl_error("WRONG_VERSION_NUMBER"),
        TLS,
        "tls_to_plaintext_port",
        True,
        ("redis://",),
    ),
    (
        "tls-closed-without-client-cert",
        lost(ConnectionResetError(104, "Connection reset by peer")),
        TLS,
        "tls_client_cert_required",
        True,
        ("REDIS_TLS_CERT_PATH",),
    ),
    (
        "plaintext-to-tls",
        lost(None),
        PLAIN,
        "connection_closed",
        False,
        ("rediss://", "REDIS_TLS=true"),
    ),
    (
        "oom",
        rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        PLAIN,
        "out_of_memory",
        False,
        ("OOM", "maxmemory", "maxmemory-policy"),
    ),
    (
        "loading",
        RedisReplyError("LOADING Redis is loading the dataset in memory"),
        PLAIN,
        "loading",
        False,
        ("LOADING",),
    ),
    (
        "readonly",
        rx.ReadOnlyError("You can't write against a read only replica."),
        PLAIN,
        "read_only_replica",
        True,
        ("READONLY", "primary"),
    ),
    (
        "protected-mode",
        RedisReplyError("DENIED Redis is running in protected mode because ..."),
        PLAIN,
        "protected_mode",
        True,
        ("protected mode",),
    ),
]


@pytest.mark.parametrize(
    ("exc", "config", "cause", "fatal", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_failure_gets_its_cause_and_fix(
    exc: BaseException, config: RedisConfig, cause: str, fatal: bool, words: tuple[str, ...]
) -> None:
    found = diagnose(exc, config, "SUBSCRIBE public:x")
    assert (found.cause, found.fatal) == (cause, fatal)
    for word in words:
        assert word in found.message
    assert "\n" not in found.message
    assert "hunter2" not in found.message


def test_unknown_errors_are_quoted_without_the_password() -> None:
    echo = RedisReplyError("ERR unknown command 'HELLO', with args beginning with: 'hunter2'")
    found = diagnose(echo, PLAIN)
    assert found.cause == "redis_error"
    assert "unknown command 'HELLO'" in found.message
    assert "hunter2" not in found.message


def _diagnoses_in_code() -> dict[str, bool]:
    """Every ``Diagnosis("cause", ..., fatal=...)`` built in gateway/broker/diagnose.py."""
    tree = ast.parse((ROOT / "gateway" / "broker" / "diagnose.py").read_text())
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Diagnosis":
            cause = node.args[0]
            fatal = next(k.value for k in node.keywords if k.arg == "fatal")
            assert isinstance(cause, ast.Constant)
            assert isinstance(fatal, ast.Constant)
            found[cause.value] = fatal.value
    return found


def test_the_failure_cause_table_of_redis_md_matches_the_code() -> None:
    text = (ROOT / "docs" / "redis.md").read_text()
    section = text.split("\n### Failure causes\n", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[a-z_]+`", cells[0]):
            documented[cells[0].strip("`")] = cells[1] == "exit 2"
    code = _diagnoses_in_code()
    assert {"timeout", "db_out_of_range", "acl_denied"} <= code.keys()  # the scan works
    assert documented == code


def test_docs_name_only_causes_the_code_has() -> None:
    causes = set(_diagnoses_in_code())
    logging_md = (ROOT / "docs" / "logging.md").read_text()
    row = next(
        line for line in logging_md.splitlines() if line.startswith("| `redis_connect_failed`")
    )
    examples = row.split("short code (", 1)[1].split(")", 1)[0]
    named = set(re.findall(r"`([a-z_]+)`", examples))
    assert named
    assert named <= causes


def test_the_pool_size_in_redis_md_is_the_code_s() -> None:
    pool = inspect.signature(async_redis).parameters["max_connections"].default
    text = " ".join((ROOT / "docs" / "redis.md").read_text().split())
    assert re.findall(r"up to (\d+) pooled connections", text) == [str(pool), str(pool)]
