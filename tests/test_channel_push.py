"""PushChannel over real HTTP against tests/push_service.py, a push service peer that
decrypts every payload and verifies VAPID; and the VAPID key helpers of channels/vapid.py."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from domain.delivery import Message, PermanentError, Sent, TransientError
from channels.push import PushChannel, retry_after_seconds
from channels.vapid import generate_vapid_keys, public_key_for
from tests.notify_e2e import push  # noqa: F401  (fixture)
from hub.adapters.outgoing import OutgoingPolicy
from tests.push_service import PushService


PRIVATE, PUBLIC = generate_vapid_keys()
OTHER_PRIVATE, OTHER_PUBLIC = generate_vapid_keys()
SUBJECT = "mailto:ops@example.com"
URL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.fixture
async def channels():
    """make(...) builds a PushChannel; all are closed after the test."""
    made = []

    def make(private_key: str = PRIVATE, subject: str = SUBJECT, timeout_s: float = 2.0, **kw) -> PushChannel:
        kw.setdefault("policy", OutgoingPolicy(allowed_hosts=("127.0.0.1",)))  # the local push service
        made.append(PushChannel(private_key, subject, timeout_s, **kw))
        return made[-1]

    yield make
    for channel in made:
        await channel.close()


@pytest.fixture
def channel(channels):
    return channels()


def message(subscription, **fields) -> Message:
    fields.setdefault("content", {"title": "Order shipped", "body": "Your order #42 is on its way ✓"})
    return Message(notification_id="n-1", user_id="u-1", address=subscription,
                   data={"order_id": "42", "kind": "order.shipped"}, **fields)


def vapid_k(authorization: str) -> str:
    return dict(p.strip().split("=", 1) for p in authorization.split(" ", 1)[1].split(","))["k"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Delivery ---------------------------------------------------------------------------

async def test_payload_is_encrypted_for_the_subscription_and_headers_follow_rfc_8030(push, channel):
    subscription = push.new_subscription(application_server_key=PUBLIC)
    sent = await channel.send(message(subscription, priority="normal", ttl_s=3600, topic="order-42"))

    assert isinstance(sent, Sent)
    (got,) = await push.wait_for(1)
    assert sent.provider_id is None  # the service's Location header is not ours to show users
    assert got["subscription"] == subscription["endpoint"].rsplit("/", 1)[1]
    assert got["payload"] == {
        "id": "n-1", "title": "Order shipped", "body": "Your order #42 is on its way ✓",
        "data": {"order_id": "42", "kind": "order.shipped"}, "priority": "normal",
    }
    headers = got["headers"]
    assert headers["TTL"] == "3600"
    assert headers["Urgency"] == "normal"
    assert headers["Topic"] == "order-42"
    assert headers["Content-Encoding"] == "aes128gcm"
    assert headers["Authorization"].startswith("vapid t=")
    assert vapid_k(headers["Authorization"]) == PUBLIC
    claims = got["claims"]
    assert claims["aud"] == push.origin
    assert claims["sub"] == SUBJECT
    assert 11 * 3600 < claims["exp"] - time.time() <= 12 * 3600


async def test_ttl_is_sent_explicitly_and_defaults_to_the_message_ttl(push, channel):
    await channel.send(message(push.new_subscription()))  # Message's default TTL: a day
    await channel.send(message(push.new_subscription(), ttl_s=0))  # asked for: now or never
    first, second = await push.wait_for(2)
    assert first["headers"]["TTL"] == "86400"
    assert second["headers"]["TTL"] == "0"
    assert first["headers"]["Topic"] is None  # no topic: no header


@pytest.mark.parametrize("priority, urgency", [
    ("low", "low"), ("normal", "normal"), ("high", "high"), ("urgent", "high"),
])
async def test_urgency_follows_priority(push, channel, priority, urgency):
    await channel.send(message(push.new_subscription(), priority=priority))
    (got,) = await push.wait_for(1)
    assert got["headers"]["Urgency"] == urgency
    assert got["payload"]["priority"] == priority


async def test_a_topic_outside_the_url_safe_alphabet_is_hashed_to_32_characters(push, channel):
    topic = "order:42/status updated"
    await channel.send(message(push.new_subscription(), topic=topic))
    await channel.send(message(push.new_subscription(), topic=topic))
    await channel.send(message(push.new_subscription(), topic="x" * 33))  # too long
    first, second, third = await push.wait_for(3)
    expected = base64.urlsafe_b64encode(hashlib.sha256(topic.encode()).digest()).decode()[:32]
    assert first["headers"]["Topic"] == second["headers"]["Topic"] == expected
    assert len(third["headers"]["Topic"]) == 32 and set(third["headers"]["Topic"]) <= URL_SAFE
    assert third["headers"]["Topic"] != "x" * 32  # hashed, not cut


async def test_a_subject_without_a_scheme_becomes_mailto(push, channels):
    await channels(subject="ops@example.com").send(message(push.new_subscription()))
    (got,) = await push.wait_for(1)
    assert got["claims"]["sub"] == "mailto:ops@example.com"


def test_a_subject_py_vapid_would_refuse_fails_at_construction(channels):
    with pytest.raises(ValueError, match="VAPID subject"):
        channels(subject="mailto:nobody")


# VAPID ------------------------------------------------------------------------------

async def test_vapid_from_another_key_is_refused_by_the_peer(push, channels):
    subscription = push.new_subscription(application_server_key=PUBLIC)
    with pytest.raises(PermanentError) as info:
        await channels(OTHER_PRIVATE).send(message(subscription))
    assert info.value.reason == "push_rejected" and not info.value.gone
    assert push.refused == [{"subscription": subscription["endpoint"].rsplit("/", 1)[1],
                             "status": 403, "reason": "key_mismatch"}]
    assert push.received == []
    await channels(PRIVATE).send(message(subscription))
    await push.wait_for(1)


async def test_an_expired_vapid_token_is_refused_by_the_peer(push, channels):
    long_ago = time.time() - 13 * 3600
    with pytest.raises(PermanentError) as info:
        await channels(clock=lambda: long_ago).send(message(push.new_subscription()))
    assert info.value.reason == "push_rejected"
    assert [r["reason"] for r in push.refused] == ["bad_exp"]


def test_the_peer_refuses_forged_or_misaddressed_vapid(push, channels):
    channel = channels()
    good = channel.vapid_headers(push.origin)["Authorization"]
    assert push.check_vapid(good, PUBLIC)[0] == 0
    # The same token claiming another key: the signature does not verify.
    forged = good.replace(f"k={PUBLIC}", f"k={OTHER_PUBLIC}")
    assert push.check_vapid(forged, None)[:2] == (401, "bad_signature")
    # A token for another push service.
    elsewhere = channel.vapid_headers("https://push.example.net")["Authorization"]
    assert push.check_vapid(elsewhere, None)[:2] == (401, "wrong_aud")
    assert push.check_vapid(None, None)[:2] == (401, "no_authorization")
    assert push.check_vapid("WebPush abc.def.ghi", None)[:2] == (401, "not_vapid")


async def test_vapid_headers_are_signed_once_per_origin_and_refreshed_before_expiry(push, channels, monkeypatch):
    other_peer = PushService()
    await other_peer.start()
    try:
        now = [time.time()]
        channel = channels(clock=lambda: now[0])
        signed = []
        sign = channel._vapid.sign
        monkeypatch.setattr(channel._vapid, "sign", lambda claims: signed.append(claims["aud"]) or sign(claims))

        for _ in range(3):
            await channel.send(message(push.new_subscription()))
        await channel.send(message(other_peer.new_subscription()))
        now[0] += 5 * 3600  # 7 h left on the tokens: still reused
        await channel.send(message(push.new_subscription()))
        now[0] += 2 * 3600  # 5 h left: signed again
        await channel.send(message(push.new_subscription()))

        received = await push.wait_for(5)
        await other_peer.wait_for(1)
        assert signed == [push.origin, other_peer.origin, push.origin]
        auths = [r["headers"]["Authorization"] for r in received]
        assert len(set(auths[:4])) == 1  # ECDSA signatures are randomised: equal means reused
        assert auths[4] != auths[0]
        assert received[4]["claims"]["exp"] == int(now[0]) + 12 * 3600
        assert other_peer.received[0]["claims"]["aud"] == other_peer.origin
    finally:
        await other_peer.stop()


# Failures ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [410, 404])
async def test_a_dead_subscription_is_permanent_and_gone(push, channel, status):
    subscription = push.new_subscription()
    push.gone(subscription, status)
    with pytest.raises(PermanentError) as info:
        await channel.send(message(subscription))
    assert info.value.reason == "subscription_gone"
    assert info.value.gone


async def test_an_unknown_subscription_is_gone(push, channel):
    subscription = push.new_subscription()
    subscription["endpoint"] += "-unknown"
    with pytest.raises(PermanentError) as info:
        await channel.send(message(subscription))
    assert (info.value.reason, info.value.gone) == ("subscription_gone", True)


@pytest.mark.parametrize("status, reason", [(500, "push_5xx"), (503, "push_5xx"), (599, "push_5xx"), (429, "push_429")])
async def test_server_errors_and_rate_limits_are_transient(push, channel, status, reason):
    subscription = push.new_subscription()
    push.fail_next(status)
    with pytest.raises(TransientError) as info:
        await channel.send(message(subscription))
    assert info.value.reason == reason
    await channel.send(message(subscription))  # the next attempt goes through
    await push.wait_for(1)


@pytest.mark.parametrize("header, seconds", [(None, None), ("120", 120.0), ("0", 0.0), ("soon", None)])
async def test_a_rate_limit_carries_the_services_retry_after(push, channel, header, seconds):
    subscription = push.new_subscription()
    push.fail_next(429, retry_after=header)
    with pytest.raises(TransientError) as info:
        await channel.send(message(subscription))
    assert (info.value.reason, info.value.retry_after_s) == ("push_429", seconds)


def test_retry_after_as_an_http_date():
    now = datetime(2026, 11, 23, 20, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("Mon, 23 Nov 2026 20:05:00 GMT", now) == 300.0
    assert retry_after_seconds("Mon, 23 Nov 2026 19:55:00 GMT", now) == 0.0  # already past
    assert retry_after_seconds("Monday, yesterday", now) is None


async def test_a_payload_too_large_is_permanent_but_not_gone(push, channel):
    subscription = push.new_subscription()
    push.fail_next(413)
    with pytest.raises(PermanentError) as info:
        await channel.send(message(subscription))
    assert (info.value.reason, info.value.gone) == ("push_rejected", False)
    # And for real: the peer, like push services, takes at most 4096 bytes.
    with pytest.raises(PermanentError) as info:
        await channel.send(message(subscription, content={"title": "t", "body": "b" * 5000}))
    assert (info.value.reason, info.value.gone) == ("push_rejected", False)
    assert [r["status"] for r in push.refused] == [413, 413]


async def test_a_stalled_push_service_times_out_as_transient(push, channels):
    channel = channels(timeout_s=0.5)
    push.stall()
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        await channel.send(message(push.new_subscription()))
    elapsed = time.monotonic() - started
    assert info.value.reason == "timeout"
    assert 0.4 < elapsed < 2.0, elapsed


async def test_an_unreachable_push_service_is_transient(channel):
    subscription = PushService().new_subscription()  # never started
    subscription["endpoint"] = f"http://127.0.0.1:{free_port()}/push/x"
    with pytest.raises(TransientError) as info:
        await channel.send(message(subscription))
    assert info.value.reason == "unreachable"


def _spoil(subscription: dict, how: str):
    if how == "not_a_dict":
        return "https://push.example.com/x"
    if how == "no_keys":
        del subscription["keys"]
    elif how == "p256dh_off_the_curve":
        subscription["keys"]["p256dh"] = base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).decode().rstrip("=")
    elif how == "p256dh_short":
        subscription["keys"]["p256dh"] = subscription["keys"]["p256dh"][:40]
    elif how == "p256dh_not_base64":
        subscription["keys"]["p256dh"] = "not base64 at all!"
    elif how == "auth_short":
        subscription["keys"]["auth"] = "AAAA"
    elif how == "endpoint_not_http":
        subscription["endpoint"] = "ftp://push.example.com/x"
    return subscription


@pytest.mark.parametrize("how", ["not_a_dict", "no_keys", "p256dh_off_the_curve", "p256dh_short",
                                 "p256dh_not_base64", "auth_short", "endpoint_not_http"])
async def test_an_invalid_subscription_is_permanent_and_gone_without_a_request(push, channel, how):
    with pytest.raises(PermanentError) as info:
        await channel.send(message(_spoil(push.new_subscription(), how)))
    assert (info.value.reason, info.value.gone) == ("bad_subscription", True)
    assert push.received == [] and push.refused == []


async def test_one_session_is_shared_and_closed(push, channel):
    await channel.send(message(push.new_subscription()))
    client = channel._client
    await channel.send(message(push.new_subscription()))
    assert channel._client is client and not client.is_closed
    await channel.close()
    assert client.is_closed


# VAPID keys -------------------------------------------------------------------------

def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_generated_keys_round_trip_and_have_browser_formats():
    private, public = generate_vapid_keys()
    assert "=" not in private + public
    assert len(_b64(private)) == 32
    raw_public = _b64(public)
    assert len(raw_public) == 65 and raw_public[0] == 4
    assert public_key_for(private) == public
    assert generate_vapid_keys()[0] != private
    # py_vapid, which signs, reads the same key the same way.
    vapid_public = Vapid.from_string(private).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert vapid_public == raw_public


def test_public_key_for_accepts_pem_and_der():
    key = ec.generate_private_key(ec.SECP256R1())
    expected = base64.urlsafe_b64encode(key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)).decode().rstrip("=")
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    sec1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    assert public_key_for(pkcs8) == expected
    assert public_key_for(sec1) == expected
    assert public_key_for(pkcs8.replace("\n", "\\n")) == expected  # a PEM squeezed into one env line
    assert public_key_for(base64.urlsafe_b64encode(der).decode().rstrip("=")) == expected
    assert public_key_for(base64.b64encode(der).decode()) == expected


@pytest.mark.parametrize("bad", [
    "", "not a key", base64.urlsafe_b64encode(b"\x00" * 32).decode(),  # zero is no scalar
    ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
])
def test_public_key_for_refuses_what_is_not_a_p256_private_key(bad):
    with pytest.raises(ValueError) as info:
        public_key_for(bad)
    assert "VAPID private key" in str(info.value)
    assert not bad or bad not in str(info.value)


async def test_a_pem_private_key_signs_for_its_public_key(push, channels):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = public_key_for(pem)
    await channels(pem).send(message(push.new_subscription(application_server_key=public)))
    (got,) = await push.wait_for(1)
    assert vapid_k(got["headers"]["Authorization"]) == public
