"""GET /ws: the WebSocket endpoint (CONTRACT §4).

This first version carries the `user` channel (the caller's live notifications), with
token auth in the query or a first `auth` frame, `ping`, and error frames for anything
else; the realtime gateway adds the other channels, history and acks.
"""

from __future__ import annotations

import asyncio
import json

import tornado.websocket

from domain.errors import Unauthorized
from hub.metrics import WEBSOCKET_CONNECTIONS

AUTH_TIMEOUT_S = 5.0
CLOSE_UNAUTHORIZED = 4401


class WebSocketHandler(tornado.websocket.WebSocketHandler):
    openapi = {"get": {"summary": "WebSocket upgrade (CONTRACT §4): ?token= or a first auth frame", "auth": None}}

    @property
    def hub(self):
        return self.application.settings["hub"]

    def check_origin(self, origin: str) -> bool:
        # Tokens, not cookies, authenticate: a foreign page cannot ride a user's session.
        return True

    def open(self) -> None:
        self.application.websockets.add(self)
        WEBSOCKET_CONNECTIONS.inc()
        self.caller = None
        self.channels: set[str] = set()
        token = self.get_query_argument("token", None)
        if token is not None:
            self._authenticate(token)
        self._auth_deadline = asyncio.get_running_loop().call_later(AUTH_TIMEOUT_S, self._auth_expired)

    def _authenticate(self, token) -> bool:
        try:
            self.caller, _expires = self.hub.access_tokens.verify(str(token))
        except Unauthorized as exc:
            self.close(CLOSE_UNAUTHORIZED, exc.code)
            return False
        return True

    def _auth_expired(self) -> None:
        if self.caller is None and not self.channels:
            self.close(CLOSE_UNAUTHORIZED, "authentication_timeout")

    async def on_message(self, message) -> None:
        if isinstance(message, bytes):
            return self._error("binary_not_supported", "Send JSON text frames.")
        try:
            frame = json.loads(message)
        except ValueError:
            return self._error("malformed_json", "Frames are JSON objects.")
        if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
            return self._error("invalid_frame", "A frame is a JSON object with an 'op'.")
        op = frame["op"]
        if op == "ping":
            self._write({"type": "pong"})
        elif op == "auth":
            if self._authenticate(frame.get("token")):
                self._write({"type": "authenticated", "user_id": self.caller.id})
        elif op == "subscribe":
            await self._subscribe(frame.get("channel"))
        elif op == "unsubscribe":
            await self._unsubscribe(frame.get("channel"))
        else:
            self._error("unknown_op", f"Unknown op {op!r}.")

    async def _subscribe(self, channel) -> None:
        if channel != "user":
            return self._error("unknown_channel", "This hub version serves the 'user' channel.")
        if self.caller is None or self.caller.is_service:
            return self._error("forbidden", "Authenticate first to join 'user'.")
        key = f"user:{self.caller.id}"
        if key not in self.channels:
            self.channels.add(key)
            await self.hub.realtime.join(key, self)
        seq = await self.hub.realtime.current_seq(key)
        self._write({"type": "subscribed", "channel": "user", "seq": seq, "recovered": False})

    async def _unsubscribe(self, channel) -> None:
        if channel == "user" and self.caller is not None:
            key = f"user:{self.caller.id}"
            self.channels.discard(key)
            await self.hub.realtime.leave(key, self)
        self._write({"type": "unsubscribed", "channel": channel})

    def deliver(self, frame: str) -> None:
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.write_message(frame)

    def _write(self, frame: dict) -> None:
        self.deliver(json.dumps(frame, separators=(",", ":")))

    def _error(self, code: str, message: str) -> None:
        self._write({"type": "error", "code": code, "message": message})

    def on_close(self) -> None:
        self.application.websockets.discard(self)
        WEBSOCKET_CONNECTIONS.dec()
        self._auth_deadline.cancel()
        for key in self.channels:
            asyncio.ensure_future(self.hub.realtime.leave(key, self))
        self.channels.clear()
