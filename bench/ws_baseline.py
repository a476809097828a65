"""The bare baseline of bench/ws_fanout.py: the least a Tornado server can do for the same
deliveries. Clients subscribe by name (no auth, no seq, no history, no queue); POST /publish
with {"events": [{"channel", "event"}]} builds each frame once and writes it to the
channel's sockets. Prints its port on stdout.
"""

from __future__ import annotations

import asyncio
import json
import socket

import tornado.web
import tornado.websocket

channels: dict[str, set] = {}


class Socket(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:
        self.joined: list[str] = []
        self.user = self.get_query_argument("token", None)  # the user's id, in place of a token

    def on_message(self, message) -> None:
        frame = json.loads(message)
        if frame.get("op") == "subscribe":
            channel = f"user:{self.user}" if frame["channel"] == "user" else frame["channel"]
            channels.setdefault(channel, set()).add(self)
            self.joined.append(channel)
            self.write_message(json.dumps({"type": "subscribed", "channel": frame["channel"], "seq": 0}))

    def on_close(self) -> None:
        for channel in self.joined:
            channels[channel].discard(self)


class Publish(tornado.web.RequestHandler):
    def post(self) -> None:
        for item in json.loads(self.request.body)["events"]:
            frame = json.dumps({"type": "event", "channel": item["channel"], "seq": 0, "event": item["event"]},
                               separators=(",", ":")).encode()
            for conn in channels.get(item["channel"], ()):
                conn.write_message(frame)
        self.set_status(204)


async def main() -> None:
    app = tornado.web.Application([("/ws", Socket), ("/publish", Publish)], websocket_max_message_size=64 * 1024)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    app.listen(port, "127.0.0.1")
    print(port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
