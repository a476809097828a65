"""A local Redis Cluster of three masters, from the machine's `redis-server` on free ports,
each node a child process with its own temporary directory (no persistence)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from hub.embedded_broker import _die_with_parent

START_LIMIT_S = 30


class Unavailable(Exception):
    """The cluster could not be started here; the message says why."""


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000, so at most 55535) is free too."""
    while True:
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
            return port
        except OSError:
            continue


def _node(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True, socket_timeout=2)


class LocalCluster:
    def __init__(self, masters: int = 3) -> None:
        self.masters = masters
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.directory: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> str:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if not server or not cli:
            raise Unavailable("redis-server and redis-cli are not installed (apt-get install redis-server)")
        self.directory = tempfile.mkdtemp(prefix="redis-cluster-")
        try:
            for _ in range(self.masters):
                port = _cluster_port()
                node_dir = Path(self.directory) / str(port)
                node_dir.mkdir()
                self.processes.append(subprocess.Popen(
                    [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", "nodes.conf", "--dir", str(node_dir), "--save", "",
                     "--appendonly", "no", "--protected-mode", "no"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent, start_new_session=True))
                self.ports.append(port)
            for port in self.ports:
                self._wait(lambda: _node(port).ping(), f"node {port} did not answer")
            created = subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0",
                 "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if created.returncode != 0:
                raise Unavailable(f"redis-cli --cluster create failed: {created.stdout[-300:]} {created.stderr[-300:]}")
            for port in self.ports:
                self._wait(lambda: _node(port).cluster("info")["cluster_state"] == "ok",
                           f"node {port} did not report cluster_state:ok")
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait(self, probe, failure: str) -> None:
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            try:
                if probe():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(failure)
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
