"""Does Web Push encryption gain from leaving the event loop? Issue 16 asked to move it off
the loop if that measurably helps. This encrypts the same payload for one subscription the
way channels/push.py does (`WebPusher.encode`, RFC 8291 aes128gcm: an ECDH key agreement,
HKDF and AES-GCM each time), first inline on the event loop (what the hub does), then with
`asyncio.to_thread` for each encryption, `--concurrency` of them in flight at once. Prints
encryptions per second and CPU microseconds for each.

Usage: `.venv/bin/python bench/webpush_encrypt.py [-n 5000] [--concurrency 100]`
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pywebpush import WebPusher


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def subscription() -> dict:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {"endpoint": "https://push.example/bench", "keys": {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}}


async def run(name: str, n: int, concurrency: int, encrypt) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await encrypt()
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name:10} n={n}  {n / wall:8.1f} encryptions/s   {cpu / n * 1e6:6.1f} µs of CPU each")


async def main(args) -> None:
    sub = subscription()
    payload = b'{"title":"Flash sale","body":"' + b"x" * 200 + b'","notification_id":"n-1"}'

    def encode() -> bytes:
        return WebPusher(sub).encode(payload, "aes128gcm")["body"]

    async def inline() -> None:
        encode()

    async def threaded() -> None:
        await asyncio.to_thread(encode)

    for _ in range(2):  # alternating, so a change in the machine's load shows
        await run("inline", args.n, args.concurrency, inline)
        await run("to_thread", args.n, args.concurrency, threaded)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
