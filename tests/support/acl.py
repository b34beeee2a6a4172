"""The least-privilege ACL lines of docs/redis.md, so tests use exactly what is documented."""

from __future__ import annotations

import re

from tests.support.process import ROOT

__all__ = ["documented_acl_users"]


def documented_acl_users() -> dict[str, list[str]]:
    """The ``user ...`` lines of docs/redis.md, by user name, as redis-server arguments."""
    text = (ROOT / "docs" / "redis.md").read_text()
    lines = re.findall(r"^user (\S+) (.+)$", text, re.MULTILINE)
    assert {name for name, _ in lines} == {"notify-gateway", "app-publisher"}
    return {name: ["--user", name, *rules.split()] for name, rules in lines}
