"""The web app (hub/static/): `/` is its page, `/static/...` its assets, `/sw.js` its
service worker (served at the root so that its scope is the whole site).

Plain files, no templating: the app is a client of the public API and the WebSocket
protocol like any other (docs/web.md).
"""

from __future__ import annotations

from pathlib import Path

import tornado.web

STATIC_DIR = str(Path(__file__).resolve().parent.parent / "hub" / "static")

# Everything comes from this origin: no CDN, no inline script or style.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",  # fetch and the same-origin WebSocket
    "worker-src 'self'",
    "manifest-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])


class WebFileHandler(tornado.web.StaticFileHandler):
    """A file of the app. Revalidated on every load (ETag), so a new hub version is picked
    up at once: the files are few and small, and there is no build step to add hashes."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        if path == "" or path.endswith(".html"):
            self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            self.set_header("X-Frame-Options", "DENY")
        if path == "sw.js":
            self.set_header("Service-Worker-Allowed", "/")

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(f"{status_code} {self._reason}\n")


WEB_ROUTES = [
    (r"/()", WebFileHandler, {"path": STATIC_DIR, "default_filename": "index.html"}),
    (r"/(sw\.js)", WebFileHandler, {"path": STATIC_DIR}),
    (r"/static/(.+)", WebFileHandler, {"path": STATIC_DIR}),
]
