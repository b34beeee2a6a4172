"""Configuration parsing: every variable, and messages that name the variable and the fix."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_redis_config, load_settings


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8765)
    assert settings.public_channels == ("notifications", "public:*")
    assert settings.session_prefix == "session:"
    assert settings.redis.url() == "redis://localhost:6379/0"
    assert not settings.redis.explicit


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379", ("localhost", 6379, None, None, 0, False)),
        ("redis://:s3cret@cache:6380/2", ("cache", 6380, None, "s3cret", 2, False)),
        ("redis://app:p%40ss@cache:6379", ("cache", 6379, "app", "p@ss", 0, False)),
        (
            "rediss://default:pw@host.example:25061",
            ("host.example", 25061, "default", "pw", 0, True),
        ),
    ],
)
def test_redis_url_forms(url: str, expected: tuple[object, ...]) -> None:
    c = load_redis_config({"REDIS_URL": url})
    assert (c.host, c.port, c.username, c.password, c.db, c.tls) == expected
    assert c.explicit


def test_split_variables_are_used_without_url() -> None:
    c = load_redis_config(
        {"REDIS_HOST": "r1", "REDIS_PORT": "7000", "REDIS_PASSWORD": "pw", "REDIS_DB": "3"}
    )
    assert (c.host, c.port, c.password, c.db, c.explicit) == ("r1", 7000, "pw", 3, True)


def test_redacted_url_hides_password() -> None:
    c = load_redis_config({"REDIS_URL": "redis://app:hunter2@cache:6379/1"})
    assert c.url() == "redis://app:***@cache:6379/1"
    assert "hunter2" not in repr(c)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://:pw@h:6379/zero"}, "REDIS_URL"),
        ({"REDIS_PORT": "seventy"}, "REDIS_PORT"),
        ({"REDIS_PORT": "70000"}, "REDIS_PORT"),
        ({"GATEWAY_PORT": "-1"}, "GATEWAY_PORT"),
        ({"GATEWAY_AUTH_TIMEOUT": "soon"}, "GATEWAY_AUTH_TIMEOUT"),
        ({"GATEWAY_MAX_SUBSCRIPTIONS": "0"}, "GATEWAY_MAX_SUBSCRIPTIONS"),
        ({"GATEWAY_LOG_FORMAT": "xml"}, "GATEWAY_LOG_FORMAT"),
        ({"REDIS_TLS": "maybe"}, "REDIS_TLS"),
        ({"REDIS_TLS_CA_PATH": "/ca.pem"}, "REDIS_TLS_CA_PATH"),
        ({"GATEWAY_SESSION_PREFIX": ""}, "GATEWAY_SESSION_PREFIX"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(env)


def test_bad_url_message_never_echoes_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"REDIS_URL": "redis://:topsecret@h:6379/zero"})
    assert "topsecret" not in str(info.value)


def test_limits_and_public_channels_from_environment() -> None:
    s = load_settings(
        {
            "GATEWAY_PUBLIC_CHANNELS": "news, alerts:*",
            "GATEWAY_MAX_FRAME_BYTES": "1024",
            "GATEWAY_MAX_BUFFER_BYTES": "65536",
            "GATEWAY_RATE_LIMIT": "5",
        }
    )
    assert s.public_channels == ("news", "alerts:*")
    assert s.limits.max_frame_bytes == 1024
    assert s.limits.max_buffer_bytes == 65536
    assert s.limits.rate_per_second == 5.0
    assert load_settings({"GATEWAY_PUBLIC_CHANNELS": ""}).public_channels == ()


def test_admin_token_is_optional_and_kept_out_of_repr() -> None:
    assert load_settings({}).admin_token is None
    assert load_settings({"GATEWAY_ADMIN_TOKEN": "  "}).admin_token is None
    token = "0123456789abcdef0123"
    settings = load_settings({"GATEWAY_ADMIN_TOKEN": f" {token}\n"})
    assert settings.admin_token == token
    assert token not in repr(settings)


@pytest.mark.parametrize(
    ("value", "fix"),
    [("short-secret", "at least 16"), ("has spaces in the token value", "without spaces")],
)
def test_bad_admin_token_is_named_and_never_echoed(value: str, fix: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_TOKEN") as info:
        load_settings({"GATEWAY_ADMIN_TOKEN": value})
    assert fix in str(info.value)
    assert value not in str(info.value)


def test_redis_url_that_urllib_cannot_split_is_a_configuration_error() -> None:
    """Found by the config fuzz target: urlsplit's ValueError escaped as a traceback."""
    with pytest.raises(ConfigError, match="REDIS_URL is not a valid URL"):
        load_settings({"REDIS_URL": "redis://[abc"})
