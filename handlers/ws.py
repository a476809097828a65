"""GET /ws: the WebSocket gateway (CONTRACT §4; docs/realtime.md).

Tornado glue and the frame protocol; subscriptions, replay and fan-out live in
hub/live/gateway.py and hub/live/realtime.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time

import tornado.iostream
import tornado.web
import tornado.websocket

from domain.compact_json import encode
from domain.errors import DomainError, Unauthorized
from handlers import bounded_json
from handlers.base import Wired
from hub.wiring.client_ip import client_ip
from hub.live.gateway import Session
from hub.wiring.metrics import WEBSOCKET_CLOSED, WEBSOCKET_CONNECTIONS
from hub.live.send_queue import SendQueue

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 5.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_MANY = 4429
CLOSE_SLOW = 4008
CLOSE_IDLE = 4408
RECONNECT_HINT_MS = (500, 5000)  # spread the reconnects of a restart
MAX_FRAME_ID_CHARS = 64
MAX_FRAME_ID_INT = 2 ** 53  # what a JavaScript client's number holds exactly
MAX_OP_ECHO_CHARS = 32  # an unknown op is named back only this far
MAX_FEED_NAME_CHARS = 256  # longer names are no feed; an error does not repeat them


def reply_to(frame: dict) -> dict:
    """The fields a reply echoes (CONTRACT §5): the frame's `id` when it is a short string or an
    integer a client can hold; anything else is not echoed (it would be ours to bound)."""
    frame_id = frame.get("id")
    if isinstance(frame_id, str) and len(frame_id) <= MAX_FRAME_ID_CHARS:
        return {"id": frame_id}
    if isinstance(frame_id, int) and not isinstance(frame_id, bool) and abs(frame_id) <= MAX_FRAME_ID_INT:
        return {"id": frame_id}
    return {}


class WebSocketHandler(Wired, tornado.websocket.WebSocketHandler):
    openapi = {"get": {"summary": "WebSocket upgrade (CONTRACT §4): ?token= or a first auth frame", "auth": None}}

    def check_origin(self, origin: str) -> bool:
        # Tokens, not cookies, authenticate: a foreign page cannot ride a user's session.
        return True

    async def get(self, *args, **kwargs) -> None:
        per_ip = self.application.websocket_ips
        if per_ip.get(client_ip(self.request, self.config), 0) >= self.config.ws_max_connections_per_ip:
            raise tornado.web.HTTPError(429, reason="Too many connections from this address")
        await super().get(*args, **kwargs)

    def open(self) -> None:
        self.ip = client_ip(self.request, self.config)
        self.user_id: str | None = None
        self.application.websockets.add(self)
        self.application.websocket_ips[self.ip] = self.application.websocket_ips.get(self.ip, 0) + 1
        WEBSOCKET_CONNECTIONS.inc()
        settings = self.config
        self.session = Session(self.services.realtime, SendQueue(self._write_text, self._too_slow, settings.ws_send_buffer_bytes),
                               order_owner=self.services.orders.owner,
                               anonymous_subscriptions=settings.ws_anonymous_max_subscriptions)
        self._expiry = None
        loop = asyncio.get_running_loop()
        self._auth_deadline = loop.call_later(AUTH_TIMEOUT_S, self._auth_expired)
        # Anonymous connections cost the hub without anyone answerable for them: one that
        # sends nothing (not even a ping) for HUB_WS_ANONYMOUS_IDLE_S is closed.
        self._last_frame = loop.time()
        self._idle_check = loop.call_later(settings.ws_anonymous_idle_s, self._check_idle)
        token = self.get_query_argument("token", None)
        if token is not None:
            self._authenticate(token)

    def _write_text(self, frame: bytes):
        """One text frame. Returns None when the socket took all of it at once (the usual case),
        else the future of its flush. When nothing is waiting in Tornado's buffer, the frame goes
        straight to the socket: Tornado's writer costs a buffer copy, a future, its done callback
        (a loop iteration's work of its own) and an error listener per frame, more than the
        send() itself at fan-out rates. What the socket does not take at once (a full socket
        buffer, an error) goes through the stream, in order behind what was sent, and the
        stream handles it as any write."""
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        stream = conn.stream
        if conn._compressor is not None or type(stream) is not tornado.iostream.IOStream or len(stream._write_buffer):
            return conn._write_frame(True, 0x1, frame)  # compressed, TLS, or behind earlier writes
        size = len(frame)
        head = (bytes((0x81, size)) if size < 126 else
                struct.pack("!BBH", 0x81, 126, size) if size <= 0xFFFF else struct.pack("!BBQ", 0x81, 127, size))
        data = head + frame
        try:
            sent = stream.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the stream's own write meets the error too, and closes
        conn._wire_bytes_out += len(data)
        if sent == len(data):
            return None
        return stream.write(data[sent:])

    def _authenticate(self, token, reply: dict | None = None) -> bool:
        try:
            caller, expires = self.services.access_tokens.verify(str(token))
        except Unauthorized as exc:
            self._close(CLOSE_UNAUTHORIZED, exc.code)
            return False
        current = self.session.caller
        if current is not None and current.id != caller.id:
            self._error("already_authenticated", "This connection belongs to another user; open a new one.", reply)
            return False
        if current is None:
            users = self.application.websocket_users
            if users.get(caller.id, 0) >= self.config.ws_max_connections_per_user:
                self._close(CLOSE_TOO_MANY, "too_many_connections")
                return False
            users[caller.id] = users.get(caller.id, 0) + 1
            self.user_id = caller.id
        self.session.caller = caller
        # A fresh token on an open connection extends it (no reconnect needed).
        if self._expiry is not None:
            self._expiry.cancel()
        remaining = expires - time.time()  # `exp`, seconds since the epoch
        self._expiry = asyncio.get_running_loop().call_later(max(0.0, remaining), self._close, CLOSE_UNAUTHORIZED,
                                                             "token_expired")
        return True

    def _auth_expired(self) -> None:
        if self.session.caller is None and not self.session.names:
            self._close(CLOSE_UNAUTHORIZED, "authentication_timeout")

    def _check_idle(self) -> None:
        if self.session.caller is not None:
            return  # signed in: the token's expiry bounds the connection instead
        idle_s = self.config.ws_anonymous_idle_s
        left = self._last_frame + idle_s - asyncio.get_running_loop().time()
        if left <= 0:
            self._close(CLOSE_IDLE, "idle_timeout")
        else:
            self._idle_check = asyncio.get_running_loop().call_later(left, self._check_idle)

    def _too_slow(self) -> None:
        self._close(CLOSE_SLOW, "slow_consumer")

    def _close(self, code: int, reason: str) -> None:
        WEBSOCKET_CLOSED.labels(reason).inc()
        self.close(code, reason)

    async def on_message(self, message) -> None:
        # Tornado hands over the next frame only after this returns: a connection's frames are
        # handled in order.
        self._last_frame = asyncio.get_running_loop().time()
        if isinstance(message, bytes):
            return self._error("binary_not_supported", "Send JSON text frames.")
        try:
            frame = bounded_json.loads(message)
        except bounded_json.MalformedJson:
            return self._error("malformed_json", "Frames are JSON objects.")
        except bounded_json.NumbersOutOfRange as exc:
            return self._error("invalid_frame", f"Numbers out of range: {', '.join(exc.fields)}.")
        if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
            return self._error("invalid_frame", "A frame is a JSON object with an 'op'.")
        op, reply = frame["op"], reply_to(frame)
        name = frame.get("channel") if op in ("subscribe", "unsubscribe") else None  # a feed's name
        if isinstance(name, str) and len(name) <= MAX_FEED_NAME_CHARS:
            about = {"channel": name}  # an error about a feed names it
        else:
            about = {}
        try:
            if op == "ping":
                self.session.write({"type": "pong", **reply})
            elif op == "auth":
                if self._authenticate(frame.get("token"), reply):
                    self.session.write({"type": "authenticated", "user_id": self.session.caller.id, **reply})
            elif op == "subscribe":
                await self.session.subscribe(name, frame.get("since"), reply)
            elif op == "unsubscribe":
                await self.session.unsubscribe(name)
                self.session.write({"type": "unsubscribed", "channel": name, **reply})
            elif op == "ack":
                await self._ack(frame.get("id"), reply)
            else:
                self._error("unknown_op", f"Unknown op {op[:MAX_OP_ECHO_CHARS]!r}.", reply)
        except DomainError as exc:
            self._error(exc.code, exc.message, {**about, **reply})
        except Exception:  # ours (Redis or the store unreachable), not the client's
            log.exception("websocket frame failed", extra={"op": op[:MAX_OP_ECHO_CHARS]})
            self._error("unavailable", "The hub could not do that just now; try again shortly.", {**about, **reply})

    async def _ack(self, notification_id, reply: dict) -> None:
        caller = self.session.caller
        if caller is None:
            return self._error("forbidden", "Authenticate first to acknowledge notifications.", reply)
        if not isinstance(notification_id, str) or not await self.services.notifier.acknowledge(caller.id, notification_id):
            return self._error("not_found", "No such notification of yours.", reply)
        self.session.write({"type": "acked", **reply})

    def _error(self, code: str, message: str, extra: dict | None = None) -> None:
        self.session.write({"type": "error", "code": code, "message": message, **(extra or {})})

    def going_away(self) -> None:
        """Shutdown: a hint when to come back (jittered, so clients do not return at once), then 1001."""
        after = random.randint(*RECONNECT_HINT_MS)
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.write_message(encode({"type": "reconnect", "after_ms": after}))
        self._close(1001, "going_away")

    def on_close(self) -> None:
        app = self.application
        app.websockets.discard(self)
        WEBSOCKET_CONNECTIONS.dec()
        for counts, key in ((app.websocket_ips, self.ip), (app.websocket_users, self.user_id)):
            if key is not None:
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]
        self._auth_deadline.cancel()
        self._idle_check.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        asyncio.ensure_future(self.session.close())
