"""Realtime fan-out: events produced on Kafka → frames at N WebSocket clients, against the
bare baseline (bench/ws_baseline.py) doing the same deliveries with the least possible work,
and python-socketio with its Redis manager (bench/ws_socketio.py) broadcasting the same events.

Processes: the bundled Kafka broker, Redis (REDIS_URL, or the local server on 6379 when
reachable, else the hub's embedded stand-in, and then no python-socketio run: its manager needs
a Redis server), the hub (`python run.py`), the baseline server, the python-socketio server,
the clients (bench/ws_clients.py, a process of their own) and this producer. The producer
sends the hub its events on Kafka, the baseline its events over HTTP, and python-socketio its
events through a write-only `AsyncRedisManager` (one Redis PUBLISH per event, as an outside
process emits to python-socketio's rooms).

Each client joins one of `--products` product channels and its own user channel. At each
target rate (deliveries/s), `inventory.changed` events on the product channels (each
reaching clients/products sockets) make up all but `--user-share` of the deliveries; the
rest are `order.processing` events on the user channels (one socket each). Reported per rate:
deliveries/s received, produce-to-receive latency p50/p99, and for each client count the
server's memory per idle connection (RSS growth ÷ connections); at the end a table of hub and
the other servers side by side, and the best rates (delivered in full; and with p99 ≤ 100 ms)
with their ratio to the baseline's.

Usage: `.venv/bin/python bench/ws_fanout.py [--clients 1000,5000] [--rates 5000,10000,20000,40000] [--seconds 5]
[--servers hub,baseline,socketio]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import socketio
from aiokafka import AIOKafkaProducer
from tornado.httpclient import AsyncHTTPClient

from harness import ROOT, cpu_seconds, free_port, start_hub

sys.path.insert(0, str(ROOT))
from domain.events import cloud_event  # noqa: E402
from domain.tokens import AccessTokens  # noqa: E402
from hub.adapters.embedded_broker import EmbeddedBroker  # noqa: E402
from hub.adapters.event_signing import EventSigner  # noqa: E402

JWT_SECRET = "bench-jwt-secret-0123456789abcdef0123456789"
TICK_S = 0.01


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def local_redis() -> str | None:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return "redis://127.0.0.1:6379/13"
    except OSError:
        return None


class Clients:
    """The client process: connect, wait until subscribed, then collect reports."""

    def __init__(self, url: str, count: int, products: int, tokens: list[str], protocol: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "ws_clients.py")], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        spec = {"url": url, "clients": count, "products": products, "tokens": tokens, "protocol": protocol}
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("clients did not connect")

    def report(self) -> dict:
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(30)


def inventory_event(product: int, now: float) -> dict:
    data = {"product_id": f"p{product}", "available": 100, "previous": 101, "low_stock_threshold": 0,
            "reason": "order", "price": "1.00", "t": now}
    return cloud_event("inventory.changed", "/bench", data)


def order_event(user: int, now: float, source: str) -> dict:
    data = {"order_id": f"o{user}", "user_id": f"u{user}", "status": "processing", "t": now}
    return cloud_event("order.processing", source, data, subject=f"u{user}")


class HubTarget:
    name = "hub"
    protocol = "hub"

    def __init__(self, bootstrap: str, redis_url: str | None, fetch_wait_ms: int) -> None:
        self.prefix = f"wsbench{uuid.uuid4().hex[:6]}."
        self.port = free_port()
        redis = {"REDIS_URL": redis_url, "HUB_REDIS_PREFIX": self.prefix} if redis_url else {}
        self.proc = start_hub(self.port, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC_PREFIX=self.prefix,
                              HUB_KAFKA_FETCH_MAX_WAIT_MS=str(fetch_wait_ms),
                              JWT_SECRET=JWT_SECRET, HUB_WS_MAX_CONNECTIONS_PER_IP="1000000", **redis)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.bootstrap = bootstrap
        # Order events on user channels are the hub's own announcements (what its outbox relay
        # publishes): the hub's source, signed like the hub signs them.
        self.source = "/hub"
        self.signer = EventSigner(JWT_SECRET)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=2)
        await self.producer.start()

    def tokens(self, count: int) -> list[str]:
        issuer, now = AccessTokens(JWT_SECRET, 3600), datetime.now(timezone.utc)
        return [issuer.issue({"_id": f"u{i}"}, now) for i in range(count)]

    async def send(self, product_events: list[int], user_events: list[int]) -> None:
        now = time.time()
        for p in product_events:
            await self.producer.send(f"{self.prefix}inventory", json.dumps(inventory_event(p, now)).encode(),
                                     key=f"p{p}".encode())
        for u in user_events:
            event = json.dumps(order_event(u, now, self.source)).encode()
            await self.producer.send(f"{self.prefix}orders", event, key=f"o{u}".encode(),
                                     headers=self.signer.headers(event))

    async def stop(self) -> None:
        if hasattr(self, "producer"):
            await self.producer.stop()
        self.proc.terminate()
        self.proc.wait(15)


class BaselineTarget:
    name = "baseline"
    protocol = "hub"

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "ws_baseline.py")], stdout=subprocess.PIPE,
                                     text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> None:
        self.http = AsyncHTTPClient(force_instance=True)

    def tokens(self, count: int) -> list[str]:
        return [f"u{i}" for i in range(count)]

    async def send(self, product_events: list[int], user_events: list[int]) -> None:
        now = time.time()
        events = [{"channel": f"product:p{p}", "event": {"type": "inventory.changed", "data": {"product_id": f"p{p}", "t": now}}}
                  for p in product_events]
        events += [{"channel": f"user:u{u}", "event": {"type": "order.processing", "data": {"user_id": f"u{u}", "t": now}}}
                   for u in user_events]
        await self.http.fetch(f"http://127.0.0.1:{self.port}/publish", method="POST", body=json.dumps({"events": events}))

    async def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


class SocketIOTarget:
    """python-socketio behind its Redis manager; this process emits as an outside process does."""
    name = "socketio"
    protocol = "socketio"

    def __init__(self, redis_url: str) -> None:
        self.channel = f"wsbench-socketio-{uuid.uuid4().hex[:6]}"
        self.redis_url = redis_url
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "ws_socketio.py"), redis_url, self.channel],
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"ws://127.0.0.1:{self.port}/socket.io/"
        deadline = time.time() + 30
        while True:  # the port is printed before aiohttp listens
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("python-socketio did not start")
                time.sleep(0.1)

    async def start(self) -> None:
        self.emitter = socketio.AsyncRedisManager(self.redis_url, channel=self.channel, write_only=True)

    def tokens(self, count: int) -> list[str]:
        return [f"u{i}" for i in range(count)]

    async def send(self, product_events: list[int], user_events: list[int]) -> None:
        now = time.time()
        # One after the other: emits at once open a connection each, past redis-py's pool limit.
        for p in product_events:
            await self.emitter.emit("event", {"channel": f"product:p{p}", "event": inventory_event(p, now)},
                                    room=f"product:p{p}")
        for u in user_events:
            await self.emitter.emit("event", {"channel": f"user:u{u}", "event": order_event(u, now, "/bench")},
                                    room=f"user:u{u}")

    async def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


async def drive(target, clients: Clients, count: int, products: int, rate: int, seconds: float, user_share: float) -> dict:
    """Produces at `rate` deliveries/s for `seconds`, then waits for the stragglers."""
    fan_out = count / products
    product_per_tick = rate * (1 - user_share) / fan_out * TICK_S
    user_per_tick = rate * user_share * TICK_S
    owed_p = owed_u = 0.0
    next_p = next_u = 0
    clients.report()  # start a fresh window
    cpu_before, clients_before = cpu_seconds(target.proc.pid), cpu_seconds(clients.proc.pid)
    loop = asyncio.get_running_loop()
    start = loop.time()
    ticks = int(seconds / TICK_S)
    for tick in range(ticks):
        owed_p += product_per_tick
        owed_u += user_per_tick
        batch_p = [(next_p + k) % products for k in range(int(owed_p))]
        batch_u = [(next_u + k) % count for k in range(int(owed_u))]
        next_p, next_u = next_p + len(batch_p), next_u + len(batch_u)
        owed_p -= len(batch_p)
        owed_u -= len(batch_u)
        await target.send(batch_p, batch_u)
        await asyncio.sleep(max(0.0, start + (tick + 1) * TICK_S - loop.time()))
    expected = next_p * fan_out + next_u
    await asyncio.sleep(2.0)
    result = clients.report()
    frames = max(1, result["frames"])
    cpu_us = (cpu_seconds(target.proc.pid) - cpu_before) * 1e6 / frames
    clients_us = (cpu_seconds(clients.proc.pid) - clients_before) * 1e6 / frames
    result.update(expected=int(expected), rate=result["frames"] / seconds, cpu_us=cpu_us, clients_us=clients_us)
    return result


async def run(target, args) -> dict:
    try:
        await target.start()
        return await measure(target, args)
    finally:
        await target.stop()


async def measure(target, args) -> dict:
    """{(clients, rate): report} of every run."""
    results = {}
    for count in args.clients:
        before = rss_kib(target.proc.pid)
        clients = Clients(target.url, count, args.products, target.tokens(count), target.protocol)
        await asyncio.sleep(2)
        per_conn = (rss_kib(target.proc.pid) - before) / count
        print(f"{target.name:<8} clients={count:<5} memory per idle connection {per_conn:6.1f} KiB")
        # Warm-up, not reported: the consumer group joins, caches fill.
        await drive(target, clients, count, args.products, 1000, 3, args.user_share)
        for rate in args.rates:
            r = await drive(target, clients, count, args.products, rate, args.seconds, args.user_share)
            print(f"{target.name:<8} clients={count:<5} target {rate:6d}/s   received {r['frames']:7d} of {r['expected']:7d}"
                  f"   {r['rate']:8.0f} deliveries/s   p50 {r['p50_ms']:7.1f} ms   p99 {r['p99_ms']:7.1f} ms"
                  f"   closed {r['closed']}   server CPU {r['cpu_us']:.1f} µs/delivery   clients {r['clients_us']:.1f} µs")
            results[count, rate] = r
        clients.stop()
    return results


def best_rate(results: dict, count: int, p99_ms: float | None = None) -> float:
    """The highest rate delivered in full (≥ 99 %), with p99 within `p99_ms` when given."""
    return max((r["rate"] for (c, _), r in results.items() if c == count and r["frames"] >= 0.99 * r["expected"]
                and (p99_ms is None or r["p99_ms"] <= p99_ms)), default=0.0)


def summary(results: dict[str, dict], args) -> None:
    """One row per (clients, rate), the servers side by side; then each one's best rates against the baseline's."""
    names = list(results)
    columns = " | ".join(f"{n} delivered/s | {n} p50 | {n} p99 | {n} CPU/delivery" for n in names)
    print(f"\n| clients | target/s | {columns} |")
    print("|---|---|" + "---|---|---|---|" * len(names))
    cell = lambda r: (f"{r['rate']:,.0f}{'' if r['frames'] >= 0.99 * r['expected'] else ' (partial)'} | "
                      f"{r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['cpu_us']:.1f} µs") if r else "— | — | — | —"
    for count in args.clients:
        for rate in args.rates:
            print(f"| {count:,} | {rate:,} | " + " | ".join(cell(results[n].get((count, rate))) for n in names) + " |")
    for count in args.clients:
        for label, p99 in (("in full", None), ("with p99 ≤ 100 ms", 100.0)):
            best = {n: best_rate(results[n], count, p99) for n in names}
            base = best.get("baseline", 0.0)
            print(f"clients={count}: best rate {label}: " + ", ".join(
                f"{n} {b:.0f}/s" + (f" (ratio to baseline {b / base:.2f})" if n != "baseline" and base else "")
                for n, b in best.items()))


async def main(args) -> None:
    broker = EmbeddedBroker()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or await broker.start()
    redis_url = local_redis()
    servers = [s for s in args.servers if s != "socketio" or redis_url]
    print(f"redis: {redis_url or 'embedded stand-in (no python-socketio run)'}; clients {args.clients}; "
          f"products {args.products}; user share {args.user_share:.0%}; servers {', '.join(servers)}")
    targets = {"hub": lambda: HubTarget(bootstrap, redis_url, args.fetch_wait_ms), "baseline": BaselineTarget,
               "socketio": lambda: SocketIOTarget(redis_url)}
    results = {}
    try:
        for name in servers:
            results[name] = await run(targets[name](), args)
    finally:
        await broker.stop()
    summary(results, args)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000])
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[5000, 10000, 20000, 40000])
    parser.add_argument("--products", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--servers", type=lambda s: s.split(","), default=["hub", "baseline", "socketio"],
                        help="which of hub, baseline, socketio to run, in this order")
    parser.add_argument("--user-share", type=float, default=0.02)
    parser.add_argument("--fetch-wait-ms", type=int, default=20,
                        help="the hub's HUB_KAFKA_FETCH_MAX_WAIT_MS (the bundled broker's default)")
    asyncio.run(main(parser.parse_args()))
