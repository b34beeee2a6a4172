"""The browser client (``GET /client.js``) and its demo page (``GET /``), from package data.

The files are read once, when the gateway builds its routes, never per request. The demo page
runs under a strict Content-Security-Policy: scripts, styles and WebSocket connections only
from the gateway itself, no inline code, no forms submitted anywhere (the token must never end
up in a URL), no framing.
"""

from __future__ import annotations

from importlib import resources

from gateway.edge.http import Route, asset_route

__all__ = ["DEMO_CSP", "browser_routes"]

DEMO_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

_JS = "text/javascript; charset=utf-8"


def browser_routes() -> dict[str, Route]:
    """Routes (GET and HEAD) serving the client module, the demo page and the page's script
    and style."""
    static = resources.files("gateway") / "edge" / "static"
    # A link to clients/js/notify-client.js (the npm package's file): one file, two ways out.
    client = static / "notify-client.js"
    page_headers = [("Content-Security-Policy", DEMO_CSP), ("Referrer-Policy", "no-referrer")]
    handlers = {
        "/": asset_route(
            (static / "index.html").read_bytes(), "text/html; charset=utf-8", headers=page_headers
        ),
        "/demo.js": asset_route((static / "demo.js").read_bytes(), _JS),
        "/demo.css": asset_route((static / "demo.css").read_bytes(), "text/css; charset=utf-8"),
        # Any site may import the module straight from its gateway.
        "/client.js": asset_route(
            client.read_bytes(), _JS, headers=[("Access-Control-Allow-Origin", "*")]
        ),
    }
    return {path: Route(handler) for path, handler in handlers.items()}
