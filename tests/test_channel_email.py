"""The email channel over real SMTP, against a local aiosmtpd server (tests/peers.py)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from domain.delivery import Message, PermanentError, TransientError
from channels.email import POOL_SIZE, EmailChannel
from tests.notify_e2e import sink  # noqa: F401  (fixture)
from tests.peers import SmtpSink


TO = "ann@example.org"
HTML = ('<!doctype html><html><body><p>Hi <b>Ann</b> &amp; welcome &mdash; caf\u00e9 \u2713</p>'
        '<a href="https://shop.example/o/1?a=1&amp;b=2">Order</a>'
        # a line far over SMTP's 998-octet limit must survive the transfer encoding
        + '<p class="x">' + "long line " * 200 + "</p>"
        + "\n.\n.leading dot\n</body></html>")


def message(address: str = TO, **content) -> Message:
    content = {"subject": "Your order shipped \u2014 #1001", "text": "Hi Ann,\nyour order shipped.", "html": HTML,
               **content}
    return Message(notification_id="n1", user_id="u1", address=address, content=content)


@pytest.fixture
async def channel(sink):
    channel = EmailChannel(sink.url, "Shop <shop@example.com>", timeout_s=2)
    yield channel
    await channel.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_delivers_text_and_html_as_multipart_alternative(channel, sink):
    sent = await channel.send(message())

    [mail] = await sink.wait_for(1)
    assert mail.rcpt_tos == [TO]
    assert mail.mail_from == "shop@example.com"
    assert mail["To"] == TO
    assert mail["From"] == "Shop <shop@example.com>"
    assert mail["Subject"] == "Your order shipped \u2014 #1001"
    assert mail["Date"]
    assert sent.provider_id and mail["Message-ID"] == sent.provider_id
    assert sent.provider_id.endswith("@example.com>")
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert text.get_content().rstrip("\n") == "Hi Ann,\nyour order shipped."
    assert html.get_content_type() == "text/html"
    assert html.get_content().rstrip("\n") == HTML  # byte for byte, long line and dots included


async def test_sender_defaults_to_hub_at_localhost(sink):
    channel = EmailChannel(sink.url, None, timeout_s=2)
    try:
        await channel.send(message())
    finally:
        await channel.close()
    [mail] = await sink.wait_for(1)
    assert mail["From"] == "hub@localhost"
    assert mail.mail_from == "hub@localhost"


async def test_text_only_message_is_plain(channel, sink):
    await channel.send(message(html=""))
    [mail] = await sink.wait_for(1)
    assert mail.get_content_type() == "text/plain"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_logs_in_with_the_url_credentials():
    sink = SmtpSink(credentials=("mailer", "p@ss word")).start()
    try:
        good = EmailChannel(f"smtp://mailer:p%40ss%20word@127.0.0.1:{sink.port}", None, timeout_s=2)
        bad = EmailChannel(f"smtp://mailer:wrong@127.0.0.1:{sink.port}", None, timeout_s=2)
        try:
            await good.send(message())
            with pytest.raises(PermanentError) as refused:  # 535 authentication failed
                await bad.send(message())
        finally:
            await good.close()
            await bad.close()
        assert sink.logins == ["mailer"]
        assert len(sink.messages) == 1
        assert "535" in str(refused.value)
        assert "wrong" not in str(refused.value) and "wrong" not in repr(bad)
    finally:
        sink.stop()


def test_url_forms():
    tls = EmailChannel("smtps://u:secret@mail.example.com", None, timeout_s=1)
    assert (tls.use_tls, tls.host, tls.port) == (True, "mail.example.com", 465)
    plain = EmailChannel("smtp://mail.example.com:2525", None, timeout_s=1)
    assert (plain.use_tls, plain.port) == (False, 2525)
    assert "secret" not in repr(tls)
    with pytest.raises(ValueError) as bad:
        EmailChannel("http://u:secret@mail.example.com", None, timeout_s=1)
    assert "secret" not in str(bad.value)


async def test_4xx_on_rcpt_is_transient_and_keeps_the_connection(channel, sink):
    sink.fail_next(451)
    with pytest.raises(TransientError) as failed:
        await channel.send(message())
    assert failed.value.reason == "smtp_4xx"
    assert "451" in str(failed.value)
    assert sink.messages == []

    await channel.send(message())  # the refusal did not spoil the session
    await sink.wait_for(1)
    assert sink.connections == 1


@pytest.mark.parametrize("code, dead", [(550, True), (551, True), (553, True), (552, False), (554, False)])
async def test_5xx_on_rcpt_is_permanent_and_a_hard_bounce_marks_the_address_dead(channel, sink, code, dead):
    sink.fail_next(code)
    with pytest.raises(PermanentError) as failed:
        await channel.send(message())
    assert failed.value.reason == "recipient_rejected"
    assert str(code) in str(failed.value)
    assert failed.value.gone is dead
    await asyncio.sleep(0.1)
    assert sink.messages == []


@pytest.mark.parametrize("code, error", [(452, TransientError), (554, PermanentError)])
async def test_reply_to_data_is_classified_by_its_code(channel, sink, code, error):
    sink.fail_next(code, command="DATA")
    with pytest.raises(error) as failed:
        await channel.send(message())
    assert type(failed.value) is error
    assert str(code) in str(failed.value)


async def test_unreachable_server_is_transient():
    channel = EmailChannel(f"smtp://127.0.0.1:{free_port()}", None, timeout_s=2)
    started = time.monotonic()
    with pytest.raises(TransientError) as failed:
        await channel.send(message())
    assert failed.value.reason == "unreachable"
    assert time.monotonic() - started < 1
    await channel.close()


async def test_server_that_never_greets_times_out():
    # The kernel completes the TCP handshake; nobody ever says "220".
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    channel = EmailChannel(f"smtp://127.0.0.1:{listener.getsockname()[1]}", None, timeout_s=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError) as failed:
            await channel.send(message())
    finally:
        listener.close()
        await channel.close()
    assert failed.value.reason == "timeout"
    assert 0.4 < time.monotonic() - started < 1.5


async def test_stalled_reply_times_out_and_the_next_send_reconnects(sink):
    channel = EmailChannel(sink.url, None, timeout_s=0.5)
    try:
        sink.stall_next(3.0, command="RCPT")
        started = time.monotonic()
        with pytest.raises(TransientError) as failed:
            await channel.send(message())
        assert failed.value.reason == "timeout"
        assert 0.4 < time.monotonic() - started < 1.5

        await channel.send(message())  # a timed-out session is not reused
        await sink.wait_for(1)
        assert sink.connections == 2
    finally:
        await channel.close()


async def test_sends_share_one_connection(channel, sink):
    for i in range(3):
        await channel.send(message(subject=f"n{i}"))
    mails = await sink.wait_for(3)
    assert [m["Subject"] for m in mails] == ["n0", "n1", "n2"]
    assert sink.connections == 1


async def test_concurrent_sends_use_at_most_the_pool_size_in_connections(channel, sink):
    count = 3 * POOL_SIZE
    sent = await asyncio.gather(*(channel.send(message(subject=f"n{i}")) for i in range(count)))
    mails = await sink.wait_for(count)
    assert sorted(m["Subject"] for m in mails) == sorted(f"n{i}" for i in range(count))
    assert len({s.provider_id for s in sent}) == count
    assert 1 < sink.connections <= POOL_SIZE


async def test_connection_the_server_closed_while_idle_is_replaced(channel, sink):
    await channel.send(message())
    sink.disconnect_all()  # e.g. the server's idle timeout
    await asyncio.sleep(0.2)
    await channel.send(message())
    await sink.wait_for(2)
    assert sink.connections == 2


async def test_pooled_connection_dropped_mid_transaction_is_retried_once(channel, sink):
    await channel.send(message(subject="first"))
    sink.drop_next()  # the pooled session dies as the next MAIL goes out
    await channel.send(message(subject="second"))
    mails = await sink.wait_for(2)
    assert [m["Subject"] for m in mails] == ["first", "second"]
    assert sink.connections == 2


async def test_drop_on_a_fresh_connection_is_a_transient_failure(channel, sink):
    sink.drop_next()
    with pytest.raises(TransientError) as failed:
        await channel.send(message())
    assert failed.value.reason == "unreachable"
    assert sink.connections == 1  # no retry: the fresh connection was not stale


async def test_header_injection_is_refused(channel, sink):
    with pytest.raises(PermanentError) as failed:
        await channel.send(message(subject="Hi\r\nBcc: eve@example.org"))
    assert failed.value.reason == "invalid_message"
    with pytest.raises(PermanentError):
        await channel.send(message(address="ann@example.org\r\nBcc: eve@example.org"))
    assert sink.connections == 0


async def test_close_quits_pooled_connections(channel, sink):
    await channel.send(message())
    await channel.close()
    deadline = time.monotonic() + 2
    while any(s.transport is not None for s in sink._sessions) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert all(s.transport is None for s in sink._sessions)
