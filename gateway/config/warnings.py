"""Settings that are valid but probably not what was meant: warned at start (pure)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase

from gateway.config.load import load_settings
from gateway.config.settings import GatewaySettings
from notify_wire.channels import USER_CHANNEL_PREFIX
from notify_wire.env import SERVICE_LINK_NAME

__all__ = ["PREFIXES", "ConfigWarning", "config_warnings", "known_variables"]


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
        if SERVICE_LINK_NAME.fullmatch(name):
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
        if _glob_reaches(glob, USER_CHANNEL_PREFIX):
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
