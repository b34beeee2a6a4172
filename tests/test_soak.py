"""The 60-second soak with faults (bench/soak.py, docs/testing.md), marker ``soak``.

It runs the fault mix main survives today; the faults and clients that trip holes being
fixed on other branches are behind ``--known-holes``, and the findings no branch fixes yet
behind ``--tolerate`` (each listed in bench.soak.TOLERABLE): drop a name from SOAK_TOLERATE
once its fix is merged, and add ``--known-holes`` once all of issue 13 is.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.process import ROOT

#: findings main still has (bench.soak.TOLERABLE): remove each once fixed
SOAK_TOLERATE = "first-position,pong-future-log,history-replayed-twice"


@pytest.mark.soak
@pytest.mark.timeout(400)
def test_soak_with_faults_for_60_seconds_loses_nothing_unexplained_and_leaks_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", "60", "--fast", "8", "--slow", "1",
         "--churn", "4", "--flood", "1", "--rate", "10", "--chaos-every", "5", "--settle", "60",
         "--seed", "7", "--tolerate", SOAK_TOLERATE],
        cwd=ROOT, capture_output=True, text=True, timeout=380, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "PASS" in result.stdout
