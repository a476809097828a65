"""The notification engine end to end: CloudEvents produced on Kafka → notifications
delivered at a local SMTP sink, a local Web Push sink and live WebSockets.

Processes: the bundled Kafka broker, the hub (`python run.py`), the sinks
(bench/notify_sinks.py), and this load generator, all on this machine.

Every user has a push subscription, email on, and preferences that make the policy do
its work without holding anything back: a do-not-disturb window that is evaluated but
does not cover the run, and frequency caps high enough for the load.

Scenarios:
1. throughput: `-n` `notification.requested` events (email + push + websocket) produced
   as fast as Kafka takes them; notifications/s = n ÷ (last delivery − first produce),
   and produce-to-email latency percentiles;
2. live latency: events for the websocket channel only at `--rate` events/s for
   `--seconds`, every user connected; produce-to-frame latency percentiles;
3. `--recipients N`: N notifications (email + push + websocket) spread over the users,
   reported as the time to deliver them all (the "600,000 recipients" question).

Usage: `.venv/bin/python bench/notify.py [-n 20000] [--users 200] [--rate 1000] [--seconds 10] [--recipients 0]`
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import websocket_connect

from harness import ROOT, Client, free_port, start_hub

sys.path.insert(0, str(ROOT))
from domain.events import cloud_event  # noqa: E402
from hub.adapters.embedded_broker import EmbeddedBroker  # noqa: E402

SERVICE_KEY = "bench-service-key-0123456789"
PREFIX = "bench."


def _subscription_keys() -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return {"p256dh": b64(public), "auth": b64(os.urandom(16))}


def _quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49] * 1000:7.1f} ms   p99 {q[98] * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms"


class Bench:
    def __init__(self, args) -> None:
        self.args = args

    async def setup(self) -> None:
        self.broker = EmbeddedBroker()
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or await self.broker.start()
        self.sinks = subprocess.Popen([sys.executable, str(ROOT / "bench" / "notify_sinks.py")],
                                      stdout=subprocess.PIPE, text=True)
        ports = json.loads(self.sinks.stdout.readline())
        self.stats_url = f"http://127.0.0.1:{ports['push']}/stats"
        self.port = free_port()
        self.hub = start_hub(self.port, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC_PREFIX=PREFIX,
                             HUB_KAFKA_FETCH_MAX_WAIT_MS="20",
                             HUB_SERVICE_KEYS=SERVICE_KEY, SMTP_URL=f"smtp://127.0.0.1:{ports['smtp']}",
                             HUB_AUTH_RATE_PER_IP="1000000", HUB_PUSH_ALLOWED_HOSTS="127.0.0.1")
        self.client = Client(f"http://127.0.0.1:{self.port}", 20)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await self.producer.start()
        keys = _subscription_keys()
        now = datetime.now(timezone.utc)
        dnd = {"enabled": True, "start": (now + timedelta(hours=6)).strftime("%H:%M"),
               "end": (now + timedelta(hours=7)).strftime("%H:%M"), "timezone": "UTC"}
        self.users: list[tuple[str, str]] = []  # (user id, token)

        async def make_user(i: int) -> None:
            _, session = await self.client.call("POST", "/api/v1/auth/register", {
                "email": f"bench-{i}-{time.time_ns()}@example.com", "password": "bench-password-1"})
            token = session["access_token"]
            await self.client.call("PUT", "/api/v1/users/me/preferences", {
                "dnd": dnd, "frequency": {"max_per_hour": 10_000, "max_per_day": 100_000}}, token)
            status, answer = await self.client.call("POST", "/api/v1/users/me/push-subscriptions", {
                "endpoint": f"http://127.0.0.1:{ports['push']}/push/{i}", "keys": keys}, token)
            assert status in (200, 201), f"push subscription refused: {status} {answer}"
            self.users.append((session["user"]["id"], token))

        for start in range(0, self.args.users, 20):
            await asyncio.gather(*(make_user(i) for i in range(start, min(start + 20, self.args.users))))
        print(f"setup: {len(self.users)} users with email, push subscription, DND window and caps")

    async def stop(self) -> None:
        await self.producer.stop()
        self.hub.terminate()
        self.hub.wait(15)
        self.sinks.terminate()
        await self.broker.stop()

    async def produce(self, i: int, channels: list[str], tag: str) -> float:
        user_id = self.users[i % len(self.users)][0]
        event = cloud_event("notification.requested", "/bench", {
            "user_id": user_id, "type": "bench", "title": f"{tag} {i}", "body": "A bench notification.",
            "channels": channels}, subject=user_id)
        sent_at = time.time()
        await self.producer.send(PREFIX + "notifications", json.dumps(event).encode(), key=user_id.encode())
        return sent_at

    async def stats(self) -> dict:
        response = await AsyncHTTPClient().fetch(self.stats_url, request_timeout=60)
        return json.loads(response.body)

    async def delivered(self, tag: str, total: int, timeout_s: float) -> tuple[list, list]:
        """Waits until the sinks have `total` emails tagged `tag` and as many pushes more."""
        deadline = time.time() + timeout_s
        while True:
            stats = await self.stats()
            emails = [(t, s) for t, s in stats["email"] if s.startswith(tag + " ")]
            if len(emails) >= total and len(stats["push"]) - self.push_before >= total or time.time() > deadline:
                return emails, stats["push"][self.push_before:]
            await asyncio.sleep(0.5)

    async def throughput(self, n: int, tag: str) -> None:
        self.push_before = len((await self.stats())["push"])
        produced: dict[str, float] = {}
        t0 = time.time()
        for i in range(n):
            produced[f"{tag} {i}"] = await self.produce(i, ["email", "push", "websocket"], tag)
        await self.producer.flush()
        produce_s = time.time() - t0
        emails, pushes = await self.delivered(tag, n, timeout_s=max(120, n / 50))
        last = max([t for t, _ in emails] + pushes)
        latencies = [t - produced[s] for t, s in emails if s in produced]
        print(f"{tag:<12} n={n:<7} produced in {produce_s:6.1f} s   delivered {len(emails)} emails, {len(pushes)} pushes"
              f"   {n / (last - t0):7.1f} notifications/s ({3 * n / (last - t0):7.1f} deliveries/s)"
              f"   total {last - t0:7.1f} s")
        print(f"{'':<12} produce → email: {_quantiles(latencies)}")

    async def live(self, rate: int, seconds: float) -> None:
        received: dict[str, float] = {}
        sockets = []
        for user_id, token in self.users:
            ws = await websocket_connect(f"ws://127.0.0.1:{self.port}/ws?token={token}")
            await ws.write_message(json.dumps({"op": "subscribe", "channel": "user"}))
            await ws.read_message()
            sockets.append(ws)

        async def reader(ws) -> None:
            while True:
                frame = await ws.read_message()
                if frame is None:
                    return
                message = json.loads(frame)
                if message.get("type") == "notification":
                    received[message["notification"]["title"]] = time.time()

        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        produced: dict[str, float] = {}
        total = int(rate * seconds)
        t0 = time.perf_counter()
        for i in range(total):
            # Paced: event i leaves at t0 + i / rate.
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            produced[f"live {i}"] = await self.produce(i, ["websocket"], "live")
        deadline = time.time() + 30
        while len(received) < total and time.time() < deadline:
            await asyncio.sleep(0.2)
        latencies = [received[k] - produced[k] for k in produced if k in received]
        print(f"live         {rate} events/s for {seconds:.0f} s to {len(sockets)} sockets: received {len(received)}/{total}"
              f"   produce → frame: {_quantiles(latencies)}")
        for task in readers:
            task.cancel()
        for ws in sockets:
            ws.close()


async def main(args) -> None:
    bench = Bench(args)
    try:
        await bench.setup()
        await bench.throughput(min(1000, args.n), "warmup")
        await bench.throughput(args.n, "throughput")
        await bench.live(args.rate, args.seconds)
        if args.recipients:
            await bench.throughput(args.recipients, "recipients")
    finally:
        await bench.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--recipients", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
