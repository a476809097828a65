"""What the hostile suites share: an attack run while /healthz is probed, and a snapshot
of everything an attack could have changed."""

from __future__ import annotations

import asyncio
import statistics
import time

# The median /healthz answer while an attack runs. Well above a loaded machine's (0.11 s was
# seen with the suite's three workers); an attack that holds the loop adds the time each of
# its requests holds it to every probe.
HEALTHZ_BUDGET_S = 0.25


async def while_probing(api, attack) -> tuple[object, float]:
    """Runs the coroutine `attack` while /healthz is asked again and again; returns the
    attack's result and the median time /healthz took to answer meanwhile (the median:
    one probe may be slow on a loaded machine, an attack that holds the loop slows all)."""
    task = asyncio.ensure_future(attack)
    latencies: list[float] = []
    while not task.done() or len(latencies) < 3:
        started = time.perf_counter()
        r = await api.call("GET", "/healthz")
        latencies.append(time.perf_counter() - started)
        assert r.status == 200, r
        await asyncio.sleep(0.005)
    return await task, statistics.median(latencies)


async def snapshot(hub) -> dict:
    """Documents per collection and every product's stock: an attack must change none."""
    counts = {name: await hub.db[name].count_documents({}) for name in await hub.db.list_collection_names()}
    stock = {p["_id"]: p["stock"] for p in await hub.db["products"].find({}, {"stock": 1}).to_list(None)}
    return {"counts": counts, "stock": stock}


def fields(r) -> set[str]:
    return {d["field"] for d in r.data["error"]["details"]}


async def inside_one_rate_window(window_s: int = 60, margin_s: float = 5.0) -> None:
    """The rate limits count in fixed windows (hub/adapters/ratelimit.py): requests that
    straddle a window's edge are counted in two. Returns once a test can send a few well
    inside one."""
    left = window_s - time.time() % window_s
    if left < margin_s:
        await asyncio.sleep(left + 0.1)
