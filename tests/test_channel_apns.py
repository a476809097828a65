"""ApnsChannel over HTTP/2 + TLS against tests/apns_fake.py, which verifies the ES256
provider token with the key's public half, the headers and the payload."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from channels.apns import ApnsChannel
from domain.delivery import Message, PermanentError, Sent, TransientError
from channels.native_push import post
from tests.apns_fake import ApnsFake
from hub.adapters.outgoing import OutgoingPolicy
from tests.local_tls import LocalCA
from tests.clock import Clock


KEY_ID, TEAM_ID, TOPIC = "KEY1234567", "TEAM123456", "com.example.shop"


@pytest.fixture(scope="module")
def ca():
    ca = LocalCA()
    yield ca
    ca.close()


@pytest.fixture(scope="module")
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def key_file(tmp_path, signing_key):
    path = tmp_path / "AuthKey.p8"
    path.write_bytes(signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def clock():
    return Clock()


async def _fake(ca, signing_key, clock, topic=TOPIC):
    fake = ApnsFake(ca, signing_key.public_key(), key_id=KEY_ID, team_id=TEAM_ID, topic=topic,
                    clock=clock)
    await fake.start()
    return fake


@pytest.fixture
async def apns(ca, signing_key, clock):
    fake = await _fake(ca, signing_key, clock)
    yield fake
    await fake.stop()


@pytest.fixture
async def sandbox(ca, signing_key, clock):
    fake = await _fake(ca, signing_key, clock)
    yield fake
    await fake.stop()


@pytest.fixture
async def channels(ca, key_file, apns, sandbox, clock):
    made = []

    def make(timeout_s: float = 10.0, topic=TOPIC) -> ApnsChannel:
        # No allow-list: the APNs hosts are operator-configured base URLs, trusted by the policy.
        policy = OutgoingPolicy(allowed_hosts=(), ca_file=ca.ca_file)
        made.append(ApnsChannel(key_file, KEY_ID, TEAM_ID, topic, apns.base_url, sandbox.base_url, policy,
                                timeout_s=timeout_s, clock=clock))
        return made[-1]

    yield make
    for channel in made:
        await channel.close()


@pytest.fixture
def channel(channels):
    return channels()


def message(token: str, environment: str = "production", **fields) -> Message:
    fields.setdefault("content", {"title": "Order shipped", "body": "Your order #42 is on its way ✓"})
    fields.setdefault("data", {"order_id": "42"})
    return Message(notification_id="n-1", user_id="u-1", address={"token": token, "environment": environment},
                   type="order_shipped", **fields)


# Requests ---------------------------------------------------------------------------

async def test_headers_and_payload_follow_the_contract_over_http2(apns, channel, clock):
    token = apns.device_token()
    sent = await channel.send(message(token, priority="high", ttl_s=3600, badge=3))

    (got,) = await apns.wait_for(1)
    assert isinstance(sent, Sent) and sent.provider_id == got["apns_id"]
    headers = got["headers"]
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-topic"] == TOPIC
    assert headers["apns-priority"] == "10"
    assert headers["apns-expiration"] == str(int(clock.now) + 3600)
    assert headers["apns-collapse-id"] == "order-42"
    assert got["payload"] == {
        "aps": {"alert": {"title": "Order shipped", "body": "Your order #42 is on its way ✓"}, "badge": 3,
                "sound": "default"},
        "notification_id": "n-1", "type": "order_shipped", "data": {"order_id": "42"},
    }
    # The client really speaks HTTP/2 (httpx falls back to HTTP/1.1 silently otherwise).
    response, _ = await post(channel._client("production"), f"{apns.base_url}/3/device/{token}", b"{}",
                             {"authorization": f"bearer {channel.provider_token()}"}, "APNs")
    assert response.http_version == "HTTP/2"


@pytest.mark.parametrize("priority, expected", [("low", "5"), ("normal", "5"), ("high", "10"), ("urgent", "10")])
async def test_priority_is_10_for_high_and_urgent_else_5(apns, channel, priority, expected):
    await channel.send(message(apns.device_token(), priority=priority))
    (got,) = await apns.wait_for(1)
    assert got["headers"]["apns-priority"] == expected


async def test_no_expiry_means_now_or_never_and_no_entity_means_no_collapse_id(apns, channel):
    await channel.send(message(apns.device_token(), ttl_s=0, data={"points": 10}))
    await channel.send(message(apns.device_token(), data={"product_id": "p" * 80}))
    first, second = await apns.wait_for(2)
    assert first["headers"]["apns-expiration"] == "0"
    assert "apns-collapse-id" not in first["headers"]
    collapse = second["headers"]["apns-collapse-id"]
    assert collapse.startswith("product-") and len(collapse) <= 64


async def test_sandbox_devices_go_to_the_sandbox_host(apns, sandbox, channel):
    await channel.send(message(apns.device_token(), environment="sandbox"))
    await sandbox.wait_for(1)
    assert apns.received == []


async def test_a_payload_over_4_kib_is_refused_before_sending(apns, channel):
    with pytest.raises(PermanentError) as info:
        await channel.send(message(apns.device_token(), content={"title": "t", "body": "b" * 5000}))
    assert (info.value.reason, info.value.gone) == ("payload_too_large", False)
    # Large data alone is left out so the alert still goes.
    await channel.send(message(apns.device_token(), data={"order_id": "42", "notes": "n" * 5000}))
    (got,) = await apns.wait_for(1)
    assert "data" not in got["payload"] and got["payload"]["notification_id"] == "n-1"
    assert apns.answered == [(got["token"], 200, "")]


# Provider token ---------------------------------------------------------------------

async def test_the_provider_token_is_reused_then_renewed_inside_the_hour(apns, channel, clock):
    for _ in range(3):
        await channel.send(message(apns.device_token()))
    clock.tick(44 * 60)
    await channel.send(message(apns.device_token()))
    clock.tick(2 * 60)  # 46 minutes after signing: a new one
    await channel.send(message(apns.device_token()))

    received = await apns.wait_for(5)
    tokens = [r["provider_token"] for r in received]
    assert len(set(tokens[:4])) == 1 and tokens[4] != tokens[0]
    assert channel.tokens_signed == 2
    import jwt
    header = jwt.get_unverified_header(tokens[4])
    claims = jwt.decode(tokens[4], options={"verify_signature": False})
    assert header == {"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}
    assert claims == {"iss": TEAM_ID, "iat": int(clock.now)}


async def test_expired_provider_token_is_renewed_once_and_the_send_retried(apns, channel):
    token = apns.device_token()
    await channel.send(message(apns.device_token()))
    apns.expire_next(1)
    await channel.send(message(token))
    assert channel.tokens_signed == 2
    assert [a for a in apns.answered if a[1] == 403] == [(token, 403, "ExpiredProviderToken")]

    apns.expire_next(2)  # refused again after renewing: transient, not a loop
    with pytest.raises(TransientError) as info:
        await channel.send(message(token))
    assert info.value.reason == "expired_provider_token"
    assert channel.tokens_signed == 3


async def test_a_token_from_a_clock_in_the_future_is_invalid(apns, channels, clock):
    channel = channels()
    channel._clock = lambda: clock.now + 600  # our clock 10 minutes fast
    with pytest.raises(PermanentError) as info:
        await channel.send(message(apns.device_token()))
    assert info.value.reason == "invalid_provider_token"


# Errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("status, apple_reason, reason", [
    (410, "Unregistered", "unregistered"),
    (400, "BadDeviceToken", "bad_device_token"),
    (400, "DeviceTokenNotForTopic", "device_token_not_for_topic"),
    (410, "ExpiredToken", "expired_token"),
])
async def test_a_dead_device_token_is_permanent_and_gone(apns, channel, status, apple_reason, reason):
    token = apns.device_token()
    apns.answer(token, status, apple_reason)
    with pytest.raises(PermanentError) as info:
        await channel.send(message(token))
    assert (info.value.reason, info.value.gone) == (reason, True)


@pytest.mark.parametrize("status, apple_reason, reason", [
    (413, "PayloadTooLarge", "payload_too_large"),
    (400, "BadCollapseId", "bad_collapse_id"),
    (403, "InvalidProviderToken", "invalid_provider_token"),
    (400, "SomethingNew", "apns_rejected"),  # an unknown reason: a bounded label all the same
])
async def test_other_refusals_fail_without_retry_or_forgetting_the_device(apns, channel, status, apple_reason,
                                                                           reason):
    token = apns.device_token()
    apns.answer(token, status, apple_reason)
    with pytest.raises(PermanentError) as info:
        await channel.send(message(token))
    assert (info.value.reason, info.value.gone) == (reason, False)


async def test_a_topic_apple_refuses_fails_without_forgetting_the_device(apns, channels):
    with pytest.raises(PermanentError) as info:
        await channels(topic="com.example.other").send(message(apns.device_token()))
    assert (info.value.reason, info.value.gone) == ("topic_disallowed", False)


@pytest.mark.parametrize("status, apple_reason, retry_after, reason, seconds", [
    (429, "TooManyRequests", "7", "apns_429", 7.0),
    (500, "InternalServerError", None, "apns_500", None),
    (503, "ServiceUnavailable", "2", "apns_503", 2.0),
])
async def test_rate_limits_and_server_errors_are_transient_with_retry_after(apns, channel, status, apple_reason,
                                                                             retry_after, reason, seconds):
    token = apns.device_token()
    apns.answer(token, status, apple_reason, retry_after=retry_after, times=1)
    with pytest.raises(TransientError) as info:
        await channel.send(message(token))
    assert (info.value.reason, info.value.retry_after_s) == (reason, seconds)
    await channel.send(message(token))  # the next attempt goes through
    await apns.wait_for(1, token=token)


async def test_a_goaway_is_retried_on_a_new_connection_a_bounded_number_of_times(apns, channel):
    token = apns.device_token()
    apns.answer(token, "goaway", times=1)
    await channel.send(message(token))
    await apns.wait_for(1, token=token)
    assert apns.goaways == 1 and apns.connections == 2

    apns.answer(token, "goaway", times=50)
    with pytest.raises(TransientError) as info:
        await channel.send(message(token))
    assert info.value.reason == "unreachable"
    # Our first try and two retries; httpcore may itself resend a stream the server
    # declared unprocessed once per try. Bounded either way.
    assert 3 <= apns.goaways - 1 <= 6


async def test_a_slow_apns_times_out_as_transient(apns, channels):
    token = apns.device_token()
    apns.answer(token, 200, delay=3.0, times=1)
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        await channels(timeout_s=0.5).send(message(token))
    assert info.value.reason == "timeout"
    assert time.monotonic() - started < 2.5


# One connection ---------------------------------------------------------------------

async def test_concurrent_sends_share_one_connection_and_one_provider_token(apns, channel):
    tokens = [apns.device_token() for _ in range(200)]
    results = await asyncio.gather(*(channel.send(message(t)) for t in tokens))
    assert all(isinstance(r, Sent) for r in results)
    received = await apns.wait_for(200)
    assert apns.connections == 1
    assert {r["connection"] for r in received} == {1}
    assert len({r["provider_token"] for r in received}) == 1 and channel.tokens_signed == 1


@pytest.mark.timeout(120)
async def test_2000_error_answers_on_one_connection_do_not_stall_the_client(apns, channel):
    token = apns.device_token()
    apns.answer(token, 400, "BadDeviceToken")
    errors = []
    for _ in range(20):  # in waves of 100 in flight, as the dispatcher bounds its concurrency
        errors += await asyncio.wait_for(asyncio.gather(
            *(channel.send(message(token, content={"title": "t", "body": "x" * 1000})) for _ in range(100)),
            return_exceptions=True), timeout=30)
    assert len(errors) == 2000
    assert {type(e).__name__ + ":" + getattr(e, "reason", "") for e in errors} == {"PermanentError:bad_device_token"}
    assert all(isinstance(e, PermanentError) and e.reason == "bad_device_token" for e in errors)
    assert apns.connections == 1
    good = apns.device_token()
    await channel.send(message(good))  # the connection still carries new requests
    await apns.wait_for(1, token=good)


def test_the_fake_refuses_a_token_signed_by_another_key(apns):
    other = ec.generate_private_key(ec.SECP256R1())
    import jwt
    forged = jwt.encode({"iss": TEAM_ID, "iat": int(time.time())}, other, algorithm="ES256", headers={"kid": KEY_ID})
    headers = {":method": "POST", ":path": f"/3/device/{apns.device_token()}", "authorization": f"bearer {forged}",
               "apns-topic": TOPIC, "apns-push-type": "alert", "apns-priority": "5", "apns-expiration": "0"}
    body = json.dumps({"aps": {"alert": {"title": "t", "body": "b"}}}).encode()
    assert apns.check(headers, body)[:2] == (403, "InvalidProviderToken")
    float_iat = jwt.encode({"iss": TEAM_ID, "iat": time.time()}, other, algorithm="ES256", headers={"kid": KEY_ID})
    assert apns.check({**headers, "authorization": f"bearer {float_iat}"}, body)[0] == 403
