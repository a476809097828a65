"""A local Redis Cluster for tests: three masters (and optionally a replica each) from the
machine's `redis-server`, on free ports, each in a temporary directory that is removed afterwards.

`LocalRedisCluster.start()` raises `ClusterUnavailable` with the reason when it cannot run
here (no redis-server or redis-cli on PATH, or the cluster does not form).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MASTERS = 3


class ClusterUnavailable(Exception):
    pass


def _free_ports(count: int) -> list[int]:
    """Ports that are free now, and whose cluster-bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


class LocalRedisCluster:
    def __init__(self, replicas: int = 0) -> None:
        self.replicas = replicas
        self.dir: Path | None = None
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen] = []
        self._logs_open: list = []

    @property
    def url(self) -> str:
        """A seed node: the client learns the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 30, attempts: int = 3) -> "LocalRedisCluster":
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if not server or not cli:
            raise ClusterUnavailable("redis-server and redis-cli are not installed (apt-get install redis-server)")
        for attempt in range(attempts):
            self.dir = Path(tempfile.mkdtemp(prefix="hub-redis-cluster-"))
            try:
                self._start(server, cli, timeout)
                return self
            except BaseException as exc:
                self.stop()
                # Most likely another process took one of the free ports meanwhile: new ports.
                if not isinstance(exc, ClusterUnavailable) or attempt == attempts - 1:
                    raise

    def _start(self, server: str, cli: str, timeout: float) -> None:
        self.ports = _free_ports(MASTERS * (1 + self.replicas))
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self._logs_open.append(open(node_dir / "stderr.log", "wb"))
            self.processes.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(node_dir / "nodes.conf"), "--dir", str(node_dir),
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                 # With replicas, a dead master is replaced within seconds; without, a node
                 # slow on a loaded machine is not taken for dead (Redis's default).
                 "--cluster-node-timeout", "1000" if self.replicas else "15000"],
                stdout=subprocess.DEVNULL, stderr=self._logs_open[-1]))
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while subprocess.run([cli, "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    raise ClusterUnavailable(f"redis-server on port {port} did not start: {self._logs()}")
                time.sleep(0.05)
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"], capture_output=True, text=True, timeout=timeout)
        if created.returncode != 0:
            raise ClusterUnavailable(f"redis-cli --cluster create failed: {created.stdout[-500:]} {created.stderr[-500:]}")
        # Formed once every node says so (the slots are spread over the bus a moment later),
        # and every replica has synced (one that never did would not take over).
        while not all(self._state_ok(cli, port) and self._synced(cli, port) for port in self.ports):
            if time.monotonic() > deadline:
                raise ClusterUnavailable("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crashed machine would go."""
        process = self.processes[self.ports.index(port)]
        process.kill()
        process.wait()

    def state_ok(self, port: int) -> bool:
        return self._state_ok(shutil.which("redis-cli"), port)

    def replicated(self, port: int) -> bool:
        """Whether master `port`'s replicas have acknowledged every write it took (replicas
        acknowledge about once a second). Replication is asynchronous: a master killed before
        this holds loses what it had not passed on, as on any Redis Cluster."""
        fields = self._info(shutil.which("redis-cli"), port, "info", "replication")
        offset = int(fields.get("master_repl_offset", "-1"))
        acked = [int(dict(item.split("=") for item in value.split(","))["offset"])
                 for key, value in fields.items() if key.startswith("slave") and key[5:].isdigit()]
        return bool(acked) and min(acked) >= offset

    @staticmethod
    def _info(cli: str, port: int, *command: str) -> dict[str, str]:
        """The `field:value` lines a node answers to `command` (INFO, CLUSTER INFO)."""
        answer = subprocess.run([cli, "-p", str(port), *command], capture_output=True, text=True).stdout
        return dict(line.strip().split(":", 1) for line in answer.splitlines() if ":" in line)

    @classmethod
    def _synced(cls, cli: str, port: int) -> bool:
        fields = cls._info(cli, port, "info", "replication")
        return fields.get("role") == "master" or fields.get("master_link_status") == "up"

    @classmethod
    def _state_ok(cls, cli: str, port: int) -> bool:
        return cls._info(cli, port, "cluster", "info").get("cluster_state") == "ok"

    def _logs(self) -> str:
        return " ".join(p.read_text(errors="replace")[-300:] for p in self.dir.glob("*/stderr.log"))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        for log in self._logs_open:
            log.close()
        self._logs_open = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
