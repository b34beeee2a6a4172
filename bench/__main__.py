"""``python -m bench [--quick | --full]``: run every scenario against both servers.

Starts a private redis-server, the load client's ceiling server (throughput) and
latency floor server (``bench.blaster`` relaying Redis, the sustained scenarios),
then for each of notify-gateway (``python -m gateway serve``) and the naive
baseline a fresh process pinned to one core, and runs the scenarios with the load
client, publisher and Redis on the other core. Prints a table (and where the
sustained latency goes), writes the JSON results and (except with ``--quick`` or
``--latency-only``) regenerates docs/benchmarks.md and its chart.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from redis import Redis

from bench import report, scenarios
from bench.procs import ROOT, Server, cleanup_logs, start_redis, stop_all
from bench.scenarios import FULL, QUICK, STANDARD, Sizes
from bench.wire import token

NOFILE = 300_000


def _machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": metadata.version("uvloop"),
        "websockets": metadata.version("websockets"),
        "redis": next((w[2:] for w in redis_version if w.startswith("v=")), "?"),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _raise_nofile() -> int:
    """Raise the descriptor limit (children inherit it); return how many connections fit.

    Raising the hard limit needs CAP_SYS_RESOURCE; without it one process holds at
    most hard-limit descriptors, and the connection scenarios are capped (and say so).
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(hard, NOFILE)))
        hard = max(hard, NOFILE)
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard - 200  # the server's listening socket, Redis connections, log files...


def _store_sessions(redis: Redis, count: int) -> None:
    for start in range(0, count, 10_000):
        with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(count, start + 10_000)):
                pipe.set(f"session:{token(i)}", orjson.dumps({"userId": str(i)}), ex=3600)
            pipe.execute()


#: ``--scenario`` names, in the order a run takes them
SCENARIOS = ("burst", "sustained", "personal", "connections")


def _run_target(
    kind: str,
    redis: Redis,
    redis_port: int,
    sizes: Sizes,
    say: Callable[[str], None],
    only: frozenset[str] = frozenset(SCENARIOS),
    processes: int = 1,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if only & {"burst", "sustained", "personal"}:
        server = Server(kind, redis_port)
        try:
            if "burst" in only:
                say(f"{kind}: broadcast burst")
                out.append(scenarios.burst(server, redis, redis_port, sizes))
            for rate in sizes.rates if "sustained" in only else ():
                say(f"{kind}: sustained {rate} msg/s")
                out.append(scenarios.sustained(server, redis, redis_port, sizes, rate, processes))
            if "personal" in only:
                say(f"{kind}: personal channels")
                out.append(scenarios.personal(server, redis, redis_port, sizes))
        finally:
            server.stop()
    if "connections" not in only:
        return out
    maximum = sizes.max_connections
    counts = [n for n in sizes.idle if n != maximum] + ([maximum] if maximum else [])
    for n in counts:
        say(f"{kind}: {n} connections (fresh process)")
        server = Server(kind, redis_port)
        try:
            results = scenarios.connections(server, redis, redis_port, n)
        finally:
            server.stop()
        if n == maximum:
            held = dict(
                results[0],
                scenario=f"maximum concurrent connections (of {n})",
                value=results[0]["connections"],
                unit="connections",
            )
            results = [held, *results]
        out += results
    return out


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median value, with every run's value and zero loss over all runs."""
    ordered = sorted(rows, key=lambda r: r["value"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    if len(rows) > 1:
        row["values"] = [r["value"] for r in rows]
        row["zero_loss"] = all(r["zero_loss"] for r in rows)
    return row


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    targets = {
        kind: [_median_row([run["targets"][kind][i] for run in runs]) for i in range(len(rows))]
        for kind, rows in runs[0]["targets"].items()
    }
    ceiling = [run["ceiling"] for run in runs if "ceiling" in run]
    # Runs without the sustained scenarios (--scenario burst, say) have no latency floor.
    floors = [run["floor"] for run in runs if "floor" in run]
    floor = [_median_row([f[i] for f in floors]) for i in range(len(floors[0]))] if floors else []
    return {
        **({"ceiling": _median_row(ceiling)} if ceiling else {}),
        "floor": floor,
        "targets": targets,
    }


def _floor(
    redis: Redis, redis_port: int, sizes: Sizes, say: Callable[[str], None], processes: int
) -> list[dict[str, Any]]:
    """The sustained scenarios against the blaster relaying Redis: the latency floor."""
    out = []
    relay = ["--redis-port", str(redis_port), "--channel", scenarios.BROADCAST]
    blaster = Server("blaster", redis_port, relay)
    try:
        for rate in sizes.rates:
            say(f"load client latency floor {rate} msg/s")
            out.append(scenarios.sustained(blaster, redis, redis_port, sizes, rate, processes))
    finally:
        blaster.stop()  # before the servers under test: it would relay their messages too
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="tiny sizes (seconds; for the smoke test)"
    )
    size.add_argument("--full", action="store_true", help="add 50k idle and 100k connections")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/latest.json")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run everything N times; report the medians"
    )
    parser.add_argument("--only", choices=("gateway", "baseline"), help="run one server only")
    parser.add_argument(
        "--load-processes",
        type=int,
        default=1,
        help="split the sustained scenarios' clients over N load processes (same core)",
    )
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the latency floor and the sustained scenarios (--scenario sustained)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable); implies --no-docs",
    )
    parser.add_argument(
        "--personal-messages",
        type=int,
        help="messages per client in the personal-channels scenario (a longer run to profile)",
    )
    parser.add_argument(
        "--from-json", type=Path, help="run nothing: print and document the results in PATH"
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        return _report(orjson.loads(args.from_json.read_bytes()), args)
    sizes = QUICK if args.quick else FULL if args.full else STANDARD
    if args.personal_messages is not None:
        sizes = dataclasses.replace(sizes, personal_messages=args.personal_messages)
    if args.latency_only:
        args.scenario = [*(args.scenario or ()), "sustained"]
    only = frozenset(args.scenario or SCENARIOS)
    if args.scenario:
        args.no_docs = True  # a partial run must not replace the documented figures
    mode = "quick" if args.quick else "full" if args.full else "standard"
    say: Callable[[str], None] = lambda text: print(f"bench: {text}", file=sys.stderr, flush=True)  # noqa: E731
    fit = _raise_nofile()
    notes: list[str] = []
    wanted = [*sizes.idle, *([sizes.max_connections] if sizes.max_connections else [])]
    if max(wanted) > fit:
        notes.append(
            f"connection counts capped at {fit}: RLIMIT_NOFILE hard limit "
            f"{fit + 200} and no CAP_SYS_RESOURCE to raise it"
        )
        sizes = dataclasses.replace(
            sizes,
            idle=tuple(sorted({min(n, fit) for n in sizes.idle})),
            max_connections=min(sizes.max_connections, fit) if sizes.max_connections else None,
        )
        say(notes[-1])
    clients = max(
        sizes.subscribers, sizes.personal_clients, *sizes.idle, sizes.max_connections or 0
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {
        "mode": mode,
        "command": "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": _machine(),
        "notes": notes,
    }
    redis_server = start_redis()
    redis = Redis(port=redis_server.port)
    kinds = [args.only] if args.only else ["gateway", "baseline"]
    try:
        _store_sessions(redis, clients)
        runs = []
        for k in range(args.repeat):
            say(f"run {k + 1} of {args.repeat}")
            run: dict[str, Any] = {"targets": {}}
            if "burst" in only:
                say("load client ceiling")
                m = sizes.burst_messages
                blast = ["--clients", str(sizes.subscribers), "--messages", str(m)]
                blaster = Server("blaster", redis_server.port, blast)
                try:
                    run["ceiling"] = scenarios.ceiling(blaster, sizes)
                finally:
                    blaster.stop()
            if "sustained" in only:
                run["floor"] = _floor(redis, redis_server.port, sizes, say, args.load_processes)
            for kind in kinds:
                run["targets"][kind] = _run_target(
                    kind, redis, redis_server.port, sizes, say, only, args.load_processes
                )
            runs.append(run)
            results.update(_median(runs))
            if len(runs) > 1:
                results["runs"] = runs
            _write_json(args.json, results)  # what is done so far survives an interruption
    finally:
        redis.close()
        stop_all()
        redis_server.cleanup()
        cleanup_logs()
    return _report(results, args)


def _write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


def _report(results: dict[str, Any], args: argparse.Namespace) -> int:
    say: Callable[[str], None] = lambda text: print(f"bench: {text}", file=sys.stderr)  # noqa: E731
    print(report.table(results))
    complete = "ceiling" in results and "gateway" in results["targets"]
    if results["mode"] != "quick" and not args.no_docs and complete:
        report.write_docs(results, ROOT / "docs/benchmarks.md", ROOT / "docs/benchmarks.png")
    for kind, rows in results["targets"].items():
        if not all(r["zero_loss"] for r in rows):
            say(f"{kind} lost messages: see its delivered column")
    # The exit status judges the gateway; the baseline's losses are part of its figures.
    return 0 if all(r["zero_loss"] for r in results["targets"].get("gateway", [])) else 1


if __name__ == "__main__":
    sys.exit(main())
