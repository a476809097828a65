"""Native push throughput: deliveries per second from one hub process to the APNs fake
(HTTP/2 + TLS) and the FCM fake (HTTPS), the fakes in a process of their own
(bench/mobile_fakes.py), against a bare client sending the same requests to the same fakes
in the same run.

- bare: one httpx HTTP/2 client per fake, a provider token / OAuth token made once, `-n`
  requests at `-c` in flight;
- channel: the hub's own ApnsChannel / FcmChannel (outgoing policy, token caching, payload
  checks, error classification), `-n` sends at `-c` in flight, in this process;
- hub: `--users` customers, each with one APNs and one FCM device; `-n` notifications
  (`POST /api/v1/notifications`, push only, priority high so caps do not hold them) spread
  over them; rate = messages the fake accepted ÷ (last accepted − first request). Every
  hub notification goes through the whole engine (Kafka, recording, policy, rendering,
  the delivery log), so this is the engine's rate as seen from each provider.

Usage: `cd bench && ../.venv/bin/python mobile_push.py [-n 2000] [-c 100] [--users 100]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from harness import ROOT, Client, free_port, start_hub

sys.path.insert(0, str(ROOT))
from channels.apns import ApnsChannel  # noqa: E402
from domain.delivery import Message  # noqa: E402
from channels.fcm import FcmChannel  # noqa: E402
from hub.adapters.outgoing import OutgoingPolicy  # noqa: E402

SERVICE_KEY = "bench-service-key-0123456789"


def counts(fakes: dict) -> dict:
    with urllib.request.urlopen(fakes["status_url"], timeout=5) as r:
        return json.loads(r.read())


async def bare(fakes: dict, n: int, concurrency: int) -> dict[str, float]:
    context = ssl.create_default_context(cafile=fakes["ca_file"])
    key = load_pem_private_key(Path(fakes["key_file"]).read_bytes(), password=None)
    provider_token = jwt.encode({"iss": fakes["team_id"], "iat": int(time.time())}, key, algorithm="ES256",
                                headers={"kid": fakes["key_id"]})
    fcm = FcmChannel(fakes["account_file"], None, fakes["fcm_url"], OutgoingPolicy(ca_file=fakes["ca_file"]))
    access_token = await fcm.access_token()  # made once, not measured
    await fcm.close()
    payload = json.dumps({"aps": {"alert": {"title": "Order shipped", "body": "On its way"}, "badge": 1},
                          "notification_id": "n", "type": "order_shipped"}).encode()
    rates = {}
    for name in ("apns", "fcm"):
        async with httpx.AsyncClient(http2=True, verify=context, timeout=30) as client:
            async def one(i: int) -> None:
                if name == "apns":
                    r = await client.post(f"{fakes['apns_url']}/3/device/{secrets.token_hex(32)}", content=payload,
                                          headers={"authorization": f"bearer {provider_token}", "apns-topic": fakes["topic"],
                                                   "apns-push-type": "alert", "apns-priority": "10",
                                                   "apns-expiration": "0"})
                else:
                    r = await client.post(f"{fakes['fcm_url']}/v1/projects/{fakes['project']}/messages:send",
                                          json={"message": {"token": f"tok{secrets.token_urlsafe(40)}",
                                                            "notification": {"title": "Order shipped", "body": "x"},
                                                            "data": {"notification_id": "n", "type": "t"},
                                                            "android": {"priority": "HIGH", "ttl": "3600s"}}},
                                          headers={"authorization": f"Bearer {access_token}"})
                assert r.status_code == 200, r.text

            jobs = iter(range(n))

            async def worker() -> None:
                for i in jobs:
                    await one(i)
            await one(-1)  # connect first
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            rates[name] = n / (time.perf_counter() - started)
    return rates


async def channels(fakes: dict, n: int, concurrency: int) -> dict[str, float]:
    policy = OutgoingPolicy(ca_file=fakes["ca_file"], timeout_s=30)
    made = {
        "apns": ApnsChannel(fakes["key_file"], fakes["key_id"], fakes["team_id"], fakes["topic"], fakes["apns_url"],
                            fakes["apns_url"], policy),
        "fcm": FcmChannel(fakes["account_file"], None, fakes["fcm_url"], policy),
    }
    rates = {}
    for name, channel in made.items():
        def message(i: int) -> Message:
            token = secrets.token_hex(32) if name == "apns" else f"tok{secrets.token_urlsafe(40)}"
            return Message(notification_id=f"n{i}", user_id="u", address={"token": token}, type="order_shipped",
                           content={"title": "Order shipped", "body": "On its way"}, priority="high",
                           data={"order_id": str(i)}, badge=1)
        jobs = iter(range(n))

        async def worker() -> None:
            for i in jobs:
                await channel.send(message(i))
        await channel.send(message(-1))  # connect and get a token first
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rates[name] = n / (time.perf_counter() - started)
        await channel.close()
    return rates


async def through_hub(fakes: dict, n: int, users: int, concurrency: int) -> dict[str, float]:
    port = free_port()
    hub = start_hub(port, HUB_SERVICE_KEYS=SERVICE_KEY, HUB_AUTH_RATE_PER_IP="1000000",
                    APNS_KEY_FILE=fakes["key_file"], APNS_KEY_ID=fakes["key_id"], APNS_TEAM_ID=fakes["team_id"],
                    APNS_TOPIC=fakes["topic"], APNS_BASE_URL=fakes["apns_url"], APNS_SANDBOX_BASE_URL=fakes["apns_url"],
                    FCM_SERVICE_ACCOUNT_FILE=fakes["account_file"], FCM_BASE_URL=fakes["fcm_url"],
                    HUB_EXTRA_CA_FILE=fakes["ca_file"])
    try:
        client = Client(f"http://127.0.0.1:{port}", concurrency)
        ids = []
        for _ in range(users):
            _, session = await client.call("POST", "/api/v1/auth/register", {
                "email": f"m{secrets.token_hex(6)}@example.com", "password": "correct-horse"})
            token = session["access_token"]
            ids.append(session["user"]["id"])
            for platform, device in (("apns", secrets.token_hex(32)), ("fcm", f"tok{secrets.token_urlsafe(40)}")):
                status, answer = await client.call("POST", "/api/v1/users/me/devices",
                                              {"platform": platform, "token": device}, token)
                assert status == 201, (status, answer)
        before = counts(fakes)
        jobs = iter(range(n))
        headers = {"Content-Type": "application/json", "X-API-Key": SERVICE_KEY}

        async def worker() -> None:
            from tornado.httpclient import HTTPRequest
            for i in jobs:
                r = await client.http.fetch(HTTPRequest(
                    client.base + "/api/v1/notifications", method="POST", headers=headers, request_timeout=60,
                    body=json.dumps({"user_id": ids[i % users], "type": "order_note", "title": f"Note {i}",
                                     "body": "About your order", "channels": ["push"], "priority": "high",
                                     "data": {"order_id": str(i)}})), raise_error=False)
                assert r.code == 202, r.body

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        posted = time.perf_counter() - started
        done: dict[str, float] = {}
        deadline = time.perf_counter() + 600
        while len(done) < 2 and time.perf_counter() < deadline:
            now = counts(fakes)
            for name in ("apns", "fcm"):
                if name not in done and now[name] - before[name] >= n:
                    done[name] = time.perf_counter() - started
            await asyncio.sleep(0.05)
        print(f"hub: {n} notifications posted in {posted:.1f} s")
        return {name: n / elapsed for name, elapsed in done.items()}
    finally:
        hub.terminate()
        hub.wait(30)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("-c", type=int, default=100)
    parser.add_argument("--users", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        fakes_proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "mobile_fakes.py"), directory],
                                      stdout=subprocess.PIPE, text=True)
        try:
            fakes = json.loads(fakes_proc.stdout.readline())
            bare_rates = await bare(fakes, args.n, args.c)
            channel_rates = await channels(fakes, args.n, args.c)
            hub_rates = await through_hub(fakes, args.n, args.users, args.c)
        finally:
            fakes_proc.terminate()
            fakes_proc.wait(10)
    for name in ("apns", "fcm"):
        hub_rate = hub_rates.get(name)
        shown = f"{hub_rate:8.1f}/s (ratio {hub_rate / bare_rates[name]:.2f})" if hub_rate else "not all delivered"
        print(f"{name:<5} bare client {bare_rates[name]:8.1f}/s   hub channel {channel_rates[name]:8.1f}/s "
              f"(ratio {channel_rates[name] / bare_rates[name]:.2f})   whole hub {shown}")


if __name__ == "__main__":
    asyncio.run(main())
