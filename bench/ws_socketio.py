"""python-socketio as bench/ws_fanout.py's third server: what a team would run across
processes, `socketio.AsyncServer` with its Redis manager (`socketio.AsyncRedisManager`) served
by aiohttp. The bench's producer emits from its own process through a write-only manager on
the same Redis channel (python-socketio's way of emitting from outside a server); this server
receives each emit from Redis pub/sub and sends it to the room's sockets.

A client connects to /socket.io/ with `?token=<user id>` (in place of a token, as in the bare
baseline), emits `subscribe` with a channel name ("user" for its own) and an acknowledgement
id, and gets `{"subscribed": channel}` as the acknowledgement.

Usage: `python ws_socketio.py REDIS_URL PUBSUB_CHANNEL`; prints its port on stdout.
"""

from __future__ import annotations

import socket
import sys
from urllib.parse import parse_qs

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=socketio.AsyncRedisManager(sys.argv[1], channel=sys.argv[2]),
                           cors_allowed_origins="*")
users: dict[str, str] = {}


@sio.event
async def connect(sid: str, environ: dict, auth) -> None:
    users[sid] = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]


@sio.event
async def disconnect(sid: str, reason=None) -> None:
    users.pop(sid, None)


@sio.event
async def subscribe(sid: str, channel: str) -> dict:
    """Answered by the event's acknowledgement: an emit back would also go out through Redis to
    every other server (the manager's way), for a reply only this client wants."""
    await sio.enter_room(sid, f"user:{users[sid]}" if channel == "user" else channel)
    return {"subscribed": channel}


def main() -> None:
    app = web.Application()
    sio.attach(app)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print(port, flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
