"""The lifecycle shared by the tests' HTTP peers (Stripe, Twilio, a push service): a Tornado
server on a free local port, served on the running loop."""

from __future__ import annotations

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application


class LocalHttpPeer:
    port: int | None = None
    _server: HTTPServer | None = None

    def _serve(self, routes: list) -> str:
        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server = HTTPServer(Application(routes))
        self._server.add_sockets(sockets)
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
