"""Reading settings from environment variables: the parsers every loader uses (pure).

Each parser takes the variable's name and raw value and returns the value or raises
:class:`ConfigError` with a message that names the variable and says how to fix it.
Nothing in the project reads ``os.environ`` but the command line, which hands the
environment to the loaders (``gateway.config``, ``notify_wire.shared``,
``notify_wire.redis_config``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar

__all__ = [
    "SERVICE_LINK_NAME",
    "ConfigError",
    "parse_bool",
    "parse_choice",
    "parse_int",
    "parse_list",
    "parse_positive",
    "read",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message says which and how to fix it."""


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


#: Kubernetes injects ``<SERVICE>_PORT=tcp://10.0.0.7:6379`` and friends for every Service
#: of the namespace (service links): a Service named ``redis`` or ``gateway`` collides.
_SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://", re.I)


SERVICE_LINK_NAME = re.compile(r".+_(SERVICE_(HOST|PORT)(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)")


def parse_int(name: str, raw: str, *, minimum: int, maximum: int | None = None) -> int:
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


def parse_positive(name: str, raw: str, *, unit: str = "seconds") -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of {unit}: set it to e.g. 10") from None
    if not 0 < value < float("inf"):  # also rejects NaN
        raise ConfigError(f"{name}={raw!r} is out of range: it must be more than 0 {unit}")
    return value


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def parse_choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name}={raw!r} is not valid: use one of {', '.join(choices)}")
        return value

    return parse


def read(env: Mapping[str, str], name: str, default: T, parse: Callable[[str, str], T]) -> T:
    """``env[name]`` through ``parse``, or ``default`` when it is unset or blank."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return parse(name, raw)
