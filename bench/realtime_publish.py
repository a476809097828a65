"""The realtime fan-out's Redis side alone: `Realtime.publish_events` (seq, history, dedupe,
PUBLISH; hub/live/realtime.py) for batches of events on one channel (stock updates) and on three
(an order event: its order, its user, admin:orders), as the hub-realtime consumer publishes a
fetched Kafka batch. Prints events/s, best of `--rounds` batches.

Redis: `--redis-url` (default: the local server, database 7), or `--local-cluster` for three
masters started from the machine's redis-server (tests/redis_cluster.py), stopped afterwards.

Usage: `.venv/bin/python bench/realtime_publish.py [--local-cluster] [--batch 500] [--rounds 20]`
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

from harness import ROOT

sys.path.insert(0, str(ROOT))
from config.settings import load_settings  # noqa: E402
from hub.live.realtime import Realtime  # noqa: E402
from hub.adapters.redis_client import connect_redis  # noqa: E402


async def measure(redis_url: str, cluster: bool, batch_size: int, rounds: int) -> None:
    env = {"HUB_ENV": "test", "REDIS_URL": redis_url, **({"REDIS_CLUSTER": "1"} if cluster else {})}
    client = connect_redis(load_settings(env))
    prefix = f"bench-rt-{uuid.uuid4().hex[:8]}:"
    realtime = Realtime(client, prefix, history_size=1000, history_age_s=3600)
    await realtime.start()
    try:
        for channels in (1, 3):
            best = None
            for _ in range(rounds):
                batch = []
                for n in range(batch_size):
                    event = {"id": uuid.uuid4().hex, "type": "order.processing",
                             "data": {"order_id": f"o{n}", "user_id": f"u{n % 50}", "note": "x" * 200}}
                    keys = [f"product:p{n % 10}"] if channels == 1 else [f"order:o{n}", f"user:u{n % 50}", "admin:orders"]
                    batch.append((event, keys))
                started = time.perf_counter()
                await realtime.publish_events(batch)
                elapsed = time.perf_counter() - started
                best = elapsed if best is None else min(best, elapsed)
            print(f"{'cluster' if cluster else 'single'}: {channels} channel(s) per event: "
                  f"{batch_size / best:,.0f} events/s ({best * 1000:.1f} ms per batch of {batch_size}, best of {rounds})")
    finally:
        await realtime.stop()
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        for key in keys:
            await client.delete(key)
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--local-cluster", action="store_true")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if not args.local_cluster:
        asyncio.run(measure(args.redis_url, False, args.batch, args.rounds))
        return
    from tests.redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster().start()
    try:
        asyncio.run(measure(cluster.url, True, args.batch, args.rounds))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
