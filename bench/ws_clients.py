"""The WebSocket side of bench/ws_fanout.py, in a process of its own: N clients, each
subscribed to one product channel and (with a token) its own user channel.

Reads a JSON spec on stdin's first line: {"url", "clients", "products", "tokens", "protocol"}; prints
"ready" once every client is subscribed. Then each line "report" on stdin prints a JSON line
with what arrived since the previous report: frames, and produce-to-receive latency
quantiles read from the `"t":<epoch seconds>` the producer put in each event. "quit" ends.

`"protocol": "socketio"` speaks Socket.IO (v5 over Engine.IO v4, WebSocket transport only) to
bench/ws_socketio.py on the same socket library: the Engine.IO open packet, `40` to join the
default namespace, `42["subscribe", channel]`, a pong (`3`) for every ping (`2`); an event
arrives as `42["event", {...}]`. Otherwise the hub's protocol (and the baseline's).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from tornado.websocket import websocket_connect

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


async def client(spec: dict, i: int, stats: Stats, ready: asyncio.Queue) -> None:
    token = spec["tokens"][i] if spec["tokens"] else None
    socketio = spec.get("protocol") == "socketio"
    query = "?EIO=4&transport=websocket" if socketio else ""
    if token:
        query += f"{'&' if query else '?'}token={token}"
    conn = await websocket_connect(spec["url"] + query, max_message_size=1 << 20)
    channels = [f"product:p{i % spec['products']}"] + (["user"] if token else [])
    if socketio:
        await conn.read_message()  # Engine.IO open: 0{"sid":…}
        await conn.write_message("40")
        await conn.read_message()  # namespace joined: 40{"sid":…}
    for channel in channels:
        await conn.write_message(f'42["subscribe",{json.dumps(channel)}]' if socketio
                                 else json.dumps({"op": "subscribe", "channel": channel}))
    pending = len(channels)
    while True:
        frame = await conn.read_message()
        if frame is None:
            stats.closed += 1
            return
        if socketio and frame == "2":
            conn.write_message("3")
            continue
        if pending:
            if '"subscribed"' in frame:
                pending -= 1
                if not pending:
                    await ready.put(i)
            continue
        # The producer's timestamp, without parsing the whole frame (the client must stay cheaper than the hub).
        at = frame.rfind('"t":')
        if at >= 0:
            end = at + 4
            while end < len(frame) and frame[end] in "0123456789.":
                end += 1
            stats.latencies.append(time.time() - float(frame[at + 4:end]))
        stats.frames += 1


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 << 20)  # the spec carries every client's token
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = json.loads(await reader.readline())
    stats, ready = Stats(), asyncio.Queue()
    tasks = []
    for start in range(0, spec["clients"], CONNECT_AT_ONCE):
        batch = range(start, min(start + CONNECT_AT_ONCE, spec["clients"]))
        tasks += [asyncio.create_task(client(spec, i, stats, ready)) for i in batch]
        for _ in batch:
            await ready.get()
    print("ready", flush=True)
    while (line := (await reader.readline()).decode().strip()) not in ("", "quit"):
        if line == "report":
            print(json.dumps(stats.report()), flush=True)
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
