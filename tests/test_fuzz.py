"""The short fuzz runs (docs/testing.md): every parser fed from outside, a few seconds each.

Per target: the committed corpus and every regression input replayed; a Hypothesis run
with a fixed seed (derandomized, so CI is reproducible); and where atheris is installed
(Linux x86_64), a bounded coverage-guided run with a fixed seed. Any finding fails.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import TARGETS
from tests.support.process import ROOT

pytestmark = pytest.mark.fuzz

FUZZ = Path(__file__).parent / "fuzz"
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


def _files(kind: str) -> list[tuple[str, Path]]:
    return [
        (target, path)
        for target in TARGETS
        if (FUZZ / kind / target).is_dir()
        for path in sorted((FUZZ / kind / target).iterdir())
    ]


@pytest.mark.parametrize("name", TARGETS)
def test_committed_corpus_replays_cleanly(name: str) -> None:
    paths = sorted((FUZZ / "corpus" / name).iterdir())
    assert paths, f"tests/fuzz/corpus/{name} is empty: seed it (docs/testing.md)"
    for path in paths:
        TARGETS[name].run(path.read_bytes())


@pytest.mark.parametrize("name", TARGETS)
def test_hypothesis_short_run(name: str) -> None:
    target = TARGETS[name]

    @settings(
        max_examples=300,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(target.strategy)
    def run(data: bytes) -> None:
        target.run(data)

    run()


@pytest.mark.skipif(not HAVE_ATHERIS, reason="atheris has wheels for Linux x86_64 only")
@pytest.mark.parametrize("name", TARGETS)
def test_atheris_short_run(name: str, tmp_path: Path) -> None:
    """A bounded coverage-guided run from the committed corpus (fixed seed, fixed run count)."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", name, "--seconds", "20", "--",
         "-runs=3000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    ("name", "path"),
    [pytest.param(t, p, id=f"{t}/{p.name}") for t, p in _files("regressions")],
)
def test_regression_input(name: str, path: Path) -> None:
    """Each input a fuzzer ever broke a rule with; named ``<finding kind>--<what>``."""
    TARGETS[name].run(path.read_bytes())
