"""An APNs-shaped server for tests: HTTP/2 over TLS (the `h2` package, ALPN h2 only, a
trustme certificate), strict the way Apple is.

Every `POST /3/device/<token>` is checked: the provider token (ES256 JWT verified with
the key's public half, `kid`, `iss` = team id, integer `iat` not in the future and under
an hour old), `apns-topic`, `apns-push-type`, `apns-priority`, `apns-expiration`,
`apns-collapse-id` (≤ 64 bytes), the payload (≤ 4096 bytes, JSON with `aps.alert`).
Accepted requests are recorded in `received` and answered 200 with an `apns-id`.

Per device token, an answer can be set: `answer(token, 410, "Unregistered")`,
`answer(token, 429, "TooManyRequests", retry_after="2", times=1)`, `answer(token,
"goaway", times=1)` (the connection is closed with GOAWAY before the request is
processed), `answer(token, 200, delay=2.0)` (slow). `expire_next(n)` answers the next n
requests 403 ExpiredProviderToken.

    fake = ApnsFake(ca, public_key, key_id="ABC123DEFG", team_id="TEAM123456", topic="com.example.shop")
    await fake.start()   # fake.base_url
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable

import jwt
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import H2Error

from tests.local_tls import LocalCA

MAX_PAYLOAD = 4096
PATH_RE = re.compile(r"^/3/device/([0-9a-f]{64,200})$")


class ApnsFake:
    def __init__(self, ca: LocalCA, public_key, *, key_id: str, team_id: str, topic: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.ca, self.public_key = ca, public_key
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.clock = clock
        self.received: list[dict] = []  # accepted: {"token", "headers", "payload", "connection", "provider_token"}
        self.answered: list[tuple[str, int, str]] = []  # (token, status, reason) of every answer but GOAWAY
        self.answered_at: list[float] = []  # time.monotonic() of each answer in `answered`
        self.connections = 0  # ever accepted
        self.goaways = 0
        self._answers: dict[str, list[dict]] = {}
        self._expire_next = 0
        self._server: asyncio.AbstractServer | None = None
        self._protocols: set[_Connection] = set()
        self.port: int | None = None

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0,
                                                ssl=self.ca.server_context(["h2"]))
        self.port = self._server.sockets[0].getsockname()[1]
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for protocol in list(self._protocols):
                protocol.transport.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # Behaviour ---------------------------------------------------------------------------
    @staticmethod
    def device_token() -> str:
        return secrets.token_hex(32)

    def answer(self, token: str, status: int | str, reason: str = "", *, times: int | None = None,
               retry_after: str | None = None, delay: float = 0.0) -> None:
        """From now on (or for the next `times` requests) this token gets this answer."""
        self._answers.setdefault(token, []).append(
            {"status": status, "reason": reason, "times": times, "retry_after": retry_after, "delay": delay})

    def expire_next(self, n: int = 1) -> None:
        self._expire_next += n

    def received_for(self, token: str) -> list[dict]:
        return [r for r in self.received if r["token"] == token]

    async def wait_for(self, count: int, timeout: float = 10.0, token: str | None = None) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(got := self.received_for(token) if token else self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} APNs requests accepted, expected {count}")
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
    def check(self, headers: dict[str, str], body: bytes) -> tuple[int, str, dict]:
        """(200, "", claims) for a request Apple would take; else (status, reason, {})."""
        if headers.get(":method") != "POST":
            return 405, "MethodNotAllowed", {}
        if not PATH_RE.match(headers.get(":path", "")):
            return 400, "BadDeviceToken", {}
        auth = headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return 403, "MissingProviderToken", {}
        token = auth[len("bearer "):]
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"],
                                options={"verify_iat": False, "require": ["iss", "iat"]})
        except jwt.InvalidTokenError:
            return 403, "InvalidProviderToken", {}
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return 403, "InvalidProviderToken", {}
        iat = claims["iat"]
        if not isinstance(iat, int) or iat > self.clock() + 60:
            return 403, "InvalidProviderToken", {}
        if self.clock() - iat > 3600:
            return 403, "ExpiredProviderToken", {}
        if self._expire_next > 0:
            self._expire_next -= 1
            return 403, "ExpiredProviderToken", {}
        if "apns-topic" not in headers:
            return 400, "MissingTopic", {}
        if headers["apns-topic"] != self.topic:
            return 400, "TopicDisallowed", {}
        if headers.get("apns-push-type") != "alert":
            return 400, "InvalidPushType", {}
        if headers.get("apns-priority") not in ("5", "10"):
            return 400, "BadPriority", {}
        if not headers.get("apns-expiration", "").isdigit():
            return 400, "BadExpirationDate", {}
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return 400, "BadCollapseId", {}
        if len(body) > MAX_PAYLOAD:
            return 413, "PayloadTooLarge", {}
        try:
            alert = json.loads(body)["aps"]["alert"]
            if not isinstance(alert["title"], str) or not isinstance(alert["body"], str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return 400, "PayloadEmpty", {}
        return 200, "", claims

    async def respond(self, headers: dict[str, str], body: bytes, connection: int):
        """(status, headers, body) or None for GOAWAY."""
        match = PATH_RE.match(headers.get(":path", ""))
        device = match[1] if match else ""
        script = self._scripted(device)
        if script and script["delay"]:
            await asyncio.sleep(script["delay"])
        if script and script["status"] == "goaway":
            self.goaways += 1
            return None
        status, reason, _ = self.check(headers, body)
        if status == 200 and script and script["status"] != 200:
            status, reason = script["status"], script["reason"]
        self.answered.append((device, status, reason))
        self.answered_at.append(time.monotonic())
        if status != 200:
            extra = [("retry-after", script["retry_after"])] if script and script["retry_after"] else []
            error = {"reason": reason}
            if status == 410:
                error["timestamp"] = int(self.clock() * 1000)
            return status, extra, json.dumps(error).encode()
        apns_id = str(uuid.uuid4()).upper()
        self.received.append({"token": device, "headers": headers, "payload": json.loads(body),
                              "connection": connection, "provider_token": headers["authorization"][7:],
                              "apns_id": apns_id})
        return 200, [("apns-id", apns_id)], b""


class _Connection(asyncio.Protocol):
    def __init__(self, fake: ApnsFake) -> None:
        self.fake = fake
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, tuple[dict, bytearray]] = {}
        self.transport = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.fake.connections += 1
        self.number = self.fake.connections
        self.fake._protocols.add(self)
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.fake._protocols.discard(self)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except H2Error:
            self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = (dict(event.headers), bytearray())
            elif isinstance(event, DataReceived):
                if event.stream_id in self.streams:
                    self.streams[event.stream_id][1].extend(event.data)
                # Flow control: what Apple does and aioapns did not (LESSONS: mobile push).
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded) and event.stream_id in self.streams:
                headers, body = self.streams.pop(event.stream_id)
                asyncio.ensure_future(self._answer(event.stream_id, headers, bytes(body)))
            elif isinstance(event, StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
        self.flush()

    async def _answer(self, stream_id: int, headers: dict, body: bytes) -> None:
        answer = await self.fake.respond(headers, body, self.number)
        if self.closed:
            return
        try:
            if answer is None:  # GOAWAY: this stream was never processed; the client must retry it
                self.h2.close_connection(error_code=0, last_stream_id=max(0, stream_id - 2))
                self.flush()
                self.transport.close()
                return
            status, extra, payload = answer
            self.h2.send_headers(stream_id, [(":status", str(status)), *extra,
                                             *([("content-type", "application/json")] if payload else [])],
                                 end_stream=not payload)
            if payload:
                self.h2.send_data(stream_id, payload, end_stream=True)
        except H2Error:
            return  # the client reset the stream (its timeout) or the connection is going
        self.flush()
