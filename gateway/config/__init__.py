"""Settings, read once from the environment and validated (pure).

Nothing else in the gateway reads ``os.environ``: the command line hands the environment to
:func:`load_settings`, which returns frozen dataclasses; :func:`config_warnings` says what
in it is probably a mistake.
"""

from gateway.config.load import connections_for, load_settings, parse_workers
from gateway.config.settings import Admission, GatewaySettings, Limits
from gateway.config.warnings import ConfigWarning, config_warnings, known_variables
from notify_wire.env import ConfigError
from notify_wire.redis_config import RedisConfig, load_redis_config

__all__ = [
    "Admission",
    "ConfigError",
    "ConfigWarning",
    "GatewaySettings",
    "Limits",
    "RedisConfig",
    "config_warnings",
    "connections_for",
    "known_variables",
    "load_redis_config",
    "load_settings",
    "parse_workers",
]
