"""notify-gateway: Redis pub/sub fanned out to authenticated WebSocket clients."""

__version__ = "0.1.0"
