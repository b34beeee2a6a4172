"""``notify-gateway doctor`` against a healthy, a misconfigured and a down Redis."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson
import pytest

from gateway.cli.main import main
from tests.support.acl import documented_acl_users
from tests.support.redis_server import RedisServer, free_port

RedisFactory = Callable[[Sequence[str]], RedisServer]


def doctor(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run ``doctor --json``; return the exit status and {check: (status, detail)}."""
    status = main(["doctor", "--json"], env)
    report = orjson.loads(capsys.readouterr().out)
    assert report["ok"] is (status == 0)
    return status, {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}


def test_healthy_redis(redis_factory: RedisFactory, capsys: pytest.CaptureFixture[str]) -> None:
    server = redis_factory(["--requirepass", "pw-xyz", "--maxmemory", "64mb"])
    env = {"REDIS_URL": f"redis://:pw-xyz@127.0.0.1:{server.port}/0"}
    status, checks = doctor(capsys, env)
    assert status == 0
    for name in (
        "reachable", "authenticated", "version", "maxmemory", "eviction policy", "memory use",
        "pubsub output buffer", "slowlog", "latency", "acl GET session:notify-gateway-check",
        "acl SUBSCRIBE __notify_gateway__:control", "acl SUBSCRIBE notifications",
    ):  # fmt: skip
        assert checks[name][0] == "OK", (name, checks[name])
    assert checks["version"][1].startswith("Redis 7.")
    assert checks["maxmemory"][1] == "64.0 MiB"
    # The default user may do anything, publishing included: worth a warning, not a failure.
    assert checks["acl PUBLISH"][0] == "WARN"
    assert main(["doctor"], env) == 0
    text = capsys.readouterr().out
    assert "pw-xyz" not in text
    assert text.splitlines()[0] == f"notify-gateway doctor: redis://:***@127.0.0.1:{server.port}/0"
    assert "OK    reachable" in text
    assert text.splitlines()[-1].endswith("0 FAIL")


def test_eviction_policy_that_can_evict_sessions_warns(
    redis_factory: RedisFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = redis_factory(["--maxmemory-policy", "allkeys-lru", "--slowlog-log-slower-than", "0"])
    status, checks = doctor(capsys, {"REDIS_URL": server.url})
    assert status == 0  # warnings only
    assert checks["eviction policy"][0] == "WARN"
    assert "allkeys-lru" in checks["eviction policy"][1]
    assert "noeviction" in checks["eviction policy"][1]
    assert checks["maxmemory"][0] == "WARN"
    assert "no limit" in checks["maxmemory"][1]
    # Every command is "slow" here: the doctor's own probes fill the slow log.
    assert checks["slowlog"][0] == "OK"
    assert "recent entries, slowest" in checks["slowlog"][1]


def test_documented_gateway_user_passes_and_cannot_publish(
    redis_factory: RedisFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = redis_factory(documented_acl_users()["notify-gateway"])
    url = f"redis://notify-gateway:change-me-gateway@127.0.0.1:{server.port}/0"
    status, checks = doctor(capsys, {"REDIS_URL": url})
    assert status == 0
    assert checks["acl PUBLISH"][0] == "OK"
    assert checks["acl GET session:notify-gateway-check"][0] == "OK"
    # What this user may not run becomes a warning naming the refused command.
    assert checks["memory"] == (
        "WARN",
        "cannot check memory: the ACL of user 'notify-gateway' refuses INFO",
    )
    assert checks["pubsub output buffer"][0] == "WARN"
    assert "refuses CONFIG GET" in checks["pubsub output buffer"][1]


@pytest.mark.parametrize(
    ("rule", "check", "refusal"),
    [
        ("+get", "acl GET session:notify-gateway-check", "'get' command"),
        ("+ping", "acl PING", "'ping' command"),
    ],
)
def test_acl_user_missing_a_permission_fails(
    redis_factory: RedisFactory,
    capsys: pytest.CaptureFixture[str],
    rule: str,
    check: str,
    refusal: str,
) -> None:
    server = redis_factory([a for a in documented_acl_users()["notify-gateway"] if a != rule])
    url = f"redis://notify-gateway:change-me-gateway@127.0.0.1:{server.port}/0"
    status, checks = doctor(capsys, {"REDIS_URL": url})
    assert status == 1
    assert checks["reachable"][0] == "OK"
    assert [name for name, (s, _) in checks.items() if s == "FAIL"] == [check]
    assert refusal in checks[check][1]
    assert "NOPERM" in checks[check][1]


def test_wrong_password_fails_authentication(
    redis_factory: RedisFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = redis_factory(["--requirepass", "right-one"])
    env = {"REDIS_URL": f"redis://:wrong-one@127.0.0.1:{server.port}/0"}
    assert main(["doctor"], env) == 1
    out = capsys.readouterr().out
    assert "wrong-one" not in out
    lines = out.splitlines()
    assert lines[1].startswith("OK    reachable")
    assert lines[2].startswith("FAIL  authenticated")
    assert "WRONGPASS" in lines[2]


def test_down_redis(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    status, checks = doctor(capsys, {"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert status == 1
    assert list(checks) == ["reachable"]
    assert checks["reachable"][0] == "FAIL"
    assert f"connection refused by 127.0.0.1:{port}" in checks["reachable"][1]
