"""The cost of reading one HTTP request: the gateway's reader (httptools) against the others.

    .venv/bin/python -m bench.parsers [--h11 DIR]

Best of 7 x 5000 parses of a WebSocket upgrade request and of a plain ``GET``, by
:class:`gateway.http11.RequestReader` (httptools), websockets 17.4's ``ServerProtocol``
(the parser the gateway used before), and h11 when ``--h11 DIR`` names a directory it is
installed in (``uv pip install --target DIR h11``; it is no dependency of the project).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import timeit
from collections.abc import Callable
from typing import Any

from websockets.server import ServerProtocol

from gateway.edge.http11 import RequestReader
from tests.support.ws import upgrade_request

UPGRADE = upgrade_request(
    "User-Agent: Python/3.11 websockets/17.4\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
)
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUser-Agent: curl/8.5.0\r\n\r\n"


def _gateway(data: bytes) -> Callable[[], None]:
    def run() -> None:
        assert RequestReader(65536).feed(data)

    return run


def _websockets(data: bytes) -> Callable[[], None]:
    def run() -> None:
        protocol = ServerProtocol()
        protocol.receive_data(data)
        assert protocol.events_received()

    return run


def _h11(h11: Any) -> Callable[[bytes], Callable[[], None]]:
    def make(data: bytes) -> Callable[[], None]:
        def run() -> None:
            connection = h11.Connection(h11.SERVER)
            connection.receive_data(data)
            assert isinstance(connection.next_event(), h11.Request)

        return run

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h11", help="a directory h11 is installed in")
    args = parser.parse_args()
    readers: list[tuple[str, Callable[[bytes], Callable[[], None]]]] = [
        ("gateway.http11 (httptools)", _gateway),
        ("websockets ServerProtocol", _websockets),
    ]
    if args.h11:
        sys.path.insert(0, args.h11)
        h11 = importlib.import_module("h11")
        readers.append((f"h11 {h11.__version__}", _h11(h11)))
    for name, data in (("upgrade request", UPGRADE), ("GET /healthz", HEALTHZ)):
        for label, make in readers:
            best = min(timeit.repeat(make(data), number=5000, repeat=7)) / 5000 * 1e6
            print(f"| {name} | {label} | {best:.1f} us |")


if __name__ == "__main__":
    main()
