"""Every Python example in docs/publishing.md runs as is, against a real Redis.

An example's ``# prints X`` comment (beside or above the line) is checked: X, up to ``;`` or
``...``, must appear in what it printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.process import ROOT
from tests.support.redis_server import RedisServer

EXAMPLES = re.findall(r"```python\n(.*?)```", (ROOT / "docs/publishing.md").read_text(), re.S)


def test_the_document_has_examples() -> None:
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example-{n}" for n in range(len(EXAMPLES))])
def test_example_runs_and_prints_what_it_says(source: str, redis_server: RedisServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GATEWAY_"))}
    env.update(PYTHONPATH=str(ROOT), REDIS_URL=redis_server.url)
    result = subprocess.run(
        [sys.executable, "-c", source],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    for promised in re.findall(r"# prints (.*)$", source, re.M):
        expected = re.split(r";|\.\.\.", promised)[0].strip()
        assert expected in result.stdout, (expected, result.stdout)
