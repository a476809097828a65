"""The delivery sinks of bench/notify.py, as their own process: an SMTP server and a Web
Push service that accept everything and note when each message arrived.

Prints one JSON line with the ports, then serves. `GET /stats` on the push port answers
`{"email": [[t, subject], ...], "push": [t, ...]}` (arrival times from time.time(), so the
load generator on the same machine can compare them with its produce times). Push
payloads are not decrypted: that would cost the sink as much CPU as the hub spends
encrypting, on the same two cores.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import tornado.httpserver
import tornado.web
from aiosmtpd.smtp import SMTP

email_arrivals: list[tuple[float, str]] = []
push_arrivals: list[float] = []


class Handler:
    async def handle_DATA(self, server, session, envelope):
        arrived = time.time()
        subject = ""
        for line in envelope.content.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                subject = line[9:].decode(errors="replace")
                break
            if not line:
                break
        email_arrivals.append((arrived, subject))
        return "250 OK"


class PushHandler(tornado.web.RequestHandler):
    def post(self, _path: str) -> None:
        push_arrivals.append(time.time())
        self.set_status(201)
        self.set_header("Location", "/m/1")


class StatsHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        if self.get_query_argument("summary", None):  # counts and last arrivals only (bench/broadcast.py)
            self.write({"email": len(email_arrivals), "push": len(push_arrivals),
                        "email_last": email_arrivals[-1][0] if email_arrivals else None,
                        "push_last": push_arrivals[-1] if push_arrivals else None})
            return
        self.write({"email": email_arrivals, "push": push_arrivals})


def _socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def main() -> None:
    loop = asyncio.get_running_loop()
    smtp_sock = _socket()
    await loop.create_server(lambda: SMTP(Handler(), hostname="sink", ident="sink"), sock=smtp_sock)
    app = tornado.web.Application([(r"/push/(.*)", PushHandler), (r"/stats", StatsHandler)])
    server = tornado.httpserver.HTTPServer(app)
    push_sock = _socket()
    server.add_sockets([push_sock])
    print(json.dumps({"smtp": smtp_sock.getsockname()[1], "push": push_sock.getsockname()[1]}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
