"""SecantusDB (a MongoDB wire-protocol server on WiredTiger, from requirements-dev) run as a
child process on a free port with a temporary data directory, the way the hub runs its
bundled Kafka broker. GPL-licensed: only ever started as a separate process, never imported.

Tied to the test process with PR_SET_PDEATHSIG, so a killed test run leaves no server behind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from hub.adapters.embedded_broker import _die_with_parent, _free_port

START_LIMIT_S = 30


class Unavailable(Exception):
    """The server could not be started here; the message says why."""


def executable() -> str | None:
    beside = Path(sys.executable).parent / "secantusd-py"  # the virtualenv's, when not on PATH
    return str(beside) if beside.exists() else shutil.which("secantusd-py")


class SecantusServer:
    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.directory: str | None = None
        self.uri = ""

    def start(self) -> str:
        binary = executable()
        if binary is None:
            raise Unavailable("secantusd-py not found: pip install -r requirements-dev.txt (SecantusDB)")
        self.directory = tempfile.mkdtemp(prefix="secantus-")
        port = _free_port()
        self.log = open(Path(self.directory) / "server.log", "wb")
        # cwd: the server reads ./secantusd.toml when there is one; the temporary directory has none.
        self.process = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(Path(self.directory) / "data"),
             "--log-level", "WARNING"],
            cwd=self.directory, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent, start_new_session=True)
        self.uri = f"mongodb://127.0.0.1:{port}/"  # it reports a one-node replica set: discovered like one
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            if self.process.poll() is not None:
                output = self.output()
                self.stop()
                raise Unavailable(f"secantusd-py exited with code {self.process.returncode}: {output[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pass
                client = MongoClient(self.uri, serverSelectionTimeoutMS=2000)
                try:
                    client.admin.command("ping")
                finally:
                    client.close()
                return self.uri
            except (OSError, PyMongoError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise Unavailable(f"secantusd-py did not answer within {START_LIMIT_S} s") from None
                time.sleep(0.1)

    def output(self) -> str:
        try:
            return (Path(self.directory) / "server.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.directory is not None:
            self.log.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
