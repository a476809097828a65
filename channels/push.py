"""Web Push (RFC 8030) with aes128gcm payload encryption (RFC 8291) and VAPID (RFC 8292).

pywebpush encrypts the payload; the POST is ours, on one shared httpx client under the
outgoing policy (hub/adapters/outgoing.py: endpoint hosts allow-listed, no private addresses, no
redirects, total timeout, capped answer), because pywebpush posts anywhere, with no
timeout by default, and defaults TTL to 0. Nothing the push service answers reaches the
user but the status, as a reason code.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import http_ece
import httpx
from py_vapid import Vapid, VapidException
from pywebpush import WebPusher, WebPushException

from domain.delivery import Channel, Message, PermanentError, Sent, TransientError
from channels.vapid import b64url_decode, b64url_encode, load_private_key
from domain import compact_json
from domain.notification_policy import PUSH_URGENCY
from hub.adapters.outgoing import OutgoingPolicy, OutgoingRefused, ResponseTooLarge, read_capped

# Push services refuse a VAPID token living more than 24 h; pywebpush uses 12 h. Signed
# headers are reused until half of that is left, so clock skew never makes them stale.
VAPID_LIFETIME_S = 12 * 3600
VAPID_REFRESH_BEFORE_S = 6 * 3600
VAPID_CACHE_SIZE = 256  # audiences are push service origins: a handful in practice
MAX_ANSWER_BYTES = 4096  # push services answer 201 with an empty body, errors with a line of JSON
# Requests in flight at once, and connections. httpcore's pool scans every connection and every
# waiting request each time one finishes: with a broadcast's hundreds of sends queued there and
# 100 connections, that scan was a quarter of the hub's CPU. Push services speak HTTP/2, so one
# connection carries many requests.
CONCURRENCY, CONNECTIONS = 64, 16

TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def topic_header(topic: str) -> str:
    """RFC 8030 §5.4: at most 32 characters of the URL-safe base64 alphabet. Anything else
    is hashed, so equal topics still replace each other."""
    if TOPIC_RE.match(topic):
        return topic
    return b64url_encode(hashlib.sha256(topic.encode()).digest())[:32]


class PushChannel(Channel):
    name = "push"

    def __init__(self, vapid_private_key: str, vapid_subject: str, timeout_s: float, *, policy: OutgoingPolicy,
                 clock: Callable[[], float] = time.time) -> None:
        self._vapid = Vapid(private_key=load_private_key(vapid_private_key))
        subject = vapid_subject.strip()
        self._subject = subject if SCHEME_RE.match(subject) else f"mailto:{subject}"
        self._policy = policy
        self._timeout_s = timeout_s
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._vapid_cache: dict[str, tuple[int, dict[str, str]]] = {}  # aud -> (exp, headers)
        try:  # refuse a subject py_vapid will not sign at startup, not at the first send
            self._vapid.sign({"aud": "https://push.example.com", "sub": self._subject})
        except VapidException:
            raise ValueError("VAPID subject: must be a mailto: address or an https: URL") from None

    def vapid_headers(self, aud: str) -> dict[str, str]:
        """Signed Authorization header for one push service origin, cached: an ES256
        signature per message is wasted CPU."""
        now = self._clock()
        cached = self._vapid_cache.get(aud)
        if cached and now < cached[0] - VAPID_REFRESH_BEFORE_S:
            return cached[1]
        exp = int(now) + VAPID_LIFETIME_S
        headers = self._vapid.sign({"aud": aud, "sub": self._subject, "exp": exp})
        self._vapid_cache.pop(aud, None)
        if len(self._vapid_cache) >= VAPID_CACHE_SIZE:
            self._vapid_cache.pop(next(iter(self._vapid_cache)))  # the least recently signed
        self._vapid_cache[aud] = (exp, headers)
        return headers

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._policy.client(timeout_s=self._timeout_s, http2=True, max_connections=CONNECTIONS)
        return self._client

    async def send(self, message: Message) -> Sent:
        payload = compact_json.encode({
            "id": message.notification_id,
            "title": message.content["title"],
            "body": message.content["body"],
            "data": message.data,
            "priority": message.priority,
        })  # push payloads are capped at 4 KB
        subscription = message.address
        try:
            endpoint = subscription["endpoint"]
            url = urlsplit(endpoint)
            if url.scheme not in ("https", "http") or not url.hostname:
                raise ValueError("endpoint is not an http(s) URL")
            if len(b64url_decode(subscription["keys"]["auth"])) != 16:
                raise ValueError("auth secret is not 16 bytes")
            # Checks p256dh (length, on the curve) while encrypting.
            body = WebPusher(subscription).encode(payload, "aes128gcm")["body"]
            auth = self.vapid_headers(f"{url.scheme}://{url.netloc.rpartition('@')[2]}")
        except (KeyError, TypeError, AttributeError, ValueError, WebPushException, http_ece.ECEException,
                VapidException) as exc:
            raise PermanentError("bad_subscription", f"invalid push subscription: {type(exc).__name__}",
                                 gone=True) from None
        try:  # a subscription stored before the allow-list changed may point elsewhere now
            self._policy.check_url(endpoint, push_endpoint=True)
        except OutgoingRefused as exc:
            raise PermanentError("endpoint_not_allowed", f"push endpoint refused: {exc.reason}", gone=True) from None
        headers = {
            "TTL": str(max(0, int(message.ttl_s))),
            "Urgency": PUSH_URGENCY.get(message.priority, "normal"),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            **auth,
        }
        if message.topic:
            headers["Topic"] = topic_header(message.topic)
        origin = f"{url.scheme}://{url.hostname}"  # for operators; the endpoint path is a credential
        try:
            async with self._slots, self._http().stream("POST", endpoint, content=body, headers=headers) as response:
                await read_capped(response, MAX_ANSWER_BYTES)  # read, so the connection goes back to the pool
                status, retry_after = response.status_code, response.headers.get("Retry-After")
        except OutgoingRefused as exc:  # at connect: the name now resolves to a refused address
            if exc.reason == "unresolvable":
                raise TransientError("unreachable", f"push service {origin} does not resolve") from None
            raise PermanentError("endpoint_not_allowed", f"push service {origin}: {exc.reason}", gone=True) from None
        except ResponseTooLarge:
            raise PermanentError("push_answer_too_large", f"push service {origin} answered too much") from None
        except httpx.TimeoutException:
            raise TransientError("timeout", f"push service {origin} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise TransientError("unreachable", f"push service {origin}: {type(exc).__name__}") from None
        if status in (200, 201, 202):
            return Sent()  # its Location is the push service's word: never shown to users
        if status in (404, 410):
            raise PermanentError("subscription_gone", f"push service {origin} answered {status}", gone=True)
        if status == 429 or status >= 500:
            # A fixed reason (not the status itself): reasons are metric labels and user-visible.
            raise TransientError("push_429" if status == 429 else "push_5xx", f"push service {origin} answered {status}",
                                 retry_after_s=retry_after_seconds(retry_after))
        raise PermanentError("push_rejected", f"push service {origin} answered {status}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """An HTTP Retry-After (RFC 9110: delay-seconds or an HTTP-date) in seconds from now;
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also takes "²", which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an obsolete date form without a zone: HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
