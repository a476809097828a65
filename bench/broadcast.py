"""A broadcast to N users end to end, and the bare pipeline beside it (issue 16).

Processes, all on this machine: the bundled Kafka broker, the hub (bench/broadcast_hub.py:
`run.py`'s hub with N users seeded into its embedded store), the SMTP and Web Push sinks
(bench/notify_sinks.py), this driver, and afterwards the bare pipeline
(bench/broadcast_baseline.py). Redis is the local server when one answers on
127.0.0.1:6379 (database 7), else the embedded stand-in.

Every user has email on, a Web Push subscription (each push really encrypted, RFC 8291),
a DND window that is evaluated but does not cover the run, and caps high enough; `--sockets`
of them hold a live WebSocket. One `POST /api/v1/broadcasts` to `{"all": true}` (category
marketing, so every email carries a signed List-Unsubscribe link) with email, push and
websocket; the clock runs from the POST to the last email or push at the sinks.

Then the bare pipeline consumes the same batches from Kafka and sends the same emails and
pushes to the same sinks with no store, policy or log: the hub's rate over its rate is
the ratio the issue asks for.

Usage: `.venv/bin/python bench/broadcast.py [-n 20000] [--sockets 200] [--no-baseline] [-v] [--profile FILE]`
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from harness import ROOT, free_port

sys.path.insert(0, str(ROOT))
from domain.tokens import AccessTokens  # noqa: E402
from hub.adapters.embedded_broker import EmbeddedBroker  # noqa: E402

SERVICE_KEY = "bench-service-key-0123456789"
PREFIX = "bench."
JWT_SECRET = "bench-jwt-secret-" + "x" * 32


def _keys() -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return {"p256dh": b64(public), "auth": b64(os.urandom(16))}


def _local_redis() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return "redis://127.0.0.1:6379/7"
    except OSError:
        return None


async def _stats(url: str) -> dict:
    response = await AsyncHTTPClient().fetch(url + "/stats?summary=1", request_timeout=60)
    return json.loads(response.body)


async def main(args) -> None:
    broker = EmbeddedBroker()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or await broker.start()
    sinks = subprocess.Popen([sys.executable, str(ROOT / "bench" / "notify_sinks.py")], stdout=subprocess.PIPE,
                             text=True)
    ports = json.loads(sinks.stdout.readline())
    push_url = f"http://127.0.0.1:{ports['push']}"
    keys = _keys()
    redis_url = os.environ.get("REDIS_URL") or _local_redis()
    env = dict(os.environ, HUB_PORT=str(free_port()), HUB_LOG_LEVEL="ERROR", KAFKA_BOOTSTRAP_SERVERS=bootstrap,
               KAFKA_TOPIC_PREFIX=PREFIX, HUB_KAFKA_FETCH_MAX_WAIT_MS="20", HUB_SERVICE_KEYS=SERVICE_KEY,
               JWT_SECRET=JWT_SECRET, SMTP_URL=f"smtp://127.0.0.1:{ports['smtp']}", HUB_PUSH_ALLOWED_HOSTS="127.0.0.1",
               HUB_REDIS_PREFIX=f"bench{time.time_ns()}:", BENCH_USERS=str(args.n), BENCH_PUSH_URL=push_url,
               BENCH_P256DH=keys["p256dh"], BENCH_AUTH=keys["auth"], **({"REDIS_URL": redis_url} if redis_url else {}))
    hub = subprocess.Popen([sys.executable, str(ROOT / "bench" / "broadcast_hub.py")], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, text=True)
    sockets = []
    try:
        t_seed = time.time()
        line = hub.stdout.readline().split()
        if not line or line[0] != "ready":
            raise SystemExit("the hub did not start")
        port = int(line[1])
        print(f"setup: {args.n} users seeded in {time.time() - t_seed:.1f} s; redis: {redis_url or 'embedded'}; "
              f"hub pid {hub.pid}")
        tokens = AccessTokens(JWT_SECRET, 3600)
        frames = [0]

        async def reader(ws) -> None:
            while (frame := await ws.read_message()) is not None:
                if json.loads(frame).get("type") == "notification":
                    frames[0] += 1

        for i in range(min(args.sockets, args.n)):
            token = tokens.issue({"_id": f"bench-{i:07d}", "roles": ["customer"]}, datetime.now(timezone.utc))
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/ws?token={token}")
            await ws.write_message(json.dumps({"op": "subscribe", "channel": "user"}))
            await ws.read_message()
            sockets.append((ws, asyncio.ensure_future(reader(ws))))

        spy = None
        if args.profile:  # py-spy's collapsed stacks of the hub for the broadcast (docs/performance.md)
            beside = Path(sys.executable).parent / "py-spy"
            spy = subprocess.Popen([str(beside) if beside.exists() else "py-spy",
                                    "record", "-p", str(hub.pid), "-f", "raw", "-o", args.profile, "-r", "50"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0 = _cpu_s(hub.pid)
        t0 = time.time()
        status, body = await _post(port, {"audience": {"all": True}, "type": "flash_sale", "category": "marketing",
                                          "title": "Flash sale", "body": "Everything 30% off today",
                                          "channels": ["email", "push", "websocket"]})
        assert status == 202, (status, body)
        bid = body["id"]
        while True:
            await asyncio.sleep(1)
            progress = await _get(port, f"/api/v1/broadcasts/{bid}")
            stats = await _stats(push_url)
            if args.verbose:
                print(f"  {time.time() - t0:6.1f} s  processed {progress['processed']:>7}  emails {stats['email']:>7}"
                      f"  pushes {stats['push']:>7}")
            if progress["status"] == "done" and stats["email"] >= args.n and stats["push"] >= args.n:
                break
            if time.time() - t0 > args.timeout:
                print(f"timed out: {progress} {stats}")
                break
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        cpu = _cpu_s(hub.pid) - cpu0
        last = max(stats["email_last"] or t0, stats["push_last"] or t0)
        rate = args.n / (last - t0)
        print(f"hub        n={args.n:<7} {rate:8.1f} recipients/s ({3 * rate:8.1f} deliveries/s)  total {last - t0:7.1f} s"
              f"  → 600,000 in {600_000 / rate / 60:5.1f} min;  CPU {cpu:6.1f} s = {args.n / cpu:7.1f} recipients"
              f" per CPU-second")
        print(f"           emails {stats['email']}, pushes {stats['push']}, live frames {frames[0]} on "
              f"{len(sockets)} sockets; counts {progress['counts']}")
    finally:
        for ws, task in sockets:
            task.cancel()
            ws.close()
        hub.terminate()
        hub.wait(30)
    if not args.no_baseline:
        before = await _stats(push_url)
        baseline = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "broadcast_baseline.py")], cwd=ROOT, capture_output=True, text=True,
            env=dict(env, BASELINE_TOPIC=PREFIX + "broadcasts", BASELINE_EXPECT=str(args.n)), timeout=args.timeout)
        if baseline.returncode != 0:
            print(baseline.stderr[-2000:])
        else:
            result = json.loads(baseline.stdout.strip().splitlines()[-1])
            after = await _stats(push_url)
            base_rate = result["recipients"] / result["seconds"]
            print(f"baseline   n={result['recipients']:<7} {base_rate:8.1f} recipients/s  total {result['seconds']:7.1f} s"
                  f"  (emails +{after['email'] - before['email']}, pushes +{after['push'] - before['push']});  CPU "
                  f"{result['cpu_s']:6.1f} s = {result['recipients'] / result['cpu_s']:7.1f} recipients per CPU-second")
            print(f"ratio hub / baseline: {rate / base_rate:.2f} by the clock, "
                  f"{(args.n / cpu) / (result['recipients'] / result['cpu_s']):.2f} by CPU")
    sinks.terminate()
    await broker.stop()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (Linux): unlike the clock, not
    inflated by whatever else the shared machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _post(port: int, body: dict) -> tuple[int, dict]:
    response = await AsyncHTTPClient().fetch(HTTPRequest(
        f"http://127.0.0.1:{port}/api/v1/broadcasts", method="POST", body=json.dumps(body),
        headers={"X-API-Key": SERVICE_KEY, "Content-Type": "application/json"}, request_timeout=60), raise_error=False)
    return response.code, json.loads(response.body)


async def _get(port: int, path: str) -> dict:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": SERVICE_KEY},
                                             request_timeout=60)
    return json.loads(response.body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the hub here (py-spy beside python)")
    asyncio.run(main(parser.parse_args()))
