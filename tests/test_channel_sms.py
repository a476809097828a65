"""The SMS channel through the real twilio library, against a Twilio-shaped server
(tests/peers.py) over HTTP."""

from __future__ import annotations

import re
import socket
import time

import pytest

from domain.delivery import Message, PermanentError, TransientError
from channels.sms import SmsChannel
from hub.adapters.outgoing import OutgoingPolicy
from tests.peers import TwilioFake

pytestmark = [
    # aiohttp 3.14 deprecates the BasicAuth / `auth=` the twilio library passes
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning"),
]

SID, TOKEN = "AC" + "1" * 32, "twilio-auth-token"
FROM, TO = "+15005550006", "+14155550123"
CALLBACK = "https://hub.example.com/api/v1/webhooks/twilio"


def message(text: str = "Your code is 123456") -> Message:
    return Message(notification_id="n1", user_id="u1", address=TO, content={"text": text})


@pytest.fixture
async def twilio():
    fake = TwilioFake(SID, TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


def make_channel(base_url: str, *, token: str = TOKEN, callback: str | None = None, timeout_s: float = 2):
    return SmsChannel(SID, token, FROM, base_url, callback, timeout_s, policy=OutgoingPolicy())


@pytest.fixture
async def channel(twilio):
    channel = make_channel(twilio.base_url)
    yield channel
    await channel.close()


async def test_posts_the_message_form_with_basic_auth(channel, twilio):
    sent = await channel.send(message("Caf\u00e9 \u2615 order #1001 shipped & on its way"))

    [request] = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.auth == (SID, TOKEN)
    assert request.status == 201
    assert request.form == {"To": TO, "From": FROM, "Body": "Caf\u00e9 \u2615 order #1001 shipped & on its way"}
    assert "StatusCallback" not in request.form
    assert re.fullmatch(r"SM[0-9a-f]{32}", sent.provider_id)
    assert sent.provider_id == request.response["sid"]
    assert twilio.messages == [request.form]


async def test_status_callback_is_sent_when_configured(twilio):
    channel = make_channel(twilio.base_url, callback=CALLBACK)
    try:
        sent_message = message()
        await channel.send(sent_message)
    finally:
        await channel.close()
    # The notification id rides in the callback URL, so the callback finds its delivery.
    assert twilio.messages[0]["StatusCallback"] == f"{CALLBACK}?n={sent_message.notification_id}"


async def test_environment_edge_and_region_do_not_redirect_the_api_base(twilio, monkeypatch):
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    channel = make_channel(twilio.base_url)
    try:
        await channel.send(message())
    finally:
        await channel.close()
    assert len(twilio.messages) == 1


@pytest.mark.parametrize("status, reason", [(500, "sms_provider_error"), (503, "sms_provider_error"),
                                            (429, "sms_rate_limited")])
async def test_server_errors_and_throttling_are_transient(channel, twilio, status, reason):
    twilio.fail_next(status)
    with pytest.raises(TransientError) as failed:
        await channel.send(message())
    assert failed.value.reason == reason
    assert str(status) in str(failed.value)
    assert twilio.messages == []
    await channel.send(message())  # the session survives an error answer
    assert len(twilio.messages) == 1


async def test_rejected_number_is_permanent_with_twilio_code(channel, twilio):
    twilio.fail_next(400)  # {"code": 21211, "message": "Invalid 'To' Phone Number"}
    with pytest.raises(PermanentError) as failed:
        await channel.send(message())
    assert failed.value.reason == "sms_rejected"
    assert "21211" in str(failed.value)
    assert "Invalid 'To' Phone Number" in str(failed.value)


async def test_new_style_error_body_is_classified_too(channel, twilio):
    # RFC 9457 bodies make the library raise TwilioServiceException instead.
    twilio.fail_next(400, error={"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid 'To'",
                                 "status": 400, "code": 21211, "detail": "bad number"})
    with pytest.raises(PermanentError) as failed:
        await channel.send(message())
    assert "21211" in str(failed.value)


async def test_wrong_credentials_are_permanent_and_never_shown(twilio):
    channel = make_channel(twilio.base_url, token="not-the-token")
    try:
        with pytest.raises(PermanentError) as failed:
            await channel.send(message())
    finally:
        await channel.close()
    assert "401" in str(failed.value) and "20003" in str(failed.value)
    assert "not-the-token" not in str(failed.value) and "not-the-token" not in repr(channel)
    assert twilio.messages == []


async def test_slow_server_times_out_within_the_timeout(twilio):
    channel = make_channel(twilio.base_url, timeout_s=0.5)
    twilio.delay_next(5)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError) as failed:
            await channel.send(message())
        assert failed.value.reason == "timeout"
        assert 0.4 < time.monotonic() - started < 1.5
        await channel.send(message())  # the next request is not stuck behind the slow one
    finally:
        await channel.close()
    assert len(twilio.messages) == 1


async def test_unreachable_api_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = make_channel(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TransientError) as failed:
            await channel.send(message())
    finally:
        await channel.close()
    assert failed.value.reason == "unreachable"


async def test_close_closes_the_http_session(channel, twilio):
    await channel.send(message())
    session = channel._client.http_client._http
    await channel.close()
    assert session.is_closed
