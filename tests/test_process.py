"""The real process: `python run.py` as an operator starts it (CONTRACT §1).

Configuration errors exit with code 2 and one stderr line; on embedded defaults the hub
becomes healthy and ready, says that data is lost on exit, and takes its bundled Kafka
broker down with it whether it is stopped with SIGTERM or killed with SIGKILL; an
in-flight request is answered during a SIGTERM shutdown.

Plain synchronous code: subprocess, urllib and raw sockets.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from config.settings import Settings

pytestmark = pytest.mark.slow  # starts processes of its own: not in `make test-fast`

ROOT = Path(__file__).resolve().parent.parent

STARTUP_LIMIT_S = 20
STOP_LIMIT_S = 10
BROKER_GONE_LIMIT_S = 5


# Helpers ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hub_environ(**extra: str) -> dict[str, str]:
    """os.environ without any hub setting inherited from the caller (so the hub runs on
    its embedded defaults), plus `extra`."""
    hub_variables = {field.alias for field in Settings.model_fields.values() if field.alias}
    assert {"MONGODB_URI", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "HUB_PORT"} <= hub_variables
    env = {k: v for k, v in os.environ.items() if k not in hub_variables}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def pid_alive(pid: int) -> bool:
    """True while `pid` is a running process. A zombie counts as gone: it has exited and
    only waits for whoever adopted it to reap it (PID 1 may not do so in a container)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def wait_until_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def is_broker(pid: int) -> bool:
    try:
        return b"--listener-url" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class HubProcess:
    """`python run.py` with stderr (JSON log lines) and stdout drained by threads."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = int(env["HUB_PORT"])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "run.py"], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, errors="replace",
        )
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr_lines), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout_lines), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.broker_pid: int | None = None

    def _drain(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> list[dict]:
        records = []
        for line in list(self.stderr_lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_lines[-60:])

    def wait_for_log(self, message: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for record in self.logs():
                    if record.get("message") == message:
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not any(t.is_alive() for t in self._threads)):
                    pytest.fail(f"no log line {message!r} within {timeout} s; stderr:\n{self.stderr_text()}")
                self._changed.wait(min(remaining, 0.2))

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_healthy(self, limit: float = STARTUP_LIMIT_S) -> float:
        """Poll GET /healthz until 200; the seconds it took since the process started."""
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"hub exited with code {self.proc.returncode} during start-up; stderr:\n{self.stderr_text()}")
            try:
                status, body = self.get("/healthz", timeout=1)
                if status == 200:
                    assert json.loads(body) == {"status": "ok"}
                    return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
                pass
            if time.monotonic() - started > limit:
                pytest.fail(f"/healthz not 200 within {limit} s; stderr:\n{self.stderr_text()}")
            time.sleep(0.05)

    def find_broker_pid(self) -> int:
        record = self.wait_for_log("embedded Kafka broker started", timeout=5)
        self.broker_pid = int(record["pid"])
        return self.broker_pid

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        # A test that failed half-way must not leave the broker it started behind.
        if self.broker_pid is not None and pid_alive(self.broker_pid) and is_broker(self.broker_pid):
            try:
                os.kill(self.broker_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for thread in self._threads:
            thread.join(5)


@contextmanager
def running_hub(**extra: str):
    hub = HubProcess(hub_environ(HUB_PORT=str(free_port()), HUB_LOG_LEVEL="INFO", **extra))
    try:
        yield hub
    finally:
        hub.cleanup()


# Configuration errors -----------------------------------------------------------------
@pytest.mark.parametrize("extra, variable", [
    ({"HUB_PORT": "abc"}, "HUB_PORT"),
    ({"HUB_ENV": "production"}, "MONGODB_URI"),
], ids=["bad-port", "production-with-nothing-else"])
def test_bad_settings_exit_2_with_one_line(extra, variable):
    result = subprocess.run(
        [sys.executable, "run.py"], cwd=ROOT, env=hub_environ(HUB_LOG_LEVEL="INFO", **extra),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].strip()
    assert variable in lines[0], lines[0]


# Embedded defaults: start, ready, stop ---------------------------------------------------
def test_embedded_defaults_start_ready_and_sigterm_stops_hub_and_broker():
    with running_hub() as hub:
        elapsed = hub.wait_healthy()
        print(f"\nstart-up to /healthz 200: {elapsed:.2f} s")

        status, body = hub.get("/readyz")
        assert status == 200, body
        assert json.loads(body) == {"mongo": "up", "redis": "up", "kafka": "up"}

        messages = [str(record.get("message", "")) for record in hub.logs()]
        assert any("data is lost on exit" in m for m in messages), hub.stderr_text()

        broker = hub.find_broker_pid()
        assert pid_alive(broker) and is_broker(broker)
        assert parent_pid(broker) == hub.pid, "the broker should be the hub's child"

        hub.proc.send_signal(signal.SIGTERM)
        try:
            code = hub.proc.wait(STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hub still running {STOP_LIMIT_S} s after SIGTERM; stderr:\n{hub.stderr_text()}")
        assert code == 0, hub.stderr_text()
        assert wait_until_gone(broker, BROKER_GONE_LIMIT_S), f"broker {broker} outlived the hub"
        hub.wait_for_log("embedded Kafka broker stopped", timeout=2)
        hub.wait_for_log("hub stopped", timeout=2)


def test_sigkilled_hub_takes_its_broker_along():
    with running_hub() as hub:
        hub.wait_healthy()
        broker = hub.find_broker_pid()
        assert pid_alive(broker) and is_broker(broker)

        hub.proc.kill()
        assert hub.proc.wait(STOP_LIMIT_S) == -signal.SIGKILL
        # No orderly stop ran: only PR_SET_PDEATHSIG can end the broker now.
        assert wait_until_gone(broker, BROKER_GONE_LIMIT_S), f"broker {broker} outlived a SIGKILLed hub"


# Shutdown drains in-flight requests ------------------------------------------------------
def _read_until(sock: socket.socket, marker: bytes, limit_s: float) -> bytes:
    sock.settimeout(limit_s)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_in_flight_request_is_answered_during_sigterm_shutdown():
    """The request is held open by the client: headers with `Expect: 100-continue`, and the
    body only after SIGTERM. Tornado sends `100 Continue` after the handler's prepare()
    ran, so at that point the request is deterministically in flight."""
    with running_hub() as hub:
        hub.wait_healthy()
        email = f"drain-{uuid.uuid4().hex[:10]}@example.com"
        body = json.dumps({"email": email, "password": "correct-horse"}).encode()
        head = (
            "POST /api/v1/auth/register HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{hub.port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n"
            "Connection: close\r\n\r\n"
        ).encode()

        with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as sock:
            sock.sendall(head)
            interim = _read_until(sock, b"\r\n\r\n", 5)
            assert interim.startswith(b"HTTP/1.1 100"), interim

            hub.proc.send_signal(signal.SIGTERM)
            hub.wait_for_log("shutting down", timeout=5)

            # No new connections once shutdown began...
            deadline = time.monotonic() + 3
            refused = False
            while time.monotonic() < deadline and not refused:
                try:
                    socket.create_connection(("127.0.0.1", hub.port), timeout=1).close()
                    time.sleep(0.05)
                except ConnectionRefusedError:
                    refused = True
                except ConnectionResetError:
                    pass  # was in the accept backlog as the listener closed; try again
            assert refused, "the hub still accepts connections after SIGTERM"
            # ...but the one in flight is still waited for.
            assert hub.proc.poll() is None, hub.stderr_text()

            sock.sendall(body)
            response = _read_until(sock, b"\0never\0", 10)  # Connection: close: read to EOF

        status_line, _, rest = response.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 201"), response[:500]
        payload = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert payload["user"]["email"] == email
        assert payload["access_token"]

        assert hub.proc.wait(STOP_LIMIT_S) == 0, hub.stderr_text()
