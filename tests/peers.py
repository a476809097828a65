"""Local stand-ins for the providers the delivery channels talk to, over the real protocols.

`SmtpSink` is an aiosmtpd SMTP server in its own thread:

    sink = SmtpSink(); sink.start()          # sink.url == "smtp://127.0.0.1:<port>"
    sink.fail_next(451, count=2)             # the next 2 RCPT commands answer 451
    sink.fail_next(550, command="DATA")      # the next DATA answers 550
    sink.stall_next(5.0)                     # the next DATA answers after 5 s
    sink.drop_next()                         # the next MAIL gets its connection closed, no answer
    sink.disconnect_all()                    # close every open session (an idle timeout)
    messages = await sink.wait_for(1)        # parsed EmailMessages; .mail_from / .rcpt_tos
    sink.stop()

`TwilioFake` is a Tornado app answering `POST /2010-04-01/Accounts/{sid}/Messages.json` the
way Twilio does, on the running loop:

    fake = TwilioFake("AC...", "token"); await fake.start()   # fake.base_url
    fake.fail_next(400)  /  fake.fail_next(500, count=2)  /  fake.delay_next(3.0)
    fake.messages     # the form of every accepted (201) message
    fake.requests     # every request, answered or not, with its status
    await fake.stop()
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import secrets
import threading
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timezone

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer, AuthResult
from tornado.web import RequestHandler

from tests.local_http import LocalHttpPeer


# SMTP ----------------------------------------------------------------------------------------

class _SinkController(Controller):
    """aiosmtpd's Controller on a port the OS picks, remembering every session."""

    def __init__(self, handler, sink: "SmtpSink", **smtp_kwargs) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0, **smtp_kwargs)
        self.sink = sink

    def factory(self):
        server = SMTPServer(self.handler, **self.SMTP_kwargs)
        self.sink._sessions.append(server)
        return server

    def _trigger_server(self):
        # Port 0 binds a free port; learn which before aiosmtpd's start-up probe connects.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class _SinkHandler:
    def __init__(self, sink: "SmtpSink") -> None:
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.sink._take("drop", "MAIL"):
            server.transport.close()  # vanish without answering, like a server that went away
            return "421 closing"  # written to a closed transport: never seen
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answer = await self.sink._scripted("RCPT")
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        answer = await self.sink._scripted("DATA")
        if answer:
            return answer
        # CRLF is the wire's line ending; parse the message as a local file would be.
        raw = envelope.original_content.replace(b"\r\n", b"\n")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        message.mail_from = envelope.mail_from
        message.rcpt_tos = list(envelope.rcpt_tos)
        self.sink.messages.append(message)
        return "250 OK queued"


class SmtpSink:
    """`credentials=(user, password)` makes AUTH (PLAIN/LOGIN, over plain TCP) required."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.logins: list[str] = []  # user names that logged in successfully
        self.messages: list[email.message.EmailMessage] = []
        self._sessions: list[SMTPServer] = []
        self._script: list[tuple[str, str, object]] = []  # (kind, command, code or seconds)
        self._lock = threading.Lock()  # the server runs in its own thread
        self._controller: _SinkController | None = None
        self.port = 0

    def start(self) -> "SmtpSink":
        auth = {}
        if self.credentials:
            auth = {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        self._controller = _SinkController(_SinkHandler(self), self, **auth)
        self._controller.start()
        self.port = self._controller.port
        self._sessions.clear()  # forget the start-up probe's session
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """SMTP sessions opened since start()."""
        return len(self._sessions)

    def fail_next(self, code: int, count: int = 1, command: str = "RCPT", text: str | None = None) -> None:
        """The next `count` RCPT (or DATA) commands answer `code`."""
        reply = f"{code} {text or ('Try again later' if code < 500 else 'Mailbox unavailable')}"
        with self._lock:
            self._script.extend([("fail", command.upper(), reply)] * count)

    def stall_next(self, seconds: float, count: int = 1, command: str = "DATA") -> None:
        """The next `count` DATA (or RCPT) commands answer only after `seconds`."""
        with self._lock:
            self._script.extend([("stall", command.upper(), seconds)] * count)

    def drop_next(self, count: int = 1) -> None:
        """The next `count` MAIL commands get their connection closed instead of an answer."""
        with self._lock:
            self._script.extend([("drop", "MAIL", None)] * count)

    def disconnect_all(self) -> None:
        """Close every open session from the server side."""
        def close():
            for server in self._sessions:
                if server.transport is not None:
                    server.transport.close()
        self._controller.loop.call_soon_threadsafe(close)

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list:
        """The received messages once there are at least `count` of them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(self.messages)} of {count} messages arrived within {timeout}s")
            await asyncio.sleep(0.02)
        return list(self.messages)

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        login = (auth_data.login.decode(), auth_data.password.decode())
        if login == self.credentials:
            self.logins.append(login[0])
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def _take(self, kind: str, command: str):
        with self._lock:
            for i, (k, c, arg) in enumerate(self._script):
                if k == kind and c == command:
                    del self._script[i]
                    return arg if arg is not None else True
        return None

    async def _scripted(self, command: str) -> str | None:
        """The scripted reply for this command, if any (after any scripted stall)."""
        seconds = self._take("stall", command)
        if seconds:
            await asyncio.sleep(seconds)
        return self._take("fail", command)


# Twilio --------------------------------------------------------------------------------------

TWILIO_ERRORS = {  # what Twilio answers, by status
    400: {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400},
    401: {"code": 20003, "message": "Authenticate", "status": 401},
    429: {"code": 20429, "message": "Too Many Requests", "status": 429},
    500: {"code": 20500, "message": "Internal Server Error", "status": 500},
    503: {"code": 20503, "message": "Service Unavailable", "status": 503},
}


@dataclass
class TwilioRequest:
    method: str
    path: str
    form: dict[str, str]
    auth: tuple[str, str] | None
    status: int = 0
    response: dict = field(default_factory=dict)


class TwilioFake(LocalHttpPeer):
    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "twilio-token") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict[str, str]] = []
        self.requests: list[TwilioRequest] = []
        self._script: list[tuple[str, object]] = []  # ("fail", (status, body)) or ("delay", seconds)

    async def start(self) -> str:
        return self._serve([(r"/2010-04-01/Accounts/([^/]+)/Messages\.json", _Messages, {"fake": self}),
                            (r"/.*", _NotFound)])

    def fail_next(self, status: int = 500, count: int = 1, error: dict | None = None) -> None:
        """The next `count` requests answer `status` with Twilio's error JSON."""
        body = error or TWILIO_ERRORS.get(status, {"code": status, "message": "Error", "status": status})
        self._script.extend([("fail", (status, body))] * count)

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """The next `count` requests are answered only after `seconds` (or when the client leaves)."""
        self._script.extend([("delay", seconds)] * count)

    def _take(self, kind: str):
        for i, (k, arg) in enumerate(self._script):
            if k == kind:
                del self._script[i]
                return arg
        return None


class _NotFound(RequestHandler):
    def prepare(self):
        self.set_status(404)
        self.finish({"code": 20404, "message": "The requested resource was not found", "status": 404})


class _Messages(RequestHandler):
    def initialize(self, fake: TwilioFake) -> None:
        self.fake = fake
        self.left = asyncio.Event()

    def on_connection_close(self):
        self.left.set()  # the client gave up: stop any scripted delay

    def _basic_auth(self) -> tuple[str, str] | None:
        header = self.request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user, password

    async def post(self, sid: str) -> None:
        fake = self.fake
        form = {k: self.get_body_argument(k) for k in self.request.body_arguments}
        auth = self._basic_auth()
        recorded = TwilioRequest("POST", self.request.path, form, auth)
        fake.requests.append(recorded)

        seconds = fake._take("delay")
        if seconds:
            try:
                await asyncio.wait_for(self.left.wait(), seconds)
                return  # nobody is listening any more
            except asyncio.TimeoutError:
                pass

        if auth != (fake.account_sid, fake.auth_token) or sid != fake.account_sid:
            return self._answer(recorded, 401, TWILIO_ERRORS[401])
        failure = fake._take("fail")
        if failure:
            return self._answer(recorded, *failure)
        if "To" not in form or not ("From" in form or "MessagingServiceSid" in form):
            return self._answer(recorded, 400, {"code": 21604, "message": "A 'To' phone number is required.",
                                                "status": 400})

        message_sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(timezone.utc), usegmt=True)
        uri = f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json"
        body = {
            "account_sid": sid, "api_version": "2010-04-01", "body": form.get("Body", ""),
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"), "num_media": "0", "num_segments": "1",
            "price": None, "price_unit": "USD", "sid": message_sid, "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")}, "to": form["To"], "uri": uri,
        }
        fake.messages.append(form)
        self._answer(recorded, 201, body)

    def _answer(self, recorded: TwilioRequest, status: int, body: dict) -> None:
        recorded.status, recorded.response = status, body
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body))
