"""The WebSocket side of bench/ws_fanout.py, in a process of its own: N clients, each
subscribed to one product channel and (with a token) its own user channel.

Reads a JSON spec on stdin's first line: {"url", "clients", "products", "tokens", "protocol"}; prints
"ready" once every client is subscribed. Then each line "report" on stdin prints a JSON line
with what arrived since the previous report: frames, and produce-to-receive latency
quantiles read from the `"t":<epoch seconds>` the producer put in each event. "quit" ends.

`"protocol": "socketio"` speaks Socket.IO (v5 over Engine.IO v4, WebSocket transport only) to
bench/ws_socketio.py over the same WebSocket client: the Engine.IO open packet, `40` to join the
default namespace, `42<ack id>["subscribe", channel]` (acknowledged), a pong (`3`) for every ping (`2`); an event
arrives as `42["event", {...}]`. Otherwise the hub's protocol (and the baseline's).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import struct
import sys
import time
from urllib.parse import urlsplit

CONNECT_AT_ONCE = 100


class Stats:
    def __init__(self) -> None:
        self.frames = 0
        self.latencies: list[float] = []
        self.closed = 0

    def report(self) -> dict:
        lat = sorted(self.latencies)
        q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
        out = {"frames": self.frames, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
               "max_ms": (lat[-1] * 1000 if lat else 0.0), "closed": self.closed}
        self.frames, self.latencies = 0, []
        return out


class Connection(asyncio.Protocol):
    """A WebSocket client with as little work per frame as can be (RFC 6455): the load
    generator shares the machine's two cores with the server it measures, so what it spends
    on a frame is taken from the server. One read hands it every frame that arrived; each
    live frame costs a search for `"t":` and a float. (Tornado's client took several futures
    and coroutine steps per frame, about half a core at 10,000 frames/s.)"""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buffer = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.setup: asyncio.Queue | None = asyncio.Queue()  # frames before the client is subscribed
        self.socketio = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.stats.closed += 1
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(ConnectionError(buffer[:end].decode(errors="replace")))
                return
            self.upgraded.set_result(None)
            buffer = buffer[end + 4:]
        at, size = 0, len(buffer)
        while size - at >= 2:
            opcode, length = buffer[at] & 0x0F, buffer[at + 1] & 0x7F  # a server's frames are not masked
            head = 2
            if length == 126:
                if size - at < 4:
                    break
                length, head = struct.unpack_from("!H", buffer, at + 2)[0], 4
            elif length == 127:
                if size - at < 10:
                    break
                length, head = struct.unpack_from("!Q", buffer, at + 2)[0], 10
            if size - at < head + length:
                break
            payload = buffer[at + head:at + head + length]
            at += head + length
            if opcode == 0x1:
                self.on_text(payload)
            elif opcode == 0x9:
                self.send(payload, 0xA)
            elif opcode == 0x8:
                self.transport.close()
        self.buffer = buffer[at:]

    def on_text(self, payload: bytes) -> None:
        if self.socketio and payload == b"2":
            self.send(b"3")  # Engine.IO ping
        elif self.setup is not None:
            self.setup.put_nowait(payload)
        else:
            at = payload.rfind(b'"t":')  # the producer's timestamp, without parsing the frame
            if at >= 0:
                end = at + 4
                while end < len(payload) and payload[end] in b"0123456789.":
                    end += 1
                self.stats.latencies.append(time.time() - float(payload[at + 4:end]))
            self.stats.frames += 1

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        """A client's frame: masked (RFC 6455 §5.3); only short control frames go this way."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        length = len(payload)
        head = (struct.pack("!BB", 0x80 | opcode, 0x80 | length) if length < 126
                else struct.pack("!BBH", 0x80 | opcode, 0xFE, length))
        self.transport.write(head + mask + masked)


async def client(spec: dict, i: int, stats: Stats) -> Connection:
    token = spec["tokens"][i] if spec["tokens"] else None
    socketio = spec.get("protocol") == "socketio"
    url = urlsplit(spec["url"])
    query = "?EIO=4&transport=websocket" if socketio else ""
    if token:
        query += f"{'&' if query else '?'}token={token}"
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(stats), url.hostname, url.port)
    conn.socketio = socketio
    key = base64.b64encode(os.urandom(16)).decode()
    conn.transport.write(f"GET {url.path}{query} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    await conn.upgraded
    channels = [f"product:p{i % spec['products']}"] + (["user"] if token else [])
    if socketio:
        await conn.setup.get()  # Engine.IO open: 0{"sid":…}
        conn.send(b"40")
        await conn.setup.get()  # namespace joined: 40{"sid":…}
    for n, channel in enumerate(channels):  # Socket.IO: with an ack id, answered 43<id>[{"subscribed": …}]
        conn.send((f'42{n}["subscribe",{json.dumps(channel)}]' if socketio
                   else json.dumps({"op": "subscribe", "channel": channel})).encode())
    pending = len(channels)
    while pending:
        if b'"subscribed"' in await conn.setup.get():
            pending -= 1
    conn.setup = None
    return conn


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 << 20)  # the spec carries every client's token
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = json.loads(await reader.readline())
    stats = Stats()
    connections = []
    for start in range(0, spec["clients"], CONNECT_AT_ONCE):
        batch = range(start, min(start + CONNECT_AT_ONCE, spec["clients"]))
        connections += await asyncio.gather(*(client(spec, i, stats) for i in batch))
    print("ready", flush=True)
    while (line := (await reader.readline()).decode().strip()) not in ("", "quit"):
        if line == "report":
            print(json.dumps(stats.report()), flush=True)
    for conn in connections:
        conn.transport.close()


if __name__ == "__main__":
    asyncio.run(main())
