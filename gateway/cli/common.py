"""What the producer subcommands share: one-line errors, a publisher, tokens from stdin."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from gateway.config import GatewaySettings, config_warnings, load_settings
from notify_publisher.errors import PublisherError
from notify_publisher.sync import Publisher

__all__ = [
    "REDIS_HELP",
    "USAGE_ERROR",
    "fail",
    "note",
    "read_token",
    "warn_config",
    "with_publisher",
]

#: exit status for bad input (as argparse and configuration errors); 1 is for failures
USAGE_ERROR = 2

#: the description of the subcommands that talk to Redis
REDIS_HELP = (
    "Redis is found as the gateway finds it: REDIS_URL (default redis://localhost:6379/0, "
    "where `notify-gateway serve` starts its private Redis), or REDIS_HOST, REDIS_PORT, "
    "REDIS_USERNAME, REDIS_PASSWORD, REDIS_DB; REDIS_TLS* and REDIS_CLUSTER as in the README. "
    "GATEWAY_SESSION_PREFIX and the GATEWAY_MAX_* limits are read too, so nothing is stored "
    "that the gateways would refuse."
)


def note(message: str) -> None:
    """One line on stderr, leaving stdout to the command's output."""
    print(f"notify-gateway: {message}", file=sys.stderr, flush=True)


def fail(message: str, status: int = 1) -> int:
    """Print ``message`` as the one error line on stderr; return ``status``."""
    note(message)
    return status


def read_token(value: str) -> str:
    """The token argument, or the first line of stdin for ``-`` (keeps it out of ``ps``)."""
    return sys.stdin.readline().strip() if value == "-" else value


def warn_config(env: Mapping[str, str], settings: GatewaySettings) -> None:
    """One stderr line per probable mistake in the environment (an unknown variable, say)."""
    for warning in config_warnings(env, settings):
        note(f"warning: {warning.message}")


def with_publisher(env: Mapping[str, str], action: Callable[[Publisher], int]) -> int:
    """Run ``action`` with a publisher configured by ``env``; errors become one line.

    A :class:`~gateway.config.ConfigError` propagates: the command line reports it.
    """
    publisher = Publisher.from_env(env)
    warn_config(env, load_settings(env))
    try:
        return action(publisher)
    except PublisherError as exc:
        return fail(str(exc))
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        publisher.close()
