"""The edge: HTTP/1.1 and WebSocket on asyncio transports (httptools, websockets' sans-I/O
protocol), HTTP routes and static files. It knows nothing of sessions or channels."""
