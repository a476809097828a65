"""What every bench shares: the hub under test as a child process (`python run.py`), so the
load generator does not share the server's event loop (it inherits the environment: set
MONGODB_URI / REDIS_URL / KAFKA_BOOTSTRAP_SERVERS to measure against real services), a
JSON client, and the closed-loop measurement that prints throughput and latency."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_hub(port: int, **settings: str) -> subprocess.Popen:
    env = dict(os.environ, HUB_PORT=str(port), HUB_LOG_LEVEL="ERROR", **settings)
    proc = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("hub did not start")


class Client:
    def __init__(self, base: str, concurrency: int) -> None:
        self.base = base
        self.http = AsyncHTTPClient(force_instance=True, max_clients=concurrency)

    async def call(self, method: str, path: str, body=None, token: str | None = None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.http.fetch(HTTPRequest(
            self.base + path, method=method, headers=headers,
            body=json.dumps(body) if body is not None else None, request_timeout=60), raise_error=False)
        return response.code, json.loads(response.body) if response.body else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc): a cost that holds on a loaded machine."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(name: str, total: int, concurrency: int, request, pid: int | None = None) -> list[int]:
    """Runs `request(i)` `total` times over `concurrency` workers; prints and returns statuses.
    With `pid` (the hub's), also the CPU time that process spent per request."""
    latencies: list[float] = []
    statuses: list[int] = []
    jobs = iter(range(total))

    async def worker() -> None:
        for i in jobs:
            t0 = time.perf_counter()
            statuses.append(await request(i))
            latencies.append(time.perf_counter() - t0)

    cpu0 = cpu_seconds(pid) if pid else 0.0
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = f"   hub CPU {(cpu_seconds(pid) - cpu0) * 1000 / total:5.2f} ms/req" if pid else ""
    q = statistics.quantiles(latencies, n=100)
    counts = {code: statuses.count(code) for code in sorted(set(statuses))}
    print(f"{name:<34} n={total:<6} c={concurrency:<3} {total / elapsed:8.1f} req/s   "
          f"p50 {q[49] * 1000:6.1f} ms   p99 {q[98] * 1000:6.1f} ms   statuses {counts}{cpu}")
    return statuses
