"""What a ``notify-gateway`` subcommand provides to the command line."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping

__all__ = ["Subcommand"]


@dataclasses.dataclass(frozen=True)
class Subcommand:
    """A subcommand: its name and help, how to add its arguments, and how to run it.

    ``run`` returns the exit status. It may raise :class:`~gateway.config.ConfigError`
    (reported as a configuration error, status 2); anything else it must turn into one
    line on stderr and a non-zero status itself.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Mapping[str, str]], int]
