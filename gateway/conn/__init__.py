"""The connection layer: each WebSocket client's login, liveness, subscribes and frames,
built on the edge, the services and the core."""
