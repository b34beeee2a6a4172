"""Whether a plaintext Redis answers at an address: one PING, no client library.

Used to find a Redis before starting an embedded one, and to tell a TLS handshake that
timed out against a plaintext port (Redis waits for a line end the TLS hello never sends)
from a slow network.
"""

from __future__ import annotations

import asyncio

from gateway.broker.diagnose import Diagnosis, tls_to_plaintext_port
from notify_wire.redis_config import RedisConfig

__all__ = ["redis_answers", "refine"]


async def redis_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something speaking RESP answers on ``host:port``."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"PING\r\n")
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    # +PONG, or -NOAUTH from a Redis with a password: either way Redis is there.
    return line[:1] in (b"+", b"-")


async def refine(diagnosis: Diagnosis, config: RedisConfig) -> Diagnosis:
    """``diagnosis``, or ``tls_to_plaintext_port`` for a TLS timeout where plaintext answers."""
    if diagnosis.cause != "timeout" or not config.tls or config.sentinels:
        return diagnosis
    if await redis_answers(config.host, config.port, timeout_s=config.connect_timeout_s):
        return tls_to_plaintext_port(
            config, "the TLS handshake timed out; PING in plaintext got an answer"
        )
    return diagnosis
