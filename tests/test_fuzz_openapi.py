"""The OpenAPI document drives a fuzzer (schemathesis) against a running hub: no input it
generates, valid or not, gets a 5xx; every answer matches the document; and data the
document allows is accepted (tests/fuzz_checks.py lists the few state-dependent refusals).

Bounded to run in about a minute: HUB_FUZZ_EXAMPLES (default 10) cases per operation and
phase, with a fixed seed so that a failure reproduces (HUB_FUZZ_SEED to explore others).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ROOT, SERVICE_KEY

pytestmark = pytest.mark.slow  # starts processes of its own: not in `make test-fast`

EXAMPLES = os.environ.get("HUB_FUZZ_EXAMPLES", "10")
SEED = os.environ.get("HUB_FUZZ_SEED", "20261129")
RUN_LIMIT_S = 600
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(base: str, method: str, path: str, body=None, token: str | None = None) -> dict:
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def hub_process(hub_env, tmp_path):
    """The hub as its own process (the fuzzer's requests are synchronous), with the test
    session's broker and Redis and limits high enough not to answer 429 to a fuzzer."""
    port = _free_port()
    env = {**os.environ, **hub_env, "HUB_PORT": str(port), "STRIPE_WEBHOOK_SECRET": "whsec_fuzz",
           "HUB_ORDER_RATE_PER_USER": "100000", "HUB_AUTH_RATE_PER_IP": "100000",
           "HUB_AUTH_RATE_PER_ACCOUNT": "100000", "HUB_MAX_UNPAID_ORDERS": "100000"}
    log = open(tmp_path / "hub.log", "wb")
    process = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _call(base, "GET", "/healthz") == {"status": "ok"}:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "hub.log").read_text()
            time.sleep(0.2)
        yield base, tmp_path / "hub.log"
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def test_the_openapi_document_and_the_server_agree_under_fuzzing(hub_process, tmp_path):
    base, hub_log = hub_process
    admin = _call(base, "POST", "/api/v1/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})["access_token"]
    # Real ids, used for half of the ids in paths and bodies, so that fuzzed data reaches past the lookup.
    product = _call(base, "POST", "/api/v1/products", {"name": "Fuzzed", "price": "5.00", "stock": 1000,
                                                      "points_price": 10}, admin)
    order = _call(base, "POST", "/api/v1/orders", {"items": [{"product_id": product["id"], "quantity": 1}]}, admin)
    config = tmp_path / "schemathesis.toml"
    config.write_text(f"""
[auth.openapi.bearer]
bearer = "{admin}"
[auth.openapi.apiKey]
api_key = "{SERVICE_KEY}"
[dictionaries.products]
values = ["{product['id']}"]
[dictionaries.orders]
values = ["{order['id']}"]
[parameters]
"path.product_id" = {{ dictionary = "products", probability = 0.5 }}
"path.order_id" = {{ dictionary = "orders", probability = 0.5 }}
"body.items[*].product_id" = {{ dictionary = "products", probability = 0.5 }}
"body.product_id" = {{ dictionary = "products", probability = 0.5 }}
""")
    command = [SCHEMATHESIS, "--config-file", str(config), "run", f"{base}/api/v1/openapi.json",
               "--checks", "not_a_server_error,response_schema_conformance,schema_valid_data_is_accepted",
               "--phases", "examples,coverage,fuzzing", "--max-examples", EXAMPLES, "--seed", SEED,
               "--exclude-path", "/ws",  # the WebSocket upgrade, not a REST call (tests/test_ws_*.py)
               "--generation-database", "none", "--request-timeout", "10", "--no-color"]
    started = time.monotonic()
    # Run from tmp_path: schemathesis keeps a cache of what it found in its working directory.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_LIMIT_S,
                            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_checks",
                                 "PYTHONPATH": str(ROOT)})
    elapsed = time.monotonic() - started
    summary = [line for line in result.stdout.splitlines() if "generated" in line or "passed" in line
               or "failures" in line]
    print(f"\nfuzzer: {elapsed:.0f} s, {' / '.join(summary)}")
    (tmp_path / "fuzz.txt").write_text(result.stdout)
    if os.environ.get("HUB_FUZZ_REPORT"):  # where to keep the fuzzer's whole report
        Path(os.environ["HUB_FUZZ_REPORT"]).write_text(result.stdout)
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5000:]
    # No request, however odd, made the hub log an unhandled error.
    assert "unhandled error" not in hub_log.read_text(errors="replace"), hub_log.read_text(errors="replace")[-5000:]
