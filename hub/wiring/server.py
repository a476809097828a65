"""The HTTP server around the application, and the orderly shutdown.

On SIGTERM or Ctrl-C: stop accepting connections, let in-flight requests finish, close
the remaining connections, then stop consumers (committing offsets), the producer and
the connections, and the embedded broker last. All of it within SHUTDOWN_S.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from config.settings import Settings
from hub.wiring.app import make_app
from hub.wiring.client_ip import is_trusted_proxy
from hub.wiring.demo import banner as demo_banner
from hub.wiring.lifecycle import Hub
from hub.wiring.metrics import CONNECTIONS_REFUSED

log = logging.getLogger(__name__)

SHUTDOWN_S = 10
DRAIN_S = 4  # of which in-flight requests may take this long


class CappedHTTPServer(HTTPServer):
    """Refuses a connection beyond HUB_MAX_CONNECTIONS, or beyond HUB_MAX_CONNECTIONS_PER_IP
    from one peer address (a trusted proxy's connections carry many clients: not capped per
    address). Closing at once costs the hub nothing; the client sees the connection closed and may retry.
    WebSocket connections leave this count once upgraded; the gateway caps them itself."""

    def configure_caps(self, settings: Settings) -> None:
        self.settings = settings
        self.per_ip: dict[str, int] = {}

    def handle_stream(self, stream, address) -> None:
        ip = address[0] if isinstance(address, tuple) else ""
        settings = self.settings
        reason = None
        if len(self._connections) >= settings.max_connections:
            reason = "max_connections"
        elif self.per_ip.get(ip, 0) >= settings.max_connections_per_ip and not is_trusted_proxy(ip, settings):
            reason = "max_connections_per_ip"
        if reason is not None:
            CONNECTIONS_REFUSED.labels(reason).inc()
            stream.close()
            return
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn) -> None:
        super().on_close(server_conn)
        address = server_conn.context.address
        ip = address[0] if isinstance(address, tuple) else ""
        self.per_ip[ip] -= 1
        if not self.per_ip[ip]:
            del self.per_ip[ip]


class HubServer:
    def __init__(self, settings: Settings, mongo_client=None) -> None:
        self.settings = settings
        self.hub = Hub(settings, mongo_client)
        self.port: int | None = None

    async def start(self) -> None:
        try:
            await self.hub.start()
        except BaseException:
            await self.hub.stop()
            raise
        self.app = make_app(self.hub)
        # Bodies are streamed and size-checked by the handlers (413); this only bounds
        # what Tornado agrees to read at all.
        # body_timeout: a body trickled in slowly (to hold a connection and a handler) is cut off.
        self.http = CappedHTTPServer(self.app, max_body_size=64 * self.settings.max_body_bytes, idle_connection_timeout=60,
                                     body_timeout=self.settings.body_timeout_s)
        self.http.configure_caps(self.settings)
        sockets = bind_sockets(self.settings.port, self.settings.host)
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        log.info("hub listening", extra={"host": self.settings.host, "port": self.port, "env": self.settings.env})

    async def stop(self) -> None:
        self.http.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_S
        while self.app.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for socket in list(self.app.websockets):
            socket.going_away()  # clients reconnect to another process
        try:
            await asyncio.wait_for(self.http.close_all_connections(), timeout=1)
        except asyncio.TimeoutError:
            log.warning("connections still open at shutdown")
        await self.hub.stop()
        log.info("hub stopped")


async def serve(settings: Settings) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed before start-up so that a SIGTERM while connecting still stops in order.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    server = HubServer(settings)
    await server.start()
    if server.hub.demo_accounts and settings.env == "development":
        print(demo_banner(server.hub.demo_accounts, f"http://{settings.host}:{server.port}"), file=sys.stderr, flush=True)
    await stopping.wait()
    log.info("shutting down")
    try:
        await asyncio.wait_for(server.stop(), timeout=SHUTDOWN_S - 1)
    except asyncio.TimeoutError:
        log.error("shutdown took too long; exiting anyway")
        await server.hub.stop()
