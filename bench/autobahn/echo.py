"""An echo endpoint built from the gateway's own connection code.

The websockets server is configured like the gateway's (no compression, no
``Server`` header) and reads, validates and closes exactly as the gateway does;
every message is echoed through the gateway's raw write path: a frame built once
by :func:`gateway.protocol.text_frame` / :func:`~gateway.protocol.binary_frame`
and written by :class:`gateway.writer.FrameWriter` (OPEN-state rule, buffer cap).

Read-side limits differ from the gateway's defaults, on purpose: the Autobahn
9.x cases send messages of up to 16 MiB, some in more than 65536 fragments, which the
gateway refuses by design (1009 above ``GATEWAY_MAX_FRAME_BYTES``, 64 KiB by
default; websockets' own cap of 4096 fragments, raised for this endpoint with
``WEBSOCKETS_MAX_FRAGMENTS`` by the compliance script), and the echo of such a
message must fit the outgoing buffer cap. Keepalive pings are off so that no
unsolicited ping lands in the middle of a test case.

    .venv/bin/python -m bench.autobahn.echo [--port 9001]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gateway.protocol import binary_frame, text_frame
from gateway.writer import FrameWriter

#: Largest message accepted (the biggest Autobahn case is 16 MiB) and buffered on the way out.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


async def echo(ws: ServerConnection) -> None:
    """Echo each message, text as text and binary as binary, until the peer closes."""
    writer = FrameWriter(ws, MAX_MESSAGE_BYTES)
    try:
        async for message in ws:
            if isinstance(message, str):
                writer.send(text_frame(message.encode()))
            else:
                writer.send(binary_frame(message))
    except ConnectionClosed:
        return  # a protocol error or a dropped peer: websockets already closed correctly


async def start(host: str = "127.0.0.1", port: int = 0) -> Server:
    """Start the echo endpoint; ``port=0`` picks a free port (read it from the result)."""
    return await serve(
        echo,
        host,
        port,
        compression=None,
        max_size=MAX_MESSAGE_BYTES,
        ping_interval=None,
        close_timeout=5,
        server_header=None,
    )


def port_of(server: Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


async def _main(port: int) -> None:
    server = await start(port=port)
    print(f"echo endpoint on ws://127.0.0.1:{port_of(server)}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001, help="loopback port (0: any free one)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
