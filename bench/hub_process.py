"""Starts the hub under test as a child process (`python run.py`), so a benchmark's load
generator does not share the server's event loop. It inherits the environment: set
MONGODB_URI / REDIS_URL / KAFKA_BOOTSTRAP_SERVERS to measure against real services."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
