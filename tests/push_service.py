"""A Web Push service for tests, strict the way real ones are (RFC 8030, 8291, 8292).

`PushService` hands out browser-like subscriptions (a P-256 key pair and a 16-byte auth
secret per subscription) and, on `POST /push/<id>`, checks the VAPID Authorization header
(ES256 signature against `k`, `aud` = this service's origin, `exp` in the future and at
most 24 h away), requires `TTL`, checks `Urgency` and `Topic`, refuses bodies over 4096
bytes, decrypts the aes128gcm body with the subscription's private key and records what
arrived in `received`.

    service = PushService()
    await service.start()            # in the test's loop
    subscription = service.new_subscription()
    ...
    await service.wait_for(1)
    service.received[0]["payload"]   # the decrypted JSON
    await service.stop()

Failures on demand: `gone(subscription, 410)`, `fail_next(500, n)`, `stall()`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
import uuid

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from tornado.web import RequestHandler

from tests.local_http import LocalHttpPeer

MAX_BODY = 4096
URGENCIES = ("very-low", "low", "normal", "high")
B64URL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PushService(LocalHttpPeer):
    def __init__(self) -> None:
        self.received: list[dict] = []  # accepted and decrypted messages
        self.refused: list[dict] = []  # {"subscription", "status", "reason"} for every non-2xx answer
        self._subscriptions: dict[str, dict] = {}  # id -> {"private_key", "auth", "server_key", "gone"}
        self._failures: list[tuple[int, str | None]] = []  # (status, Retry-After) for the next requests, in order
        self._stall: asyncio.Event | None = None  # set: stalled requests go on (or end at stop)

    # Lifecycle ------------------------------------------------------------------------

    async def start(self) -> str:
        return self._serve([(r"/push/([^/]+)", _Push, {"service": self})])

    async def stop(self) -> None:
        if self._stall is not None:
            self._stall.set()
        await super().stop()

    origin = LocalHttpPeer.base_url  # what VAPID's `aud` must be

    # Subscriptions and behaviour -----------------------------------------------------

    def new_subscription(self, path_suffix: str | None = None, *,
                         application_server_key: str | None = None) -> dict:
        """What a browser's `PushSubscription.toJSON()` gives. With
        `application_server_key`, only VAPID signed by that key is accepted (403 otherwise),
        as push services do for subscriptions made with that key."""
        sub_id = path_suffix or secrets.token_urlsafe(16)
        private_key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        self._subscriptions[sub_id] = {"private_key": private_key, "auth": auth,
                                       "server_key": application_server_key, "gone": None}
        p256dh = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": f"{self.base_url}/push/{sub_id}",
                "keys": {"p256dh": b64url_encode(p256dh), "auth": b64url_encode(auth)}}

    def gone(self, subscription: dict | str, status: int = 410) -> None:
        """From now on this subscription answers `status` (410 Gone or 404)."""
        self._subscriptions[self._id(subscription)]["gone"] = status

    def fail_next(self, status: int, n: int = 1, *, retry_after: str | None = None) -> None:
        """The next `n` requests, whatever their subscription, answer `status` (with a
        Retry-After header when given)."""
        self._failures.extend([(status, retry_after)] * n)

    def stall(self) -> None:
        """Requests from now on get no answer until `resume()` or `stop()`."""
        self._stall = asyncio.Event()

    def resume(self) -> None:
        if self._stall is not None:
            self._stall.set()
            self._stall = None

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} push messages received, expected {count}")
            await asyncio.sleep(0.01)
        return self.received

    def _id(self, subscription: dict | str) -> str:
        if isinstance(subscription, dict):
            return subscription["endpoint"].rsplit("/", 1)[1]
        return subscription

    # Checks -----------------------------------------------------------------------------

    def check_vapid(self, authorization: str | None, server_key: str | None) -> tuple[int, str, dict]:
        """(0, "", claims) when valid, else (401 or 403, reason, {})."""
        if not authorization:
            return 401, "no_authorization", {}
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return 401, "not_vapid", {}
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        token, key = parts.get("t"), parts.get("k")
        if not token or not key:
            return 401, "malformed_vapid", {}
        try:
            signing_input, _, signature = token.rpartition(".")
            header = json.loads(b64url_decode(signing_input.split(".")[0]))
            claims = json.loads(b64url_decode(signing_input.split(".")[1]))
            sig = b64url_decode(signature)
            if header.get("alg") != "ES256" or len(sig) != 64:
                return 401, "not_es256", {}
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
            public_key.verify(
                utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")),
                signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return 401, "bad_signature", {}
        except (ValueError, IndexError, binascii.Error, UnicodeError):
            return 401, "malformed_vapid", {}
        if claims.get("aud") != self.origin:
            return 401, "wrong_aud", {}
        exp = claims.get("exp")
        if not isinstance(exp, int) or not time.time() < exp <= time.time() + 86400:
            return 401, "bad_exp", {}
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return 401, "bad_sub", {}
        if server_key is not None and key != server_key:
            return 403, "key_mismatch", {}
        return 0, "", claims


class _Push(RequestHandler):
    def initialize(self, service: PushService) -> None:
        self.service = service

    def refuse(self, sub_id: str, status: int, reason: str) -> None:
        self.service.refused.append({"subscription": sub_id, "status": status, "reason": reason})
        self.set_status(status)
        self.finish({"reason": reason})

    async def post(self, sub_id: str) -> None:
        service = self.service
        if service._stall is not None:
            await service._stall.wait()
        if service._failures:
            status, retry_after = service._failures.pop(0)
            if retry_after is not None:
                self.set_header("Retry-After", retry_after)
            return self.refuse(sub_id, status, "told_to_fail")
        subscription = service._subscriptions.get(sub_id)
        if subscription is None:
            return self.refuse(sub_id, 404, "unknown_subscription")
        if subscription["gone"]:
            return self.refuse(sub_id, subscription["gone"], "gone")
        h = self.request.headers
        status, reason, claims = service.check_vapid(h.get("Authorization"), subscription["server_key"])
        if status:
            return self.refuse(sub_id, status, reason)
        if not h.get("TTL", "").isdigit():
            return self.refuse(sub_id, 400, "ttl_required")
        if "Urgency" in h and h["Urgency"] not in URGENCIES:
            return self.refuse(sub_id, 400, "bad_urgency")
        if "Topic" in h and not (len(h["Topic"]) <= 32 and set(h["Topic"]) <= B64URL):
            return self.refuse(sub_id, 400, "bad_topic")
        if len(self.request.body) > MAX_BODY:
            return self.refuse(sub_id, 413, "payload_too_large")
        if h.get("Content-Encoding") != "aes128gcm":
            return self.refuse(sub_id, 415, "not_aes128gcm")
        try:
            plaintext = http_ece.decrypt(self.request.body, private_key=subscription["private_key"],
                                         auth_secret=subscription["auth"], version="aes128gcm")
            payload = json.loads(plaintext)
        except (http_ece.ECEException, ValueError):
            return self.refuse(sub_id, 400, "undecryptable")
        service.received.append({
            "subscription": sub_id,
            "headers": {name: h.get(name) for name in
                        ("TTL", "Urgency", "Topic", "Authorization", "Content-Encoding")},
            "claims": claims,
            "payload": payload,
        })
        message_id = uuid.uuid4().hex
        self.set_status(201)
        self.set_header("Location", f"{service.base_url}/message/{message_id}")
        self.finish()
