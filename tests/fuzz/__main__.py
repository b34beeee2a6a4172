"""Coverage-guided fuzzing of one target with atheris (libFuzzer): the long run.

    python -m tests.fuzz TARGET [--seconds N] [-- LIBFUZZER_FLAGS...]
    python -m tests.fuzz all --seconds 600
    python -m tests.fuzz --list

New interesting inputs go to ``.fuzz/corpus/TARGET/`` (seeded from the committed
``tests/fuzz/corpus/TARGET/`` and ``tests/fuzz/regressions/TARGET/``), crashes to
``.fuzz/crashes/TARGET/``; each becomes a file in ``tests/fuzz/regressions/TARGET/``
named ``<finding kind>--<what>`` once fixed. See docs/testing.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WORK = ROOT / ".fuzz"


def _fuzz_one(name: str, seconds: float, extra: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["gateway", "websockets", "tests.fuzz"]):
        from tests.fuzz.targets import TARGETS

    from gateway.ops.log import configure_logging

    # The gateway's logs of refused input would drown libFuzzer's output: kept for the run.
    configure_logging("error", "json", file=open(os.devnull, "wb"))  # noqa: SIM115
    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}: see python -m tests.fuzz --list")
    one_input = TARGETS[name].run

    corpus, crashes = WORK / "corpus" / name, WORK / "crashes" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    seeds = [d for d in (HERE / "corpus" / name, HERE / "regressions" / name) if d.is_dir()]
    argv = [
        sys.argv[0],
        f"-artifact_prefix={crashes}/",
        f"-max_total_time={int(seconds)}",
        "-max_len=4096",
        *extra,
        str(corpus),
        *map(str, seeds),
    ]
    sys.argv = argv  # libFuzzer reads the process arguments too
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def main() -> int:
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=summary)
    parser.add_argument("target", nargs="?", help="a target name, or all")
    parser.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    parser.add_argument("--list", action="store_true", help="list the targets")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    extra = argv[cut + 1 :]  # libFuzzer flags, e.g. -runs=10000 -seed=1
    if args.target not in (None, "all") and not args.list:
        # Imported here, instrumented, before anything else imports the gateway.
        _fuzz_one(args.target, args.seconds, extra)
        return 0
    from tests.fuzz.targets import TARGETS

    if args.list or not args.target:
        for target in TARGETS.values():
            print(f"{target.name:14} {target.encoding}")
        return 0
    failed = []
    for name in TARGETS:
        print(f"== {name}", flush=True)
        command = [sys.executable, "-m", "tests.fuzz", name, "--seconds", str(args.seconds)]
        command += ["--", *extra] if extra else []
        if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
            failed.append(name)
    print(f"crashed: {', '.join(failed)} (see .fuzz/crashes/)" if failed else "no crash")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
