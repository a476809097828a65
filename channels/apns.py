"""Apple Push Notification service: HTTP/2 over TLS with provider-token (JWT) auth.

One httpx client per APNs host (production, sandbox), built by the outgoing policy
(hub/adapters/outgoing.py: TLS trust with HUB_EXTRA_CA_FILE, timeouts, capped answers, no
redirects), so all sends to a host share one multiplexed HTTP/2 connection.

The provider token is an ES256 JWT (`kid` = key id, `iss` = team id, integer `iat`) signed
once and reused for TOKEN_REFRESH_S: Apple refuses tokens older than an hour (403
ExpiredProviderToken) and renewals more often than every 20 minutes. On
ExpiredProviderToken the token is renewed once and the send tried again.

A send raises PermanentError(gone=True) when Apple says the device token is dead (410,
BadDeviceToken, DeviceTokenNotForTopic), PermanentError for what retrying cannot fix
(payload, topic, credentials), TransientError for 429/5xx (with Retry-After), timeouts
and connections that failed again after CONNECTION_RETRIES immediate retries (a GOAWAY
fails the requests in flight on that connection).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from domain.delivery import Channel, Message, PermanentError, Sent, TransientError
from channels.native_push import MAX_PAYLOAD_BYTES, collapse_id, high_priority, post, within_payload_limit
from channels.push import retry_after_seconds
from domain import compact_json
from domain.devices import APNS_TOKEN_RE
from hub.adapters.outgoing import OutgoingPolicy

TOKEN_REFRESH_S = 45 * 60  # inside Apple's hour, past its 20-minute minimum
KEY_FILE_MAX_BYTES = 16 * 1024

# Apple's reasons for a dead device token, and for a message retrying cannot fix.
GONE = {"BadDeviceToken": "bad_device_token", "DeviceTokenNotForTopic": "device_token_not_for_topic",
        "Unregistered": "unregistered", "ExpiredToken": "expired_token"}
REJECTED = {
    "PayloadTooLarge": "payload_too_large", "BadTopic": "bad_topic", "TopicDisallowed": "topic_disallowed",
    "MissingTopic": "bad_topic", "BadCollapseId": "bad_collapse_id", "BadExpirationDate": "bad_expiration",
    "BadPriority": "bad_priority", "PayloadEmpty": "payload_empty", "InvalidPushType": "bad_push_type",
    "InvalidProviderToken": "invalid_provider_token", "MissingProviderToken": "invalid_provider_token",
    "BadCertificate": "invalid_provider_token", "Forbidden": "forbidden",
}


def load_signing_key(path: str) -> ec.EllipticCurvePrivateKey:
    """The .p8 token-signing key Apple issues: a PKCS#8 PEM P-256 key."""
    with open(path, "rb") as f:
        pem = f.read(KEY_FILE_MAX_BYTES + 1)
    if len(pem) > KEY_FILE_MAX_BYTES:
        raise ValueError("too large for a .p8 key")
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("not a PEM private key (Apple's .p8)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("not a P-256 (ES256) key")
    return key


class ApnsChannel(Channel):
    name = "apns"

    def __init__(self, key_file: str, key_id: str, team_id: str, topic: str, base_url: str, sandbox_base_url: str,
                 policy: OutgoingPolicy, *, timeout_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = load_signing_key(key_file)
        self._key_id, self._team_id, self._topic = key_id, team_id, topic
        self._base = {"production": base_url.rstrip("/"), "sandbox": sandbox_base_url.rstrip("/")}
        self._timeout_s, self._policy = timeout_s, policy
        self._clock = clock
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._token: tuple[int, str] | None = None  # (iat, jwt)
        self.tokens_signed = 0

    # Provider token --------------------------------------------------------------------
    def provider_token(self) -> str:
        now = int(self._clock())
        if self._token is None or not 0 <= now - self._token[0] < TOKEN_REFRESH_S:
            self._sign(now)
        return self._token[1]

    def _sign(self, now: int) -> None:
        token = jwt.encode({"iss": self._team_id, "iat": now}, self._key, algorithm="ES256",
                           headers={"kid": self._key_id})
        self._token = (now, token)
        self.tokens_signed += 1

    def _renew(self, stale: str) -> None:
        """After ExpiredProviderToken: a new token, unless a concurrent send already made one."""
        if self._token is not None and self._token[1] == stale:
            self._sign(int(self._clock()))

    # Sending ---------------------------------------------------------------------------
    def _client(self, environment: str) -> httpx.AsyncClient:
        client = self._clients.get(environment)
        if client is None:
            client = self._clients[environment] = self._policy.client(
                base_url=self._base[environment], http2=True, timeout_s=self._timeout_s)
        return client

    def payload(self, message: Message) -> bytes:
        aps: dict = {"alert": {"title": message.content["title"], "body": message.content["body"]},
                     "sound": "default"}
        if message.badge is not None:
            aps["badge"] = message.badge
        body = {"aps": aps, "notification_id": message.notification_id, "type": message.type,
                "data": message.data}
        encoded = compact_json.encode(body)
        if len(encoded) > MAX_PAYLOAD_BYTES:  # the app can fetch the data by notification_id
            del body["data"]
            encoded = compact_json.encode(body)
        return within_payload_limit(encoded, "APNs")

    def headers(self, message: Message) -> dict[str, str]:
        ttl = max(0, int(message.ttl_s))
        headers = {
            "apns-push-type": "alert",
            "apns-topic": self._topic,
            "apns-priority": "10" if high_priority(message) else "5",
            # 0: deliver now or never; else Apple stores it until then while the device is off.
            "apns-expiration": str(int(self._clock()) + ttl if ttl else 0),
            "content-type": "application/json",
        }
        collapse = collapse_id(message)
        if collapse:
            headers["apns-collapse-id"] = collapse
        return headers

    async def send(self, message: Message) -> Sent:
        device = message.address if isinstance(message.address, dict) else {}
        token = device.get("token")
        if not isinstance(token, str) or not APNS_TOKEN_RE.fullmatch(token):
            raise PermanentError("bad_device_token", "not an APNs device token", gone=True)
        environment = "sandbox" if device.get("environment") == "sandbox" else "production"
        url = f"{self._base[environment]}/3/device/{token}"
        content, headers = self.payload(message), self.headers(message)
        renewed = False
        while True:
            provider_token = self.provider_token()
            response, body = await post(self._client(environment), url, content,
                                        {**headers, "authorization": f"bearer {provider_token}"}, f"APNs ({environment})")
            status = response.status_code
            if status == 200:
                return Sent(provider_id=response.headers.get("apns-id"))
            reason = _reason(body)
            if status == 403 and reason == "ExpiredProviderToken" and not renewed:
                self._renew(provider_token)
                renewed = True
                continue
            raise _error(status, reason, environment, response.headers.get("retry-after"))

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _reason(body: bytes) -> str:
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        return ""
    return reason if isinstance(reason, str) else ""


def _error(status: int, reason: str, environment: str, retry_after: str | None) -> Exception:
    what = f"APNs ({environment}) answered {status} {reason[:64]}".rstrip()
    # Gone only on Apple's own word (a reason in its JSON answer), not on any 410 a proxy might give.
    if reason in GONE or (status == 410 and reason):
        return PermanentError(GONE.get(reason, "unregistered"), what, gone=True)
    if status == 429 or status >= 500:
        return TransientError(f"apns_{status}" if status in (429, 500, 503) else "apns_5xx", what,
                              retry_after_s=retry_after_seconds(retry_after))
    if status == 403 and reason == "ExpiredProviderToken":
        return TransientError("expired_provider_token", what)
    if status == 413:
        return PermanentError("payload_too_large", what)
    return PermanentError(REJECTED.get(reason, "apns_rejected"), what)
