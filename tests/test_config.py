"""Configuration parsing: every variable, and messages that name the variable and the fix."""

from __future__ import annotations

import re

import pytest

from gateway.config import config_warnings, connections_for, known_variables, load_settings
from notify_wire.env import ConfigError
from notify_wire.redis_config import load_redis_config
from tests.support.process import ROOT


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
        ({"GATEWAY_FRAME_RATE_LIMIT": "0"}, "GATEWAY_FRAME_RATE_LIMIT"),
        ({"GATEWAY_FRAME_RATE_BURST": "many"}, "GATEWAY_FRAME_RATE_BURST"),
        ({"GATEWAY_MAX_BODY_BYTES": "-1"}, "GATEWAY_MAX_BODY_BYTES"),
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
            "GATEWAY_FRAME_RATE_LIMIT": "20",
            "GATEWAY_FRAME_RATE_BURST": "40",
            "GATEWAY_MAX_BODY_BYTES": "0",
        }
    )
    assert (s.limits.frame_rate_per_second, s.limits.frame_burst) == (20.0, 40)
    assert s.limits.max_body_bytes == 0  # no request body at all
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


def test_the_replay_byte_limit_follows_the_buffer_limit_and_stays_within_it() -> None:
    assert load_settings({}).max_replay_bytes == 1024 * 1024
    assert load_settings({"GATEWAY_MAX_BUFFER_BYTES": "65536"}).max_replay_bytes == 65536
    assert load_settings({"GATEWAY_MAX_REPLAY_BYTES": "200000"}).max_replay_bytes == 200_000
    with pytest.raises(ConfigError, match="GATEWAY_MAX_REPLAY_BYTES=2000000 is more than"):
        load_settings({"GATEWAY_MAX_REPLAY_BYTES": "2000000"})
    with pytest.raises(ConfigError, match="GATEWAY_MAX_REPLAY_BYTES"):
        load_settings({"GATEWAY_MAX_REPLAY_BYTES": "12"})


README = ROOT / "README.md"


def readme_variables() -> set[str]:
    """The names in the first column of the README's configuration table."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        cells = line.strip().strip("|").split("|")
        if line.startswith("|") and len(cells) >= 3:
            names.update(re.findall(r"`((?:GATEWAY|REDIS)_[A-Z_]+)`", cells[0]))
    return names


def test_the_readme_table_lists_exactly_the_variables_the_loader_reads() -> None:
    known = known_variables()
    assert {"REDIS_URL", "GATEWAY_PORT", "REDIS_SENTINEL_PASSWORD"} <= known  # the scan works
    assert readme_variables() == known


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("GATEWAY_MAX_CONNECTION", "did you mean GATEWAY_MAX_CONNECTIONS?"),
        ("REDIS_UR", "did you mean REDIS_URL?"),
        ("GATEWAY_LOGLEVEL", "did you mean GATEWAY_LOG_LEVEL?"),
        ("GATEWAY_NONSENSE", "see the README configuration table"),
    ],
)
def test_unknown_variables_are_warned_with_the_closest_name(name: str, hint: str) -> None:
    env = {name: "10", "PATH": "/bin", "REDIS_URL": "redis://h:1/0"}
    (warning,) = config_warnings(env, load_settings(env))
    assert (warning.variable, warning.problem) == (name, "unknown_variable")
    assert warning.message.endswith(hint)


@pytest.mark.parametrize(
    ("globs", "warned"),
    [
        ("notifications,public:*", False),
        ("user:*", True),
        ("*", True),
        ("u*", True),
        ("user:4?", True),
        ("[tu]ser:*", True),
        ("users:*", False),
        ("[!u]*", False),
        ("user", False),
    ],
)
def test_public_globs_over_private_channels_are_warned(globs: str, warned: bool) -> None:
    env = {"GATEWAY_PUBLIC_CHANNELS": globs}
    problems = [w.problem for w in config_warnings(env, load_settings(env))]
    assert problems == (["private_channels_public"] if warned else [])


def test_the_connection_cap_follows_the_open_file_limit_unless_set() -> None:
    assert load_settings({}, open_files=20_000).admission.max_connections == 18_976
    assert load_settings({}, open_files=1024).admission.max_connections == 512
    assert load_settings({}).admission.max_connections == 100_000  # library use: no limit known
    explicit = load_settings({"GATEWAY_MAX_CONNECTIONS": "50"}, open_files=20_000)
    assert explicit.admission.max_connections == 50
    assert connections_for(1_048_576) == 1_047_552


def test_a_port_that_is_not_a_number_gets_its_range() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"GATEWAY_PORT": "abc"})
    assert str(info.value) == "GATEWAY_PORT='abc' is not a whole number: use one from 0 to 65535"


def test_log_format_defaults_to_auto() -> None:
    assert load_settings({}).log_format == "auto"
    assert load_settings({"GATEWAY_LOG_FORMAT": "Console"}).log_format == "console"


def test_redis_url_that_urllib_cannot_split_is_a_configuration_error() -> None:
    """Found by the config fuzz target: urlsplit's ValueError escaped as a traceback."""
    with pytest.raises(ConfigError, match="REDIS_URL is not a valid URL"):
        load_settings({"REDIS_URL": "redis://[abc"})


def test_kubernetes_service_links_are_not_warned_and_a_colliding_port_is_explained() -> None:
    """A Service named ``redis`` makes Kubernetes set REDIS_SERVICE_HOST, REDIS_PORT=tcp://...
    and the like in every pod of the namespace."""
    env = {
        "REDIS_URL": "redis://h:1/0",
        "REDIS_SERVICE_HOST": "10.0.0.7",
        "REDIS_SERVICE_PORT": "6379",
        "REDIS_PORT_6379_TCP": "tcp://10.0.0.7:6379",
        "REDIS_PORT_6379_TCP_ADDR": "10.0.0.7",
    }
    assert config_warnings(env, load_settings(env)) == []
    with pytest.raises(ConfigError, match=r"Kubernetes service link.*enableServiceLinks"):
        load_settings({"REDIS_HOST": "redis", "REDIS_PORT": "tcp://10.0.0.7:6379"})
