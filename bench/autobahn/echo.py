"""An echo endpoint built from the gateway's own connection code, with the gateway's limits.

The server is the gateway's connection layer with the gateway's settings (read from the
``GATEWAY_*`` environment like ``notify-gateway serve``; the defaults without it): it
reads HTTP, upgrades, validates, limits and closes exactly as the gateway does. It is a
:class:`gateway.edge.websocket.WebSocket`, websockets' sans-I/O protocol on an asyncio transport,
whose every message is echoed through the gateway's raw write path: a frame built once by
:func:`gateway.core.frames.text_frame` / :func:`~gateway.core.frames.binary_frame` and written
by :meth:`~gateway.edge.websocket.WebSocket.send` (OPEN-state rule, buffer cap).

With the deployed read limits, messages over ``GATEWAY_MAX_FRAME_BYTES`` (64 KiB by
default: most 9.x cases of Autobahn) are refused with close code 1009, by design;
``python -m bench.autobahn`` reports them as such. ``GATEWAY_COMPRESSION=deflate`` turns
permessage-deflate on, as in the gateway. The endpoint sends no heartbeat pings, so that no
unsolicited ping lands in the middle of a test case.

    GATEWAY_COMPRESSION=deflate .venv/bin/python -m bench.autobahn.echo [--port 9001]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from gateway.config import load_settings
from gateway.core.frames import binary_frame, text_frame
from gateway.edge.options import WebSocketOptions
from gateway.edge.server import WebSocketServer
from gateway.edge.websocket import WebSocket
from gateway.server import websocket_options


class Echo(WebSocket):
    """Echo each message, text as text and binary as binary, until the peer closes."""

    __slots__ = ()

    def received(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self.send(text_frame(data.encode()))
        else:
            self.send(binary_frame(data))


async def start(
    host: str = "127.0.0.1", port: int = 0, options: WebSocketOptions | None = None
) -> WebSocketServer:
    """Start the echo endpoint; ``port=0`` picks a free port (read it from the result).

    ``options`` default to the gateway's with default settings.
    """
    server = WebSocketServer(Echo, options or websocket_options(load_settings({})))
    await server.listen(host, port)
    return server


def port_of(server: WebSocketServer) -> int:
    return server.port


async def _main(port: int) -> None:
    options = websocket_options(load_settings(os.environ))
    server = await start(port=port, options=options)
    print(f"echo endpoint on ws://127.0.0.1:{port_of(server)}", flush=True)
    await asyncio.Event().wait()  # until Ctrl-C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001, help="loopback port (0: any free one)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
