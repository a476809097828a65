"""Auth and request-path throughput of one hub process on embedded defaults.

Starts `python run.py` as a child (so the load generator does not share its CPU
budget with the server's event loop), then prints, per scenario, requests/s and
latency percentiles. Usage: `make bench` or `.venv/bin/python bench/auth_bench.py [-c 20] [-n 2000]`.
"""

from __future__ import annotations

import argparse
import asyncio

from harness import Client, free_port, measure, start_hub


async def main(args) -> None:
    port = free_port()
    proc = start_hub(port, HUB_AUTH_RATE_PER_IP="1000000", HUB_AUTH_RATE_PER_ACCOUNT="1000000")
    client = Client(f"http://127.0.0.1:{port}", args.concurrency)

    async def status(method: str, path: str, body=None, token=None) -> int:
        return (await client.call(method, path, body, token))[0]

    try:
        n_users = max(args.concurrency, args.n // 10)
        await measure("register (argon2)", n_users, args.concurrency, lambda i: status(
            "POST", "/api/v1/auth/register", {"email": f"b{i}@example.com", "password": "correct-horse"}))
        await measure("login (argon2)", n_users, args.concurrency, lambda i: status(
            "POST", "/api/v1/auth/login", {"email": f"b{i % n_users}@example.com", "password": "correct-horse"}))
        _, session = await client.call("POST", "/api/v1/auth/login", {"email": "b0@example.com", "password": "correct-horse"})
        await measure("GET /users/me (JWT)", args.n, args.concurrency,
                      lambda i: status("GET", "/api/v1/users/me", token=session["access_token"]))
        await measure("GET /healthz", args.n, args.concurrency, lambda i: status("GET", "/healthz"))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per read scenario")
    parser.add_argument("-c", "--concurrency", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
