"""Auth and request-path throughput of one hub process on embedded defaults.

Starts `python run.py` as a child (so the load generator does not share its CPU
budget with the server's event loop), then prints, per scenario, requests/s and
latency percentiles. Usage: `make bench` or `.venv/bin/python bench/auth_bench.py [-c 20] [-n 2000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import urllib.request

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from hub_process import free_port, start_hub


async def run(name: str, make_request, total: int, concurrency: int) -> None:
    client = AsyncHTTPClient(max_clients=concurrency)
    latencies: list[float] = []
    counter = iter(range(total))
    failures = 0

    async def worker():
        nonlocal failures
        for i in counter:
            t0 = time.perf_counter()
            response = await client.fetch(make_request(i), raise_error=False)
            latencies.append(time.perf_counter() - t0)
            failures += response.code >= 400

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    print(f"{name:<22} n={total:<6} c={concurrency:<3} {total / elapsed:8.1f} req/s   "
          f"p50 {q[49] * 1000:7.1f} ms   p95 {q[94] * 1000:7.1f} ms   p99 {q[98] * 1000:7.1f} ms   errors {failures}")


async def main(args) -> None:
    port = free_port()
    proc = start_hub(port, HUB_AUTH_RATE_PER_IP="1000000", HUB_AUTH_RATE_PER_ACCOUNT="1000000")
    base = f"http://127.0.0.1:{port}"
    try:
        def post(path, body):
            return HTTPRequest(base + path, method="POST", body=json.dumps(body), headers={"Content-Type": "application/json"})

        n_users = max(args.concurrency, args.n // 10)
        await run("register (argon2)", lambda i: post("/api/v1/auth/register", {"email": f"b{i}@example.com", "password": "correct-horse"}),
                  n_users, args.concurrency)
        await run("login (argon2)", lambda i: post("/api/v1/auth/login", {"email": f"b{i % n_users}@example.com", "password": "correct-horse"}),
                  n_users, args.concurrency)
        token = json.loads(urllib.request.urlopen(urllib.request.Request(
            base + "/api/v1/auth/login", data=json.dumps({"email": "b0@example.com", "password": "correct-horse"}).encode(),
            headers={"Content-Type": "application/json"})).read())["access_token"]
        await run("GET /users/me (JWT)", lambda i: HTTPRequest(base + "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}),
                  args.n, args.concurrency)
        await run("GET /healthz", lambda i: HTTPRequest(base + "/healthz"), args.n, args.concurrency)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per read scenario")
    parser.add_argument("-c", "--concurrency", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
