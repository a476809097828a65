"""Stripe webhooks per second through HTTP: signed payments, replays and forgeries.

Starts `python run.py` as a child (embedded defaults, or the real services named by
MONGODB_URI / REDIS_URL / KAFKA_BOOTSTRAP_SERVERS) with STRIPE_WEBHOOK_SECRET set, creates
one product and `-n` pending orders for a few customers (not timed), then runs each
scenario with `-c` concurrent clients and prints throughput, latency percentiles and
status counts:
  1. one signed `payment_intent.succeeded` per order (confirms it and awards points);
  2. the same events again (the replay / dedupe path);
  3. n/5 events signed with the wrong secret (each must be 400).
Afterwards it checks that a sample of the orders is confirmed and that every customer's
points balance is what the paid orders earn. Published payment.* events are not counted.

Usage: `.venv/bin/python bench/webhooks.py [-n 3000] [-c 50] [--customers 5]`
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import random
import time
from collections import Counter
from decimal import Decimal

from tornado.httpclient import HTTPRequest

from harness import Client, free_port, measure, start_hub

ADMIN = ("bench-admin@example.com", "bench-admin-password")
SECRET = "whsec_bench"
WEBHOOK = "/api/v1/webhooks/stripe"


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value for `payload`, as Stripe computes it."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def succeeded_event(order: dict, i: int) -> bytes:
    amount = int(Decimal(order["total"]) * 100)
    pi_id = f"pi_bench{i:08d}"
    return json.dumps({
        "id": f"evt_bench{i:08d}", "object": "event", "type": "payment_intent.succeeded",
        "api_version": "2024-06-20", "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
        "data": {"object": {
            "id": pi_id, "object": "payment_intent", "amount": amount, "amount_received": amount,
            "currency": order["currency"].lower(), "status": "succeeded", "latest_charge": f"ch_bench{i:08d}",
            "metadata": {"order_id": order["id"]}, "payment_method_types": ["card"], "livemode": False}},
    }).encode()


async def main(args) -> None:
    port = free_port()
    proc = start_hub(port, STRIPE_WEBHOOK_SECRET=SECRET, HUB_ADMIN_EMAIL=ADMIN[0], HUB_ADMIN_PASSWORD=ADMIN[1],
                     HUB_AUTH_RATE_PER_IP="1000000")
    client = Client(f"http://127.0.0.1:{port}", args.concurrency)
    try:
        # Setup (not timed): one product, a few customers, n pending orders.
        _, session = await client.call("POST", "/api/v1/auth/login", {"email": ADMIN[0], "password": ADMIN[1]})
        admin = session["access_token"]
        _, product = await client.call("POST", "/api/v1/products", {
            "name": "Webhook bench item", "price": "12.34", "stock": 10 * args.n + 1000}, admin)
        customers = []
        for i in range(args.customers):
            _, s = await client.call("POST", "/api/v1/auth/register",
                                     {"email": f"webhook-bench{i}@example.com", "password": "correct-horse"})
            customers.append(s["access_token"])
        orders: list[dict | None] = [None] * args.n
        t0 = time.perf_counter()

        async def create(i: int) -> int:
            code, body = await client.call("POST", "/api/v1/orders", {
                "items": [{"product_id": product["id"], "quantity": 1 + i % 3}]}, customers[i % len(customers)])
            if code == 201:
                orders[i] = body
            return code

        setup = Counter([await create(0)])
        jobs = iter(range(1, args.n))

        async def creator() -> None:
            for i in jobs:
                setup[await create(i)] += 1

        await asyncio.gather(*(creator() for _ in range(args.concurrency)))
        print(f"setup: {args.n} orders for {len(customers)} customers in {time.perf_counter() - t0:.1f} s, "
              f"statuses {dict(sorted(setup.items()))}")
        if any(o is None for o in orders):
            raise SystemExit("setup failed: some orders were not created")

        payloads = [succeeded_event(order, i) for i, order in enumerate(orders)]

        answers: Counter = Counter()  # {"duplicate": ...} of the 200 answers, per scenario

        async def post(payload: bytes, secret: str) -> int:
            response = await client.http.fetch(HTTPRequest(
                client.base + WEBHOOK, method="POST", body=payload, request_timeout=60,
                headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload, secret)}),
                raise_error=False)
            if response.code == 200:
                answers["duplicate" if json.loads(response.body)["duplicate"] else "applied"] += 1
            return response.code

        await measure("signed webhook: payment succeeded", args.n, args.concurrency,
                      lambda i: post(payloads[i], SECRET))
        print(f"  first delivery: {dict(answers)}: {'OK' if answers == {'applied': args.n} else 'FAIL'}")
        answers.clear()
        await measure("signed webhook: replay", args.n, args.concurrency, lambda i: post(payloads[i], SECRET))
        print(f"  replay: {dict(answers)}: {'OK' if answers == {'duplicate': args.n} else 'FAIL'}")
        forged_n = max(args.n // 5, 2)
        forged = [json.dumps({**json.loads(p), "id": f"evt_forged{i:08d}"}).encode()
                  for i, p in enumerate(payloads[:forged_n])]
        statuses = await measure("forged signature", forged_n, args.concurrency,
                                 lambda i: post(forged[i], "whsec_wrong"))
        print(f"  forged check: {statuses.count(400)}/{forged_n} rejected with 400: "
              f"{'OK' if statuses.count(400) == forged_n else 'FAIL'}")

        # Checks (not timed).
        sample = random.sample(orders, min(args.sample, len(orders)))
        found = Counter()
        for order in sample:
            code, body = await client.call("GET", f"/api/v1/orders/{order['id']}", token=admin)
            found[body["status"] if code == 200 else f"HTTP {code}"] += 1
        print(f"  order check: {len(sample)} sampled orders "
              f"{dict(found)}: {'OK' if found == {'confirmed': len(sample)} else 'FAIL'}")
        expected = Counter()
        for i, order in enumerate(orders):
            expected[i % len(customers)] += math.floor(Decimal(order["total"]))  # POINTS_PER_UNIT=1
        balances_ok = True
        for k, token in enumerate(customers):
            _, points = await client.call("GET", "/api/v1/users/me/points", token=token)
            if points["balance"] != expected[k] or len(points["entries"]) != sum(
                    1 for i in range(len(orders)) if i % len(customers) == k):
                balances_ok = False
                print(f"  customer {k}: balance {points['balance']} (expected {expected[k]}), "
                      f"entries {len(points['entries'])}")
        print(f"  points check: {len(customers)} customers, {sum(expected.values())} points expected: "
              f"{'OK' if balances_ok else 'FAIL'}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="orders, and so signed events, per scenario")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("--customers", type=int, default=5, help="customers the orders are spread over")
    parser.add_argument("--sample", type=int, default=50, help="orders checked for 'confirmed' afterwards")
    asyncio.run(main(parser.parse_args()))
