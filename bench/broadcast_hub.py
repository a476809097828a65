"""The hub for bench/broadcast.py: `python run.py`'s hub, in its own process, with the
bench's users written straight into its (embedded) store before it serves, since
registering hundreds of thousands over HTTP would spend hours hashing passwords.

Environment: the hub's settings, plus BENCH_USERS (how many), BENCH_PUSH_URL (the push
sink's base URL), BENCH_P256DH / BENCH_AUTH (one subscription's keys, shared by all).
User i has id `bench-<i>`, email on, a push subscription, a DND window that is evaluated
but does not cover the run, and caps high enough for the load. Prints "ready <port>".
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from hub.wiring.logs import setup_logging  # noqa: E402
from hub.wiring.server import HubServer  # noqa: E402


async def seed(hub, n: int, push_url: str, keys: dict) -> None:
    now = datetime.now(timezone.utc)
    dnd = {"enabled": True, "start": (now + timedelta(hours=6)).strftime("%H:%M"),
           "end": (now + timedelta(hours=7)).strftime("%H:%M"), "timezone": "UTC"}
    preferences = {"dnd": dnd, "frequency": {"max_per_hour": 10_000, "max_per_day": 100_000}}
    for start in range(0, n, 5000):
        await hub.stores.users.col.insert_many([{
            "_id": f"bench-{i:07d}", "email": f"bench-{i}@example.com", "password_hash": "-", "name": f"User {i}",
            "phone": None, "timezone": "UTC", "locale": "en", "roles": ["customer"], "failed_logins": 0,
            "locked_until": None, "created_at": now, "preferences": preferences,
            "push_subscriptions": [{"endpoint": f"{push_url}/push/{i}", "keys": keys, "created_at": now}],
        } for i in range(start, min(start + 5000, n))])


async def main() -> None:
    settings = load_settings(dict(os.environ))
    setup_logging(settings.log_level)
    server = HubServer(settings)
    await server.start()
    await seed(server.hub, int(os.environ["BENCH_USERS"]), os.environ["BENCH_PUSH_URL"],
               {"p256dh": os.environ["BENCH_P256DH"], "auth": os.environ["BENCH_AUTH"]})
    print(f"ready {server.port}", flush=True)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
