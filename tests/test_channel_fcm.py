"""FcmChannel over HTTPS against tests/fcm_fake.py: the OAuth2 token endpoint verifies
the service account's RS256 assertion; messages:send checks the HTTP v1 message."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from domain.delivery import Message, PermanentError, Sent, TransientError
from channels.fcm import FcmChannel, load_service_account
from hub.adapters.outgoing import OutgoingPolicy
from tests.fcm_fake import FcmFake
from tests.local_tls import LocalCA
from tests.clock import Clock



@pytest.fixture(scope="module")
def ca():
    ca = LocalCA()
    yield ca
    ca.close()


@pytest.fixture
async def fcm(ca):
    fake = FcmFake(ca)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def account_file(tmp_path, fcm):
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(fcm.service_account()))
    return str(path)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def channels(ca, fcm, account_file, clock):
    made = []

    def make(timeout_s: float = 10.0, project: str | None = None) -> FcmChannel:
        policy = OutgoingPolicy(allowed_hosts=(), ca_file=ca.ca_file)
        made.append(FcmChannel(account_file, project, fcm.base_url, policy, timeout_s=timeout_s, clock=clock))
        return made[-1]

    yield make
    for channel in made:
        await channel.close()


@pytest.fixture
def channel(channels):
    return channels()


def message(token: str, **fields) -> Message:
    fields.setdefault("content", {"title": "Order shipped", "body": "Your order #42 is on its way ✓"})
    fields.setdefault("data", {"order_id": "42"})
    return Message(notification_id="n-1", user_id="u-1", address={"token": token}, type="order_shipped", **fields)


# Messages ---------------------------------------------------------------------------

async def test_the_message_follows_http_v1_with_string_data_and_an_apns_block(fcm, channel, clock):
    token = fcm.registration_token()
    sent = await channel.send(message(token, priority="urgent", ttl_s=3600, badge=2,
                                      data={"order_id": 42, "lines": [1, 2], "note": "ok"}))
    (got,) = await fcm.wait_for(1)
    assert isinstance(sent, Sent) and sent.provider_id.startswith("projects/shop-test/messages/")
    msg = got["message"]
    assert msg["token"] == token
    assert msg["notification"] == {"title": "Order shipped", "body": "Your order #42 is on its way ✓"}
    assert msg["data"] == {"order_id": "42", "lines": "[1,2]", "note": "ok", "notification_id": "n-1",
                           "type": "order_shipped"}
    assert msg["android"] == {"priority": "HIGH", "ttl": "3600s", "collapse_key": "order-42"}
    assert msg["apns"] == {"headers": {"apns-priority": "10", "apns-expiration": str(int(clock.now) + 3600),
                                       "apns-collapse-id": "order-42"},
                           "payload": {"aps": {"sound": "default", "badge": 2}}}


@pytest.mark.parametrize("priority, android, apns", [("low", "NORMAL", "5"), ("normal", "NORMAL", "5"),
                                                     ("high", "HIGH", "10")])
async def test_priority_maps_to_android_and_apns(fcm, channel, priority, android, apns):
    await channel.send(message(fcm.registration_token(), priority=priority, ttl_s=0))
    (got,) = await fcm.wait_for(1)
    assert got["message"]["android"]["priority"] == android
    assert got["message"]["android"]["ttl"] == "0s"
    assert got["message"]["apns"]["headers"]["apns-priority"] == apns


async def test_data_too_large_for_fcm_keeps_only_the_notification_id_and_type(fcm, channel):
    await channel.send(message(fcm.registration_token(), data={"notes": "n" * 5000}))
    (got,) = await fcm.wait_for(1)
    assert got["message"]["data"] == {"notification_id": "n-1", "type": "order_shipped"}


async def test_a_payload_over_4_kib_is_refused_before_sending(fcm, channel):
    token = fcm.registration_token()
    with pytest.raises(PermanentError) as info:
        await channel.send(message(token, content={"title": "t", "body": "b" * 5000}))
    assert (info.value.reason, info.value.gone) == ("payload_too_large", False)
    # Data within FCM's own data limit but not beside this text is left out: the text still goes.
    await channel.send(message(token, content={"title": "t", "body": "b" * 2500}, data={"notes": "n" * 2000}))
    (got,) = await fcm.wait_for(1)
    assert got["message"]["notification"] == {"title": "t", "body": "b" * 2500}
    assert got["message"]["data"] == {"notification_id": "n-1", "type": "order_shipped"}


# OAuth token ------------------------------------------------------------------------

async def test_concurrent_sends_share_one_token_refresh(fcm, channel):
    fcm.token_delay_s = 0.3
    tokens = [fcm.registration_token() for _ in range(50)]
    results = await asyncio.gather(*(channel.send(message(t)) for t in tokens))
    assert all(isinstance(r, Sent) for r in results)
    assert fcm.token_requests == 1 and channel.refreshes == 1
    assert len({r["access_token"] for r in fcm.received}) == 1


async def test_the_refresh_does_not_block_the_event_loop(fcm, channel):
    fcm.token_delay_s = 0.6
    gaps, last = [], time.monotonic()

    async def ticker():
        nonlocal last
        while True:
            await asyncio.sleep(0.02)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    task = asyncio.ensure_future(ticker())
    try:
        await channel.send(message(fcm.registration_token()))
    finally:
        task.cancel()
    assert len(gaps) > 10 and max(gaps) < 0.3, max(gaps)


async def test_the_token_is_refreshed_ahead_of_its_expiry(fcm, channel, clock):
    await channel.send(message(fcm.registration_token()))
    clock.tick(3600 - 300 - 5)  # five minutes and a bit before expiry: still good
    await channel.send(message(fcm.registration_token()))
    assert fcm.token_requests == 1
    clock.tick(10)  # inside the last five minutes: a new one first
    await channel.send(message(fcm.registration_token()))
    assert fcm.token_requests == 2
    first, second, third = await fcm.wait_for(3)
    assert first["access_token"] == second["access_token"] != third["access_token"]


async def test_a_short_lived_token_is_refreshed_at_half_its_life(fcm, channel, clock):
    fcm.token_lifetime_s = 120
    await channel.send(message(fcm.registration_token()))
    clock.tick(50)
    await channel.send(message(fcm.registration_token()))
    assert fcm.token_requests == 1
    clock.tick(20)
    await channel.send(message(fcm.registration_token()))
    assert fcm.token_requests == 2


async def test_a_401_forces_one_refresh_and_the_send_is_retried(fcm, channel):
    await channel.send(message(fcm.registration_token()))
    fcm.revoke()
    token = fcm.registration_token()
    await channel.send(message(token))
    assert fcm.token_requests == 2
    assert [a[1] for a in fcm.answered if a[0] == token] == [401, 200]

    fcm.answer(token, 401, times=2)  # refused again with a new token: transient, not a loop
    with pytest.raises(TransientError) as info:
        await channel.send(message(token))
    assert info.value.reason == "fcm_unauthenticated"
    assert fcm.token_requests == 3


async def test_a_token_endpoint_that_refuses_is_transient(fcm, channel):
    fcm.token_status = 403
    with pytest.raises(TransientError) as info:
        await channel.send(message(fcm.registration_token()))
    assert info.value.reason == "oauth_failed"
    assert fcm.received == []


# Errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("status, code, reason", [(404, "UNREGISTERED", "unregistered"),
                                                  (403, "SENDER_ID_MISMATCH", "sender_id_mismatch")])
async def test_a_dead_registration_token_is_permanent_and_gone(fcm, channel, status, code, reason):
    token = fcm.registration_token()
    fcm.answer(token, status, code)
    with pytest.raises(PermanentError) as info:
        await channel.send(message(token))
    assert (info.value.reason, info.value.gone) == (reason, True)


async def test_a_404_that_is_not_fcms_word_keeps_the_token(fcm, channels):
    """A wrong FCM_BASE_URL (here: a path the fake does not serve) must not delete every device."""
    channel = channels()
    channel._url = f"{fcm.base_url}/v1/wrong/path:send"
    with pytest.raises(PermanentError) as info:
        await channel.send(message(fcm.registration_token()))
    assert (info.value.reason, info.value.gone) == ("fcm_rejected", False)


async def test_another_project_is_a_sender_id_mismatch(fcm, channels):
    with pytest.raises(PermanentError) as info:
        await channels(project="someone-else").send(message(fcm.registration_token()))
    assert (info.value.reason, info.value.gone) == ("sender_id_mismatch", True)


@pytest.mark.parametrize("status, code, retry_after, reason, seconds", [
    (429, "QUOTA_EXCEEDED", "3", "fcm_429", 3.0),
    (503, "UNAVAILABLE", None, "fcm_503", None),
    (500, "INTERNAL", "1", "fcm_500", 1.0),
])
async def test_quota_and_server_errors_are_transient_with_retry_after(fcm, channel, status, code, retry_after,
                                                                       reason, seconds):
    token = fcm.registration_token()
    fcm.answer(token, status, code, retry_after=retry_after, times=1)
    with pytest.raises(TransientError) as info:
        await channel.send(message(token))
    assert (info.value.reason, info.value.retry_after_s) == (reason, seconds)
    await channel.send(message(token))
    await fcm.wait_for(1, token=token)


async def test_an_invalid_argument_fails_without_forgetting_the_token(fcm, channel):
    token = fcm.registration_token()
    fcm.answer(token, 400, "INVALID_ARGUMENT")
    with pytest.raises(PermanentError) as info:
        await channel.send(message(token))
    assert (info.value.reason, info.value.gone) == ("fcm_invalid_argument", False)


# The service account ----------------------------------------------------------------

def test_the_service_account_file_is_checked(tmp_path, fcm):
    account = fcm.service_account()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(account))
    assert load_service_account(str(path), None)[1] == "shop-test"
    assert load_service_account(str(path), "other-project")[1] == "other-project"
    for spoil, problem in [(lambda a: a.update(type="authorized_user"), "service_account"),
                           (lambda a: a.pop("token_uri"), "token_uri"),
                           (lambda a: a.pop("project_id"), "project_id"),
                           (lambda a: a.update(private_key="-----BEGIN PRIVATE KEY-----\nxx\n"), "RSA")]:
        broken = dict(account)
        spoil(broken)
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=problem):
            load_service_account(str(path), None)
