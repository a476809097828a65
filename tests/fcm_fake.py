"""An FCM-shaped server for tests, over HTTPS (a trustme certificate): Google's OAuth2
token endpoint and the HTTP v1 `messages:send`.

`POST /token` verifies the service account's RS256 assertion (signature with the
account's public key, `kid`, `iss`, the firebase.messaging scope, the audience, a
lifetime of at most an hour) and issues an access token living `token_lifetime_s`.
`POST /v1/projects/<project>/messages:send` needs a live access token (else 401
UNAUTHENTICATED), checks the message (title, body, string-only data, android priority
and ttl) and records it in `received`.

Per registration token, an answer can be set: `answer(token, 404, "UNREGISTERED")`,
`answer(token, 429, "QUOTA_EXCEEDED", retry_after="3", times=1)`. `revoke()` makes
every access token issued so far invalid (the next send gets 401).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tests.local_tls import LocalCA

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # google-auth signs this audience whatever token_uri says
TTL_RE = re.compile(r"^\d+(\.\d{1,9})?s$")
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


class FcmFake:
    def __init__(self, ca: LocalCA, *, project: str = "shop-test", token_lifetime_s: int = 3600) -> None:
        self.ca, self.project, self.token_lifetime_s = ca, project, token_lifetime_s
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = secrets.token_hex(20)
        self.client_email = f"hub@{project}.iam.gserviceaccount.com"
        self.received: list[dict] = []  # accepted messages: {"message", "access_token"}
        self.answered: list[tuple[str, int, str]] = []  # (registration token, status, code)
        self.token_requests = 0
        self.token_delay_s = 0.0
        self.token_status = 200  # what the token endpoint answers (200 issues a token)
        self._issued: dict[str, float] = {}  # access token -> expires at (monotonic)
        self._answers: dict[str, list[dict]] = {}
        self._server: HTTPServer | None = None
        self.port: int | None = None

    async def start(self) -> str:
        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server = HTTPServer(Application([
            (r"/token", _Token, {"fake": self}),
            (r"/v1/projects/([^/]+)/messages:send", _Send, {"fake": self}),
        ]), ssl_options=self.ca.server_context(["http/1.1"]))
        self._server.add_sockets(sockets)
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def service_account(self) -> dict:
        """The JSON key file Google's console gives, pointing at this fake's token endpoint."""
        return {
            "type": "service_account", "project_id": self.project, "private_key_id": self.key_id,
            "private_key": self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()).decode(),
            "client_email": self.client_email, "client_id": "1234567890",
            "token_uri": f"{self.base_url}/token",
        }

    @staticmethod
    def registration_token() -> str:
        return f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(100)}"

    def answer(self, token: str, status: int, code: str = "", *, times: int | None = None,
               retry_after: str | None = None) -> None:
        self._answers.setdefault(token, []).append(
            {"status": status, "code": code, "times": times, "retry_after": retry_after})

    def revoke(self) -> None:
        self._issued.clear()

    def received_for(self, token: str) -> list[dict]:
        return [r for r in self.received if r["message"]["token"] == token]

    async def wait_for(self, count: int, timeout: float = 10.0, token: str | None = None) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(got := self.received_for(token) if token else self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} FCM messages accepted, expected {count}")
            await asyncio.sleep(0.01)
        return got

    def _scripted(self, token: str) -> dict | None:
        for script in self._answers.get(token, []):
            if script["times"] is None:
                return script
            if script["times"] > 0:
                script["times"] -= 1
                return script
        return None

    # Checks ------------------------------------------------------------------------------
    def check_assertion(self, assertion: str) -> str:
        """"" when Google would take it, else why not."""
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, self.key.public_key(), algorithms=["RS256"],
                                audience=[GOOGLE_TOKEN_URI, f"{self.base_url}/token"],
                                options={"require": ["iss", "aud", "iat", "exp"]})
        except jwt.InvalidTokenError as exc:
            return f"invalid_grant: {type(exc).__name__}"
        if header.get("kid") != self.key_id:
            return "invalid_grant: kid"
        if claims["iss"] != self.client_email:
            return "invalid_grant: iss"
        if SCOPE not in str(claims.get("scope", "")).split():
            return "invalid_scope"
        if not 0 < claims["exp"] - claims["iat"] <= 3600:
            return "invalid_grant: lifetime"
        return ""

    def check_message(self, body: dict) -> str:
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("token"), str):
            return "message.token"
        notification = message.get("notification") or {}
        if not isinstance(notification.get("title"), str) or not isinstance(notification.get("body"), str):
            return "message.notification"
        data = message.get("data") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return "message.data: values must be strings"
        android = message.get("android") or {}
        if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
            return "message.android.priority"
        if "ttl" in android and not TTL_RE.match(str(android["ttl"])):
            return "message.android.ttl"
        apns = message.get("apns") or {}
        if not all(isinstance(v, str) for v in (apns.get("headers") or {}).values()):
            return "message.apns.headers"
        return ""


def _error(handler: RequestHandler, status: int, code: str, message: str = "") -> None:
    handler.set_status(status)
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}] if code else []
    handler.finish({"error": {"code": status, "message": message or code, "status": STATUS.get(status, "UNKNOWN"),
                              "details": details}})


class _Token(RequestHandler):
    def initialize(self, fake: FcmFake) -> None:
        self.fake = fake

    async def post(self) -> None:
        fake = self.fake
        fake.token_requests += 1
        if fake.token_delay_s:
            await asyncio.sleep(fake.token_delay_s)
        form = {k: v[0] for k, v in parse_qs(self.request.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self.set_status(400)
            return self.finish({"error": "unsupported_grant_type"})
        problem = fake.check_assertion(form.get("assertion", ""))
        if problem:
            self.set_status(400)
            return self.finish({"error": "invalid_grant", "error_description": problem})
        if fake.token_status != 200:
            self.set_status(fake.token_status)
            return self.finish({"error": "internal_failure"})
        access = "ya29." + secrets.token_urlsafe(32)
        fake._issued[access] = time.monotonic() + fake.token_lifetime_s
        self.finish({"access_token": access, "expires_in": fake.token_lifetime_s, "token_type": "Bearer"})


class _Send(RequestHandler):
    def initialize(self, fake: FcmFake) -> None:
        self.fake = fake

    def post(self, project: str) -> None:
        fake = self.fake
        auth = self.request.headers.get("Authorization", "")
        access = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        try:
            body = json.loads(self.request.body)
        except ValueError:
            return _error(self, 400, "INVALID_ARGUMENT", "not JSON")
        token = str(((body.get("message") or {}) if isinstance(body, dict) else {}).get("token", ""))
        if fake._issued.get(access, 0) <= time.monotonic():
            fake.answered.append((token, 401, "UNAUTHENTICATED"))
            return _error(self, 401, "", "Request had invalid authentication credentials.")
        if project != fake.project:
            fake.answered.append((token, 403, "SENDER_ID_MISMATCH"))
            return _error(self, 403, "SENDER_ID_MISMATCH")
        problem = fake.check_message(body)
        if problem:
            fake.answered.append((token, 400, "INVALID_ARGUMENT"))
            return _error(self, 400, "INVALID_ARGUMENT", problem)
        script = fake._scripted(token)
        if script:
            fake.answered.append((token, script["status"], script["code"]))
            if script["retry_after"]:
                self.set_header("Retry-After", script["retry_after"])
            return _error(self, script["status"], script["code"])
        fake.answered.append((token, 200, ""))
        fake.received.append({"message": body["message"], "access_token": access})
        self.finish({"name": f"projects/{project}/messages/{uuid.uuid4().hex}"})
