"""Coupon redemptions across real hub processes (CONTRACT v2 §5): `python run.py` twice on one
MongoDB-compatible server (SecantusDB, a separate process: GPL, never imported), one Kafka.
A coupon with 5 redemptions and 30 orders at once from 15 users, half through each process:
exactly 5 are discounted, the rest refused with `exhausted` (or `per_user_limit`), and stock
and counts agree afterwards. Then a cancel through one process gives the use back once."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.checkout_helpers import coupon, coupon_of, order, stock
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, MONGODB_URI
from tests.test_realtime_processes import HubProcess, base_environ

pytestmark = pytest.mark.slow  # starts processes of its own: not in `make test-fast`


@pytest.fixture(scope="module")
def secantus(request):
    """The database both processes share: MONGODB_URI when set, else the session's SecantusDB
    (tests/conftest.py `secantus_uri`)."""
    return MONGODB_URI or request.getfixturevalue("secantus_uri")


@pytest.fixture
def hubs(secantus, kafka_bootstrap):
    env = base_environ(
        HUB_ENV="test", MONGODB_URI=secantus, MONGODB_DB=f"hub_coupons_{uuid.uuid4().hex[:8]}",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC_PREFIX=f"cp{uuid.uuid4().hex[:8]}.",
        HUB_KAFKA_SESSION_TIMEOUT_MS="2000", HUB_KAFKA_FETCH_MAX_WAIT_MS="20",
        JWT_SECRET="coupon-processes-secret-" + "q" * 32, HUB_ADMIN_EMAIL=ADMIN_EMAIL,
        HUB_ADMIN_PASSWORD=ADMIN_PASSWORD, HUB_LOG_LEVEL="WARNING", HUB_SWEEP_INTERVAL_S="3600")
    started = []
    try:
        for name in ("a", "b"):  # one after the other: the first creates the admin and the indexes
            started.append(HubProcess(name, env))
            started[-1].wait_ready()
        yield started
    finally:
        for hub in started:
            hub.stop()


@pytest.mark.timeout(300)
async def test_thirty_orders_on_two_processes_redeem_a_five_use_coupon_five_times(hubs):
    a, b = hubs
    admin = await a.api.admin_token()
    product = await a.api.product(admin, price="20.00", stock=1000)
    c = await coupon(a.api, admin, code=f"P{uuid.uuid4().hex[:8]}".upper(), kind="percent", value="10",
                     max_redemptions=5, per_user_limit=2)
    users = [(await a.api.register())["access_token"] for _ in range(15)]
    # The order-number counter exists before the rush (as after any first order).
    assert (await order(b.api, users[0], (product["id"], 1))).status == 201

    results = await asyncio.gather(*(
        order((a.api, b.api)[i % 2], users[i % 15], (product["id"], 1), coupon_code=c["code"]) for i in range(30)))
    placed = [r for r in results if r.status == 201]
    refused = [r for r in results if r.status != 201]
    assert len(placed) == 5, [(r.status, r.error_code) for r in results]
    assert all((r.data["discount"], r.data["total"]) == ("2.00", "18.00") for r in placed)
    assert all(r.status == 422 and r.data["error"]["details"]["reason"] in ("exhausted", "per_user_limit")
               for r in refused), refused
    assert (await coupon_of(b.api, admin, c["code"]))["redemptions"] == 5
    assert await stock(b.api, product["id"]) == 1000 - 1 - 5

    # A cancel through the other process gives the use back once; then one more order gets it.
    mine = placed[0]
    owner = users[next(i for i in range(30) if results[i] is mine) % 15]
    cancels = await asyncio.gather(*(api.call("POST", f"/api/v1/orders/{mine.data['id']}/cancel", token=owner)
                                     for api in (a.api, b.api, a.api)))
    assert sorted(r.status for r in cancels) == [200, 409, 409], cancels
    assert (await coupon_of(a.api, admin, c["code"]))["redemptions"] == 4
    late = await asyncio.gather(*(order((a.api, b.api)[i % 2], users[14 - i], (product["id"], 1),
                                        coupon_code=c["code"]) for i in range(4)))
    assert sorted(r.status for r in late) == [201, 422, 422, 422], late
    assert (await coupon_of(a.api, admin, c["code"]))["redemptions"] == 5
