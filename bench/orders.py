"""Orders per second through HTTP, and catalog search requests per second.

Starts `python run.py` as a child (embedded defaults, or the real services named by
MONGODB_URI / REDIS_URL / KAFKA_BOOTSTRAP_SERVERS), creates the catalog and users, then
runs each scenario with `-c` concurrent clients and prints throughput, latency
percentiles and the oversell check (stock taken must equal the orders that succeeded).

Against a real MongoDB: `MONGODB_URI=mongodb://host:27017 MONGODB_DB=bench python orders.py ...`
(a database of its own: the bench writes a catalog, customers and orders). The customers are new on every run, so a run can follow another on
the same database; the catalog then holds every run's products, which the search figure counts,
so compare search on a fresh database.

Usage: `.venv/bin/python bench/orders.py [-n 5000] [-c 50]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import uuid

from harness import Client, free_port, measure, start_hub

ADMIN = ("bench-admin@example.com", "bench-admin-password")


async def main(args) -> None:
    port = free_port()
    proc = start_hub(port, HUB_ADMIN_EMAIL=ADMIN[0], HUB_ADMIN_PASSWORD=ADMIN[1], HUB_AUTH_RATE_PER_IP="1000000",
                      HUB_ORDER_RATE_PER_USER="1000000", HUB_MAX_UNPAID_ORDERS="1000000")
    client = Client(f"http://127.0.0.1:{port}", args.concurrency)
    try:
        _, session = await client.call("POST", "/api/v1/auth/login", {"email": ADMIN[0], "password": ADMIN[1]})
        admin = session["access_token"]
        words = ["mug", "lamp", "chair", "desk", "pen", "book", "cup", "plate", "bowl", "rug"]
        products = []
        for i in range(1000):
            _, p = await client.call("POST", "/api/v1/products", {
                "name": f"{random.choice(words).title()} {i}", "price": f"{random.randint(100, 9999) / 100:.2f}",
                "stock": 1_000_000, "category": random.choice(words), "description": "bench product"}, admin)
            products.append(p["id"])
        _, hot = await client.call("POST", "/api/v1/products", {"name": "Hot item", "price": "5.00", "stock": args.n}, admin)

        # First, while nothing else runs in the hub (the orders below leave notifications and
        # events to work off for a while after the last response; the catalog's own events go first).
        await asyncio.sleep(3)
        async def search(i: int) -> int:
            code, _ = await client.call("GET", f"/api/v1/products?q={random.choice(words)}&sort=-price&limit=20")
            return code

        await measure("GET /products?q=... (1001 products)", args.n // 2, args.concurrency, search, proc.pid)
        sellout_stock = args.n // 2  # half the orders must fail: oversell would show as more successes
        _, sellout = await client.call("POST", "/api/v1/products", {"name": "Sell-out item", "price": "5.00",
                                                                    "stock": sellout_stock}, admin)
        tokens, run = [], uuid.uuid4().hex[:8]  # new customers on every run (a real database keeps the last run's)
        for i in range(args.concurrency):
            _, s = await client.call("POST", "/api/v1/auth/register", {"email": f"bench{i}-{run}@example.com",
                                                                       "password": "correct-horse"})
            tokens.append(s["access_token"])

        async def order(product_id: str, i: int) -> int:
            code, _ = await client.call("POST", "/api/v1/orders", {"items": [{"product_id": product_id, "quantity": 1}]},
                                        tokens[i % len(tokens)])
            return code

        await measure("POST /orders, one hot product", args.n, args.concurrency, lambda i: order(hot["id"], i),
                      proc.pid)
        statuses = await measure("POST /orders, hot product sells out", args.n, args.concurrency,
                                 lambda i: order(sellout["id"], i), proc.pid)
        _, after = await client.call("GET", f"/api/v1/products/{sellout['id']}")
        succeeded = statuses.count(201)
        print(f"  oversell check: stock {sellout_stock} → {after['stock']}, orders accepted {succeeded}: "
              f"{'OK' if sellout_stock - after['stock'] == succeeded and after['stock'] >= 0 else 'OVERSOLD'}")
        await measure("POST /orders, 1000 products", args.n, args.concurrency, lambda i: order(random.choice(products), i),
                      proc.pid)

        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="orders per scenario")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
