"""Dockerfile and docker-compose.yml, checked without a Docker engine.

The compose file is parsed and its wiring followed: health-gated start order, the variables
the gateway needs (fed through the real settings loader), ports, Redis' safety settings and
the Prometheus target. The Dockerfile is parsed into stages and its essentials linted; its
HEALTHCHECK command is run for real against a gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shlex
import sys
from typing import Any

import pytest
import yaml

from gateway.config import load_settings
from gateway.server import Gateway
from tests.support.process import ROOT
from tests.support.redis_server import free_port

# Values standing in for the operator's .env when the compose file is interpolated.
OPERATOR_ENV = {
    "REDIS_PASSWORD": "p@ss/w0rd:with-url-characters",
    "GATEWAY_ADMIN_TOKEN": "0123456789abcdef0123456789abcdef",
}

# -- docker-compose.yml ------------------------------------------------------


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose variable substitution: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name, "")
        if op == ":?" and not current:
            raise LookupError(f"{name}: {arg}")
        if op == ":-" and not current:
            return arg
        return current

    if isinstance(value, str):
        return re.sub(
            r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}", substitute, value
        )
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


def compose_raw() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def compose() -> dict[str, Any]:
    result = interpolate(compose_raw(), OPERATOR_ENV)
    assert isinstance(result, dict)
    return result


def option(command: list[str], flag: str) -> str:
    """The value after ``flag`` in a redis-server argument list."""
    assert flag in command, f"redis-server is started without {flag}"
    return command[command.index(flag) + 1]


def test_compose_refuses_to_start_without_the_secrets() -> None:
    for missing in OPERATOR_ENV:
        env = {k: v for k, v in OPERATOR_ENV.items() if k != missing}
        with pytest.raises(LookupError, match=missing):
            interpolate(compose_raw(), env)


def test_redis_is_configured_as_a_careful_operator_would(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert re.fullmatch(r"redis:7\.\d+(\.\d+)?-alpine", redis["image"])
    command = redis["command"]
    assert option(command, "--requirepass") == OPERATOR_ENV["REDIS_PASSWORD"]
    assert OPERATOR_ENV["REDIS_PASSWORD"] not in (ROOT / "docker-compose.yml").read_text()
    assert re.fullmatch(r"\d+[kmg]b", option(command, "--maxmemory"))
    # Sessions have a TTL: any volatile-* or allkeys-* policy could evict them.
    assert option(command, "--maxmemory-policy") == "noeviction"
    assert option(command, "--appendonly") == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "ports" not in redis, "Redis must not be published outside the compose network"
    check = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli ping" in check
    assert "PONG" in check  # an error reply (NOAUTH) must not count as healthy
    assert redis["environment"]["REDISCLI_AUTH"] == OPERATOR_ENV["REDIS_PASSWORD"]


def test_gateway_waits_for_healthy_redis_and_gets_a_valid_configuration(
    compose: dict[str, Any],
) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    env = {k: str(v) for k, v in gateway["environment"].items()}
    settings = load_settings(env)  # raises ConfigError on anything the gateway would refuse
    assert settings.redis.host == "redis"
    assert settings.redis.host in compose["services"]
    assert settings.redis.explicit  # never falls back to an embedded redis-server
    assert settings.redis.password == OPERATOR_ENV["REDIS_PASSWORD"]
    assert settings.admin_token == OPERATOR_ENV["GATEWAY_ADMIN_TOKEN"]
    assert settings.log_format == "json"
    published = {str(p).rsplit(":", 1)[-1] for p in gateway["ports"]}
    assert published == {str(settings.port)}
    grace = int(str(gateway["stop_grace_period"]).removesuffix("s"))
    assert grace > settings.shutdown_timeout_s
    assert gateway["read_only"] is True
    assert gateway["cap_drop"] == ["ALL"]


def test_prometheus_profile_scrapes_the_gateway_with_the_admin_token(
    compose: dict[str, Any],
) -> None:
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert prometheus["depends_on"]["gateway"]["condition"] == "service_healthy"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    config_path = mounts["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((ROOT / config_path).read_text())
    for rule_file in config["rule_files"]:
        assert (ROOT / mounts[rule_file]).is_file()
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "notify-gateway"
    assert job["metrics_path"] == "/metrics"
    gateway_env = compose["services"]["gateway"]["environment"]
    assert job["static_configs"][0]["targets"] == [f"gateway:{gateway_env['GATEWAY_PORT']}"]
    # The bearer token comes from the compose secret holding GATEWAY_ADMIN_TOKEN.
    auth = job["authorization"]
    assert auth["type"] == "Bearer"
    (secret,) = prometheus["secrets"]
    assert auth["credentials_file"] == f"/run/secrets/{secret}"
    assert compose_raw()["secrets"][secret] == {"environment": "GATEWAY_ADMIN_TOKEN"}
    assert "credentials" not in auth
    assert all(port.startswith("127.0.0.1:") for port in prometheus["ports"])


def test_env_example_names_every_required_variable() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required == set(OPERATOR_ENV)
    example = (ROOT / ".env.example").read_text()
    for name in required:
        assert re.search(rf"^{name}=", example, re.M), f"{name} missing from .env.example"


# -- Dockerfile --------------------------------------------------------------


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def get(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile_stages() -> list[Stage]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            image, _, alias = base.partition(" AS ")
            stages.append(Stage(image.strip(), alias.strip() or None))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def test_dockerfile_is_multi_stage_slim_and_pinned() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    for stage in stages:
        assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-\w+)?", stage.base), stage.base
    assert final.base == build.base  # the virtualenv's interpreter path must hold
    copied = " ".join(final.get("COPY"))
    assert f"--from={build.name}" in copied
    env = " ".join(final.get("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    # No compilers or package installs in the image that runs.
    run = " ".join(final.get("RUN"))
    for tool in ("gcc", "build-essential", "apt-get install", "pip install", "make "):
        assert tool not in run, f"final stage runs {tool}"
    assert "--no-cache-dir" in " ".join(build.get("RUN"))


def test_dockerfile_runs_unprivileged_and_stops_cleanly() -> None:
    final = dockerfile_stages()[-1]
    (user,) = final.get("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert re.fullmatch(r"\d+(:\d+)?", user), "numeric USER lets Kubernetes check runAsNonRoot"
    assert final.get("STOPSIGNAL") == ["SIGTERM"]
    (entrypoint,) = final.get("ENTRYPOINT")
    (cmd,) = final.get("CMD")
    assert json.loads(entrypoint) + json.loads(cmd) == ["notify-gateway", "serve"]
    (exposed,) = final.get("EXPOSE")
    env = dict(
        item.split("=", 1) for line in final.get("ENV") for item in shlex.split(line) if "=" in item
    )
    assert exposed == env["GATEWAY_PORT"]
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    compose_port = compose_raw()["services"]["gateway"]["environment"]["GATEWAY_PORT"]
    assert str(compose_port) == exposed


def healthcheck_command() -> list[str]:
    (healthcheck,) = dockerfile_stages()[-1].get("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval=" in options
    argv = json.loads(command)
    assert isinstance(argv, list)
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


async def _run_healthcheck(port: int) -> int:
    process = await asyncio.create_subprocess_exec(
        *healthcheck_command(),
        env={"GATEWAY_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 15)


async def test_healthcheck_command_passes_on_a_live_gateway_and_fails_without_one(
    gateway: Gateway,
) -> None:
    assert "/healthz" in " ".join(healthcheck_command())
    assert await _run_healthcheck(gateway.port) == 0
    assert await _run_healthcheck(free_port()) != 0
