"""How the hub serves its web app (handlers/web.py), and the demo data behind it
(hub/wiring/demo.py: `python run.py --demo` or HUB_DEMO=1). The app itself is tested in a real
browser by tests/test_web_browser.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from config.settings import SettingsError, load_settings
from hub.wiring.demo import DEMO_ADMIN, DEMO_CUSTOMER, PRODUCTS, seed
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.test_process import ROOT, free_port, hub_environ

SHARED_HUB = pytest.mark.asyncio(loop_scope="module")  # tests/conftest.py shared_api

# Files ---------------------------------------------------------------------------------------

@SHARED_HUB
async def test_the_app_is_served_at_the_root_with_its_assets_and_worker(shared_api):
    page = await shared_api.call("GET", "/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/static/js/main.js">' in page.data
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["Cache-Control"] == "no-cache"

    worker = await shared_api.call("GET", "/sw.js")
    assert worker.status == 200
    assert worker.headers["Service-Worker-Allowed"] == "/"
    assert "javascript" in worker.headers["Content-Type"]
    assert "addEventListener('push'" in worker.data

    for path in ("/static/js/main.js", "/static/js/realtime.js", "/static/styles.css", "/static/icon.svg"):
        r = await shared_api.call("GET", path)
        assert r.status == 200, path
        assert r.headers["X-Content-Type-Options"] == "nosniff"


@SHARED_HUB
async def test_missing_files_are_404_and_nothing_outside_static_is_served(shared_api):
    r = await shared_api.call("GET", "/static/nope.js")
    assert r.status == 404 and r.headers["Content-Type"].startswith("text/plain")
    for path in ("/static/../../config/settings.py", "/static/%2e%2e/%2e%2e/config/settings.py"):
        r = await shared_api.call("GET", path)
        assert r.status in (403, 404), (path, r.status)
    # The API keeps its JSON errors.
    r = await shared_api.call("GET", "/api/v1/nothing-here")
    assert r.status == 404 and r.error_code == "route_not_found"


@SHARED_HUB
async def test_the_app_is_no_part_of_the_api_description(shared_api):
    paths = (await shared_api.call("GET", "/api/v1/openapi.json")).data["paths"]
    assert "/" not in paths and "/sw.js" not in paths and not any(p.startswith("/static") for p in paths)


# Demo data ----------------------------------------------------------------------------------

@pytest.fixture
def hub_env(hub_env):
    hub_env["HUB_DEMO"] = "1"
    return hub_env


async def test_demo_seeds_products_and_a_customer_once(api, hub_server):
    r = await api.call("GET", "/api/v1/products?limit=100")
    assert r.data["total"] == len(PRODUCTS)
    by_name = {p["name"]: p for p in r.data["items"]}
    assert by_name["Waxed rain jacket"]["stock"] == 0  # sold out
    tote = by_name["Canvas tote bag"]
    assert 0 < tote["stock"] < tote["low_stock_threshold"]  # low stock
    assert by_name["Stoneware mug"]["price"] == "14.00"

    # HUB_ADMIN_* are set (tests/conftest.py): that admin is the demo's admin.
    assert (await api.call("POST", "/api/v1/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})).status == 200
    assert (await api.call("POST", "/api/v1/auth/login", {"email": DEMO_ADMIN[0], "password": DEMO_ADMIN[1]})).status == 401
    r = await api.call("POST", "/api/v1/auth/login", {"email": DEMO_CUSTOMER[0], "password": DEMO_CUSTOMER[1]})
    assert r.status == 200 and r.data["user"]["roles"] == ["customer"]

    # Again (a restart on a persistent database): nothing twice.
    accounts = await seed(hub_server.hub.settings, hub_server.hub.stores, hub_server.hub.services)
    assert accounts == {"admin": (ADMIN_EMAIL, None), "customer": DEMO_CUSTOMER}
    assert (await api.call("GET", "/api/v1/products?limit=100")).data["total"] == len(PRODUCTS)


async def test_demo_without_admin_settings_creates_its_own_admin(hub_env):
    from hub.wiring.server import HubServer
    from tests.conftest import Api

    del hub_env["HUB_ADMIN_EMAIL"], hub_env["HUB_ADMIN_PASSWORD"]
    server = HubServer(load_settings(hub_env))
    await server.start()
    try:
        api = Api(f"http://127.0.0.1:{server.port}")
        r = await api.call("POST", "/api/v1/auth/login", {"email": DEMO_ADMIN[0], "password": DEMO_ADMIN[1]})
        assert r.status == 200 and "admin" in r.data["user"]["roles"]
    finally:
        await server.stop()


def test_demo_is_refused_in_production():
    env = {"HUB_ENV": "production", "HUB_DEMO": "1", "MONGODB_URI": "mongodb://db:27017", "REDIS_URL": "redis://r:6379",
           "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "JWT_SECRET": "x" * 40}
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert str(caught.value).startswith("HUB_DEMO:")
    result = subprocess.run([sys.executable, "run.py", "--demo"], cwd=ROOT, env=hub_environ(**env),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"hub: configuration error: {caught.value}"]


@pytest.mark.slow  # python run.py --demo, with its own broker
def test_run_py_demo_prints_where_to_sign_in():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "run.py", "--demo"], cwd=ROOT,
                            env=hub_environ(HUB_PORT=str(port), HUB_LOG_LEVEL="WARNING"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("customer:" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.1)
        banner = [line for line in lines if line.startswith("hub: ")]
        assert banner == [
            f"hub: demo shop at http://127.0.0.1:{port}/",
            f"hub:   admin:    {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]}",
            f"hub:   customer: {DEMO_CUSTOMER[0]} / {DEMO_CUSTOMER[1]}",
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        reader.join(5)
