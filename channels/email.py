"""Email over SMTP (aiosmtplib), with a small pool of open connections.

SMTP_URL is `smtp://[user:pass@]host:port` (plain, upgraded with STARTTLS when the
server offers it) or `smtps://...` (TLS from the first byte). With `require_tls`
(production), credentials only ever travel over TLS: `smtp://` with a user then insists
on STARTTLS, so a server or a man in the middle that does not offer it gets no password.
Replies are classified as the LESSONS say: 4xx is worth retrying, 5xx is not.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import uuid
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib import (
    SMTPException, SMTPNotSupported, SMTPRecipientsRefused, SMTPResponseException,
    SMTPServerDisconnected, SMTPTimeoutError,
)

from domain.delivery import Channel, Message, PermanentError, Sent, TransientError

log = logging.getLogger(__name__)

POOL_SIZE = 16  # connections open at once; more concurrent sends wait for a free one
DEFAULT_FROM = "hub@localhost"


def _header(value: str) -> str:
    """ASCII as is (folded by RFC 2047 encoding when very long), else RFC 2047 UTF-8."""
    if value.isascii() and len(value) < 900:
        return value
    return Header(value, "utf-8").encode()


def _part(subtype: str, text: str) -> str:
    encoded = base64.encodebytes(text.encode("utf-8")).decode("ascii").replace("\n", "\r\n").rstrip("\r\n")
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            f"{encoded}")


class EmailChannel(Channel):
    name = "email"

    def __init__(self, smtp_url: str, smtp_from: str | None, timeout_s: float, *, require_tls: bool = False) -> None:
        url = urlsplit(smtp_url)
        if url.scheme not in ("smtp", "smtps") or not url.hostname:
            raise ValueError("SMTP_URL must look like smtp://[user:pass@]host:port or smtps://...")
        self.use_tls = url.scheme == "smtps"
        self.host = url.hostname
        self.port = url.port or (465 if self.use_tls else 25)
        self._username = unquote(url.username) if url.username else None
        self._password = unquote(url.password) if url.password is not None else None
        # None: STARTTLS when offered; True: STARTTLS or no session at all.
        self._start_tls = True if require_tls and self._username and not self.use_tls else None
        self.sender = smtp_from or DEFAULT_FROM  # the From header, e.g. "Shop <shop@example.com>"
        self._envelope_from = parseaddr(self.sender)[1] or self.sender
        self._from_header = formataddr(parseaddr(self.sender), "utf-8")  # a non-ASCII name is encoded
        self.timeout_s = timeout_s
        # Message-ID domain from the sender: make_msgid() would otherwise call
        # socket.getfqdn(), a blocking DNS lookup, on every message.
        self._msgid_domain = parseaddr(self.sender)[1].rpartition("@")[2] or "localhost"
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(POOL_SIZE)
        self._local_hostname: str | None = None

    def __repr__(self) -> str:  # never shows the password
        return f"<EmailChannel {'smtps' if self.use_tls else 'smtp'}://{self.host}:{self.port}>"

    async def send(self, message: Message) -> Sent:
        try:
            # Composing is inside: an address that cannot be written in ASCII (UnicodeEncodeError,
            # a ValueError) is a permanent failure of this message, not a crash to be retried.
            mail, message_id = self._compose(message)
            async with self._slots:
                client, reused = await self._checkout()
                try:
                    await self._deliver(client, mail, self._envelope_from, str(message.address))
                except Exception as exc:
                    if not (reused and _stale(exc)):
                        raise
                    # The server had closed this idle connection (idle timeout, restart):
                    # not a delivery failure, so try once more on a fresh connection.
                    log.info("pooled SMTP connection to %s:%s was dead; reconnecting", self.host, self.port)
                    client = await self._connect()
                    await self._deliver(client, mail, self._envelope_from, str(message.address))
        except (SMTPException, OSError, asyncio.TimeoutError, ValueError) as exc:
            raise _classify(exc) from None
        return Sent(provider_id=message_id)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(c) for c in idle))

    # Internals -----------------------------------------------------------------------------

    def _compose(self, message: Message) -> tuple[bytes, str]:
        """The message as bytes, and its Message-ID. Written directly: the email
        package's generators parse and fold every header and cost most of the hub's CPU
        at a few hundred emails per second; this shape (UTF-8, base64 parts) needs none
        of that."""
        content = message.content
        to, subject = str(message.address), content.get("subject", "")
        extra = [f"{name}: {value}" for name, value in message.headers.items()]
        if any(c in value for value in (to, subject, self.sender, *extra) for c in "\r\n"):
            # A line break in a header would let data inject headers: refuse.
            raise PermanentError("invalid_message", "cannot build the email: a header holds a line break")
        message_id = make_msgid(domain=self._msgid_domain)
        headers = [f"From: {self._from_header}", f"To: {to}", f"Subject: {_header(subject)}",
                   f"Date: {formatdate(usegmt=True)}", f"Message-ID: {message_id}", *extra, "MIME-Version: 1.0"]
        text = _part("plain", content.get("text") or "")
        if content.get("html"):
            boundary = f"=_{uuid.uuid4().hex}"
            headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
            body = f"--{boundary}\r\n{text}\r\n--{boundary}\r\n{_part('html', content['html'])}\r\n--{boundary}--\r\n"
        else:
            headers, body = headers + text.split("\r\n\r\n", 1)[0].split("\r\n"), text.split("\r\n\r\n", 1)[1]
        return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("ascii"), message_id

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """An idle pooled connection (reused=True) or a new one. Call holding a slot."""
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client, True
            client.close()
        return await self._connect(), False

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._local_hostname is None:
            # aiosmtplib would look it up (socket.getfqdn, unbounded) on every connect.
            try:
                self._local_hostname = await asyncio.wait_for(
                    asyncio.to_thread(socket.getfqdn), self.timeout_s) or "localhost"
            except asyncio.TimeoutError:
                self._local_hostname = "localhost"
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, username=self._username, password=self._password,
            use_tls=self.use_tls, start_tls=self._start_tls, timeout=self.timeout_s, local_hostname=self._local_hostname,
        )
        await client.connect()
        return client

    async def _deliver(self, client: aiosmtplib.SMTP, mail: bytes, sender: str, to: str) -> None:
        """One mail transaction; the connection goes back to the pool unless it broke."""
        try:
            await client.sendmail(sender, [to], mail)
        except (SMTPResponseException, SMTPRecipientsRefused, ValueError):
            # A refusal (after which aiosmtplib sent RSET) or a bad address caught before
            # sending: the connection itself is still good.
            self._release(client)
            raise
        except BaseException:
            client.close()  # a timeout or drop leaves the session in an unknown state
            raise
        self._release(client)

    def _release(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and len(self._idle) < POOL_SIZE:
            self._idle.append(client)
        else:
            client.close()

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit(timeout=self.timeout_s)
        except Exception:
            pass
        finally:
            client.close()


def _stale(exc: Exception) -> bool:
    """Did a reused connection turn out to be closed by the server?"""
    if isinstance(exc, SMTPServerDisconnected):
        return True
    # 421: "service not available, closing transmission channel" (e.g. idle timeout).
    return isinstance(exc, SMTPResponseException) and exc.code == 421


# Replies to RCPT that say the mailbox does not exist or is not accepted: the address is dead,
# not just this message (552, mailbox full, and 554, policy, are not about the address).
HARD_BOUNCE = frozenset({550, 551, 553})


def _classify(exc: Exception) -> TransientError | PermanentError:
    if isinstance(exc, SMTPRecipientsRefused):
        refused = exc.recipients[0]
        error = _by_code(refused.code, refused.message, "RCPT", "recipient_rejected")
        if refused.code in HARD_BOUNCE:
            error.gone = True
        return error
    if isinstance(exc, SMTPResponseException):  # MAIL, DATA, greeting, EHLO, AUTH replies
        return _by_code(exc.code, exc.message, type(exc).__name__, "smtp_rejected")
    if isinstance(exc, (SMTPTimeoutError, asyncio.TimeoutError)):
        return TransientError("timeout", f"SMTP server did not answer in time: {exc}")
    if isinstance(exc, (ConnectionError, OSError)):  # refused, reset, dropped, TLS failure
        return TransientError("unreachable", f"SMTP connection failed: {exc}")
    if isinstance(exc, SMTPNotSupported):  # e.g. a non-ASCII address without SMTPUTF8
        return PermanentError("smtp_unsupported", str(exc))
    if isinstance(exc, ValueError):  # aiosmtplib refused the address before sending
        return PermanentError("invalid_address", f"invalid email address: {exc}")
    return TransientError("smtp_error", str(exc))


def _by_code(code: int, text: str, where: str, permanent_reason: str) -> TransientError | PermanentError:
    detail = f"SMTP {code} ({where}): {text}"[:300]
    if 400 <= code < 500:
        return TransientError("smtp_4xx", detail)
    if 500 <= code < 600:
        return PermanentError(permanent_reason, detail)
    return TransientError("smtp_error", detail)  # a reply that is not a reply code at all
