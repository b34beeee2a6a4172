"""The 60-second soak with faults (bench/soak.py, docs/testing.md), marker ``soak``.

Every chaos action and every kind of client, smaller and shorter than the documented run.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.process import ROOT


@pytest.mark.soak
@pytest.mark.timeout(400)
def test_soak_with_faults_for_60_seconds_loses_nothing_unexplained_and_leaks_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", "60", "--fast", "8", "--slow", "1",
         "--churn", "4", "--flood", "1", "--rate", "10", "--chaos-every", "5", "--settle", "60",
         "--seed", "7"],
        cwd=ROOT, capture_output=True, text=True, timeout=380, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "PASS" in result.stdout
