"""The short fuzz runs (docs/testing.md): every parser fed from outside, a few seconds each.

Per target: the committed corpus and every regression input replayed; a Hypothesis run
with a fixed seed (derandomized, so CI is reproducible); and where atheris is installed
(Linux x86_64), a bounded coverage-guided run with a fixed seed. Findings of the open holes
in tests/fuzz/known.py are tolerated here and replayed as strict xfails, so a fix that
lands makes the suite say so.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.harness import Finding
from tests.fuzz.known import OPEN_HOLES, is_open
from tests.fuzz.targets import TARGETS, Target
from tests.support.process import ROOT

pytestmark = pytest.mark.fuzz

FUZZ = Path(__file__).parent / "fuzz"
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


def _tolerant(target: Target, data: bytes) -> None:
    try:
        target.run(data)
    except Finding as finding:
        if not is_open(finding.kind):
            raise


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
        _tolerant(TARGETS[name], path.read_bytes())


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
        _tolerant(target, data)

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


def _regression_params() -> list[object]:
    params: list[object] = []
    for target, path in _files("regressions"):
        kind = path.name.partition("--")[0]
        marks = []
        if is_open(kind):
            marks.append(pytest.mark.xfail(strict=True, raises=Finding, reason=OPEN_HOLES[kind]))
        params.append(pytest.param(target, path, marks=marks, id=f"{target}/{path.name}"))
    return params


@pytest.mark.parametrize(("name", "path"), _regression_params())
def test_regression_input(name: str, path: Path) -> None:
    """Each input a fuzzer ever broke a rule with; named ``<finding kind>--<what>``."""
    TARGETS[name].run(path.read_bytes())


def test_every_open_hole_has_a_regression_input() -> None:
    kinds = {path.name.partition("--")[0] for _, path in _files("regressions")}
    assert set(OPEN_HOLES) <= kinds, set(OPEN_HOLES) - kinds
