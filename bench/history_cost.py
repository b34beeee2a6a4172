"""What ``history=True`` costs a producer: plain PUBLISH against the history script.

Runs a private redis-server on a free loopback port, publishes the same ~100-byte message
N times through the publisher library (one call per message, then batches of 100 with
``publish_many``), with and without history, and prints messages per second for each.
Every run is repeated; the median is reported.

    .venv/bin/python -m bench.history_cost [--messages 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from notify_publisher import Publisher

PAYLOAD = {"type": "new_message", "userId": "123", "message": "x" * 48}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rate(publisher: Publisher, messages: int, *, history: bool, batch: int) -> float:
    started = time.perf_counter()
    if batch == 1:
        for _ in range(messages):
            publisher.publish("bench:history", PAYLOAD, history=history)
    else:
        items = [("bench:history", PAYLOAD)] * batch
        for _ in range(messages // batch):
            publisher.publish_many(items, history=history)
    return messages / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="bench-history-")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        with Publisher.from_url(f"redis://127.0.0.1:{port}/0") as publisher:
            for _ in range(200):  # wait for the server, bounded
                try:
                    publisher.publish("bench:warmup", 1)
                    break
                except Exception:
                    time.sleep(0.05)
            print(f"{'mode':<36}{'median msg/s':>14}{'runs':>30}")
            for label, batch in (("one call per message", 1), ("publish_many, 100 a batch", 100)):
                rates = {}
                for history in (False, True):
                    runs = [
                        _rate(publisher, args.messages, history=history, batch=batch)
                        for _ in range(args.runs)
                    ]
                    rates[history] = statistics.median(runs)
                    name = f"{label}{', history' if history else ''}"
                    shown = " ".join(f"{r:,.0f}" for r in runs)
                    print(f"{name:<36}{rates[history]:>14,.0f}   {shown}")
                print(f"{'':<36}history costs {1 - rates[True] / rates[False]:.0%} of the rate")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
