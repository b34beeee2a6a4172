"""An echo endpoint built from the gateway's own connection code.

The server is configured like the gateway's (no compression), and reads, validates
and closes exactly as the gateway does: it is a :class:`gateway.websocket.WebSocket`,
websockets' sans-I/O protocol on an asyncio transport, whose every message is echoed
through the gateway's raw write path: a frame built once by
:func:`gateway.protocol.text_frame` / :func:`~gateway.protocol.binary_frame` and
written by :meth:`~gateway.websocket.WebSocket.send` (OPEN-state rule, buffer cap).

Read-side limits differ from the gateway's defaults, on purpose: the Autobahn 9.x
cases send messages of up to 16 MiB, which the gateway refuses by design (1009 above
``GATEWAY_MAX_FRAME_BYTES``, 64 KiB by default), and the echo of such a message must
fit the outgoing buffer cap. The endpoint sends no heartbeat pings, so that no
unsolicited ping lands in the middle of a test case.

    .venv/bin/python -m bench.autobahn.echo [--port 9001]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from gateway.protocol import binary_frame, text_frame
from gateway.websocket import WebSocket, WebSocketOptions, WebSocketServer

#: Largest message accepted (the biggest Autobahn case is 16 MiB) and buffered on the way out.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class Echo(WebSocket):
    """Echo each message, text as text and binary as binary, until the peer closes."""

    __slots__ = ()

    def received(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self.send(text_frame(data.encode()))
        else:
            self.send(binary_frame(data))


async def start(host: str = "127.0.0.1", port: int = 0) -> WebSocketServer:
    """Start the echo endpoint; ``port=0`` picks a free port (read it from the result)."""
    options = WebSocketOptions(max_size=MAX_MESSAGE_BYTES, max_buffer=MAX_MESSAGE_BYTES)
    server = WebSocketServer(Echo, options)
    await server.listen(host, port)
    return server


def port_of(server: WebSocketServer) -> int:
    return server.port


async def _main(port: int) -> None:
    server = await start(port=port)
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
