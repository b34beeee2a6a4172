"""Run the Autobahn|Testsuite fuzzing client against the echo endpoint; fail on any FAILED case.

    .venv/bin/python -m bench.autobahn [--python2 PATH] [--timeout 1200] [--no-run]

``wstest`` is a Python 2.7 program: it is installed once from the package registry
with ``pip install --target`` into ~/.cache/notify-gateway/wstest (needs a Python
2.7, e.g. pyenv's). The echo endpoint (:mod:`bench.autobahn.echo`) runs with the
gateway's default settings and ``GATEWAY_COMPRESSION=deflate``, so the
permessage-deflate cases (12.*, 13.*) run too; it and wstest run as child processes on
loopback, under a deadline, and are stopped by their PIDs. The cases left out are listed,
with reasons, at ``EXCLUDED``. A case that sent more than ``GATEWAY_MAX_FRAME_BYTES``
and was closed with 1009 saying so is refused by design and counted as ``REFUSED (1009)``;
one that sent more frames than ``GATEWAY_FRAME_RATE_BURST`` at once (thousands of
fragments) and was failed with 4029 as ``REFUSED (4029)``; any other verdict than OK,
NON-STRICT, INFORMATIONAL or UNIMPLEMENTED fails the run. The HTML/JSON report goes to
``--reports`` (default ``.autobahn/``); ``--no-run`` reads the last one again.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.config import load_settings

#: The version this script was checked with (docs/benchmarks.md has its figures).
WSTEST_PACKAGE = "autobahntestsuite==25.10.1"
WSTEST_DIR = Path.home() / ".cache" / "notify-gateway" / "wstest"
#: 7.1.5: a close frame in the middle of a fragmented message. websockets' reader (not our
#: writer) answers 1002 "incomplete fragmented message" where the suite wants 1000; the
#: library documents this as its deliberate choice, allowed by RFC 6455 section 5.5.1
#: (websockets' compliance/README.rst). No data frame is involved.
EXCLUDED = ["7.1.5"]
#: how the echo endpoint is configured beyond the gateway's defaults
ECHO_ENV = {"GATEWAY_COMPRESSION": "deflate"}
#: the deployed limits: a message above the size gets 1009, more frames than the burst 4029
LIMITS = load_settings(ECHO_ENV).limits
TOO_BIG = "REFUSED (1009)"
TOO_MANY = "REFUSED (4029)"
REFUSED = frozenset({TOO_BIG, TOO_MANY})
AGENT = "notify-gateway-echo"
BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
#: Anything else, FAILED or a close-handshake verdict such as UNCLEAN or WRONG CODE, fails.
PASSING = frozenset(BEHAVIORS[:4])
# Run wstest from the --target directory; addsitedir also reads the .pth files there
# (zope.interface, which Twisted needs, is a namespace package declared in one).
_LAUNCH = (
    "import site, sys; site.addsitedir(sys.argv[1]); sys.argv = ['wstest'] + sys.argv[2:]; "
    "from autobahntestsuite.wstest import run; sys.exit(run())"
)


def _default_python2() -> str | None:
    pyenv = Path.home() / ".pyenv" / "versions" / "2.7.18" / "bin" / "python"
    if pyenv.exists():
        return str(pyenv)
    return shutil.which("python2.7") or shutil.which("python2")


def install_wstest(python2: str, target: Path) -> None:
    """Install wstest under ``target`` unless it is there (a half-done install is redone)."""
    if (target / "autobahntestsuite").is_dir():
        return
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"installing {WSTEST_PACKAGE} into {target} with {python2} ...", flush=True)
    command = [python2, "-m", "pip", "install", "-q", "--no-cache-dir", "--target", str(partial)]
    done = subprocess.run([*command, WSTEST_PACKAGE], timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"could not install wstest: {' '.join(command)} failed")
    partial.rename(target)


def write_spec(reports: Path, port: int) -> Path:
    spec = {
        "outdir": str(reports / "servers"),
        "servers": [{"agent": AGENT, "url": f"ws://127.0.0.1:{port}"}],
        "cases": ["*"],
        "exclude-cases": EXCLUDED,
        "exclude-agent-cases": {},
    }
    path = reports / "fuzzingclient.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def start_echo() -> tuple[subprocess.Popen[str], int]:
    """Start the echo endpoint on a free loopback port; returns the process and its port."""
    command = [sys.executable, "-m", "bench.autobahn.echo", "--port", "0"]
    env = {**os.environ, **ECHO_ENV}
    echo = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert echo.stdout is not None
    line = echo.stdout.readline()  # the endpoint prints its URL once it listens
    if not line.startswith("echo endpoint on ws://127.0.0.1:"):
        echo.kill()
        raise SystemExit(f"the echo endpoint did not start: {line!r}")
    return echo, int(line.rsplit(":", 1)[1])


def run_wstest(python2: str, wstest_dir: Path, spec: Path, timeout_s: float) -> int:
    command = [python2, "-c", _LAUNCH, str(wstest_dir), "-m", "fuzzingclient", "-s", str(spec)]
    try:
        # On timeout, run() kills its child (by PID) before raising.
        done = subprocess.run(
            command, cwd=spec.parent, stdout=subprocess.DEVNULL, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"wstest did not finish within {timeout_s:.0f} s") from None
    return done.returncode


def load_results(index_path: Path) -> dict[str, tuple[str, str]]:
    """Each case's (data behaviour, close-handshake behaviour) from wstest's index; a case
    refused by a deployed limit, the right way, gets :data:`TOO_BIG` or :data:`TOO_MANY`."""
    results = json.loads(index_path.read_text())[AGENT]
    verdicts = {}
    for case, r in results.items():
        verdict = (r["behavior"], r["behaviorClose"])
        if not set(verdict) <= PASSING and r["remoteCloseCode"] in (1009, 4029):
            report = json.loads((index_path.parent / r["reportfile"]).read_text())
            refused = _refused(r["remoteCloseCode"], report)
            if refused is not None:
                verdict = (refused, refused)
        verdicts[case] = verdict
    return verdicts


def _refused(code: int, report: dict[str, Any]) -> str | None:
    """Why a case closed with 1009 or 4029 was refused by design, if it was."""
    reason = report["remoteCloseReason"] or ""
    if code == 1009 and f"exceeds limit of {LIMITS.max_frame_bytes} bytes" in reason:
        return TOO_BIG  # websockets' size check: the message (inflated) is over the limit
    frames = sum(report["txFrameStats"].values())
    if code == 4029 and reason.startswith("frame rate limit") and frames > LIMITS.frame_burst:
        return TOO_MANY
    return None


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def print_table(results: dict[str, tuple[str, str]]) -> list[str]:
    """Print counts per behaviour and the cases that are not OK; return the failing ones."""
    data = collections.Counter(behavior for behavior, _ in results.values())
    close = collections.Counter(behavior for _, behavior in results.values())
    print(f"\n{'behaviour':<16}{'data':>7}{'close':>7}")
    shown = [*BEHAVIORS, TOO_BIG, TOO_MANY]
    for behavior in [*shown, *sorted((set(data) | set(close)) - set(shown))]:
        print(f"{behavior:<16}{data[behavior]:>7}{close[behavior]:>7}")
    print(f"{'total':<16}{len(results):>7}   (excluded: {', '.join(EXCLUDED)})")
    not_ok: dict[str, list[str]] = collections.defaultdict(list)
    for case in sorted(results, key=_case_key):
        for behavior in sorted(set(results[case]) - {"OK"}):
            not_ok[behavior].append(case)
    for behavior, cases in sorted(not_ok.items()):
        print(f"{behavior}: {' '.join(cases)}")
    return [case for case, verdicts in results.items() if not set(verdicts) <= PASSING | REFUSED]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python2", default=_default_python2(), help="a Python 2.7 for wstest")
    parser.add_argument("--wstest-dir", type=Path, default=WSTEST_DIR)
    parser.add_argument("--reports", type=Path, default=Path(".autobahn"))
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds for the whole run")
    parser.add_argument("--no-run", action="store_true", help="only read the last report again")
    args = parser.parse_args()
    reports = args.reports.resolve()
    if not args.no_run:
        _run(args, reports)
    index = reports / "servers" / "index.json"
    failing = print_table(load_results(index))
    print(f"report: {reports / 'servers' / 'index.html'}")
    if failing:
        print(f"{len(failing)} cases failed", file=sys.stderr)
        sys.exit(1)


def _run(args: argparse.Namespace, reports: Path) -> None:
    if args.python2 is None:
        raise SystemExit("no Python 2.7 found: wstest needs one (e.g. pyenv install 2.7.18)")
    install_wstest(args.python2, args.wstest_dir)
    shutil.rmtree(reports / "servers", ignore_errors=True)
    reports.mkdir(parents=True, exist_ok=True)
    echo, port = start_echo()
    try:
        code = run_wstest(args.python2, args.wstest_dir, write_spec(reports, port), args.timeout)
    finally:
        echo.terminate()  # our own child, by PID
        echo.wait(timeout=10)
    index = reports / "servers" / "index.json"
    if code != 0 or not index.exists():
        raise SystemExit(f"wstest exited with {code} and left no {index}")


if __name__ == "__main__":
    main()
