"""Admin takeover by pre-registration, against the real process (issue 12, CONTRACT §5):
someone registered HUB_ADMIN_EMAIL before the operator started the hub with it. `python
run.py` must refuse with one line naming the setting and exit code 2, and leave the
squatter's account a customer.

The account must outlive a process, so the store is a SecantusDB server (a MongoDB
wire-protocol server, run only as a separate test process) on a free port; the hub's
Kafka is its bundled broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pymongo import MongoClient

from tests.test_process import ROOT, free_port, hub_environ

pytestmark = pytest.mark.slow  # starts processes of its own: not in `make test-fast`

SECANTUS = Path(sys.executable).with_name("secantusd-py")


@pytest.fixture
def mongodb_uri(tmp_path):
    port = free_port()
    server = subprocess.Popen([str(SECANTUS), "--host", "127.0.0.1", "--port", str(port), "--storage-path",
                               str(tmp_path / "db"), "--log-level", "WARNING"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with MongoClient(uri, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("SecantusDB did not start")
                time.sleep(0.2)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def test_run_py_refuses_to_promote_a_pre_registered_admin_email(mongodb_uri):
    database = f"hub_squat_{uuid.uuid4().hex[:8]}"
    squatter = {"_id": uuid.uuid4().hex, "email": "boss@example.com", "password_hash": "the squatter's",
                "roles": ["customer"], "name": "Squatter", "created_at": datetime.now(timezone.utc)}
    with MongoClient(mongodb_uri) as client:
        client[database]["users"].insert_one(squatter)

    env = hub_environ(MONGODB_URI=mongodb_uri, MONGODB_DB=database, HUB_PORT=str(free_port()),
                      HUB_ADMIN_EMAIL="boss@example.com", HUB_ADMIN_PASSWORD="operators-password-1",
                      HUB_LOG_LEVEL="WARNING")
    result = subprocess.run([sys.executable, "run.py"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    # Warnings are JSON log lines; the refusal is the one line that is not, and the last.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    plain = [line for line in lines if not line.startswith("{")]
    assert plain == [lines[-1]], result.stderr
    assert plain[0].startswith("hub: configuration error: HUB_ADMIN_EMAIL:"), plain[0]
    assert "operators-password-1" not in result.stderr
    assert all(json.loads(line)["level"] != "ERROR" for line in lines[:-1]), result.stderr  # no traceback

    with MongoClient(mongodb_uri) as client:
        users = list(client[database]["users"].find({}))
        client.drop_database(database)
    assert len(users) == 1 and users[0]["roles"] == ["customer"] and users[0]["password_hash"] == "the squatter's"
