"""What the connections of one server share: their options, and the server as they see it."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Sequence
from typing import Protocol

from websockets.extensions.base import ServerExtensionFactory
from websockets.typing import Origin

__all__ = ["Owner", "WebSocketOptions"]


@dataclasses.dataclass(frozen=True, slots=True)
class WebSocketOptions:
    """What every connection of a server shares."""

    #: largest message accepted from a client (1009 above it); None: no limit
    max_size: int | None
    #: unsent bytes a client may have before :meth:`WebSocket.overflow`
    max_buffer: int
    #: allowed ``Origin`` headers (None in the list: no header); None: any
    origins: Sequence[Origin | None] | None = None
    #: offer permessage-deflate (what the client sends may be compressed)
    compression: bool = False
    #: seconds from TCP accept to the end of the upgrade, and that a keep-alive HTTP
    #: connection may stay idle between requests
    handshake_timeout_s: float = 10.0
    #: seconds a close handshake may take before the TCP connection is dropped
    close_timeout_s: float = 5.0
    #: WebSocket frames a client may send per second, control frames and fragments
    #: included, and in a burst; past them the connection is failed with 4029
    frame_rate: float = 200.0
    frame_burst: int = 1000
    #: largest HTTP request body (413 above it)
    max_body: int = 64 * 1024


class Owner(Protocol):
    """The server that accepted a connection, as the connection sees it."""

    @property
    def options(self) -> WebSocketOptions: ...

    @property
    def extensions(self) -> Sequence[ServerExtensionFactory] | None:
        """What the server offers in the upgrade (permessage-deflate), or None."""
        ...

    @property
    def closing(self) -> bool:
        """The server is shutting down: no new upgrade, no more keep-alive."""
        ...

    def add(self, connection: object) -> None: ...

    def forget(self, connection: object) -> None: ...

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run a connection's background work; kept referenced until done."""
        ...
