"""The benchmark in its --quick sizes, so it cannot rot (speed is judged in bench/, not here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support.process import ROOT


@pytest.mark.timeout(180)
def test_quick_benchmark_delivers_every_message_on_both_servers(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "broadcast burst" in run.stdout  # the table was printed
    results = orjson.loads(out.read_bytes())
    assert results["ceiling"]["delivered"] == results["ceiling"]["expected"] > 0
    for kind in ("gateway", "baseline"):
        scenarios = results["targets"][kind]
        assert len(scenarios) == 6, [s["scenario"] for s in scenarios]
        for s in scenarios:
            assert s["expected"] > 0, s
            if kind == "gateway":
                assert s["delivered"] == s["expected"], s
                assert s["zero_loss"], s
            else:  # the naive baseline now and then closes a client 1011: that is its figure
                assert s["delivered"] > 0, s
