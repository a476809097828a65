"""Firebase Cloud Messaging, HTTP v1: `POST {FCM_BASE_URL}/v1/projects/{project}/messages:send`.

The OAuth2 access token comes from the service account through google-auth (which signs
the RS256 assertion and posts it to the account's `token_uri`). Its refresh is
synchronous, so it runs in a thread; its HTTP request is handed back to the event loop
and made there on a client of the outgoing policy (hub/adapters/outgoing.py), like the sends.
Concurrent sends share one refresh; the token is refreshed ahead of its expiry, and once
more when FCM answers 401.

Errors: 404 UNREGISTERED and 403 SENDER_ID_MISMATCH mean the token is dead (gone);
400 INVALID_ARGUMENT cannot be fixed by retrying; 429 and 5xx are transient with the
answer's Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from google.auth import _helpers, exceptions as google_exceptions, transport
from google.oauth2 import service_account

from domain.delivery import Channel, Message, PermanentError, Sent, TransientError
from channels.native_push import (MAX_ANSWER_BYTES, MAX_PAYLOAD_BYTES, collapse_id, high_priority, post,
                                  within_payload_limit)
from channels.push import retry_after_seconds
from domain import compact_json
from domain.devices import FCM_TOKEN_RE
from hub.adapters.outgoing import OutgoingPolicy, read_capped

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
REFRESH_AHEAD_S = 300.0  # refresh this long before expiry (half the lifetime when that is shorter)
DEFAULT_TOKEN_LIFETIME_S = 3600.0
MAX_DATA_BYTES = 4000  # FCM's limit for a message's data
ACCOUNT_FILE_MAX_BYTES = 64 * 1024
GONE = {"UNREGISTERED": "unregistered", "SENDER_ID_MISMATCH": "sender_id_mismatch"}


def load_service_account(path: str, project_id: str | None) -> tuple[dict, str]:
    """The service-account JSON and the project to send for (FCM_PROJECT_ID, else the file's)."""
    with open(path, "rb") as f:
        raw = f.read(ACCOUNT_FILE_MAX_BYTES + 1)
    if len(raw) > ACCOUNT_FILE_MAX_BYTES:
        raise ValueError("too large for a service-account file")
    try:
        info = json.loads(raw)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError("not a service-account key file (type must be service_account)")
    for field in ("client_email", "private_key", "token_uri"):
        if not isinstance(info.get(field), str) or not info[field]:
            raise ValueError(f"has no {field}")
    try:
        service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    except ValueError:
        raise ValueError("its private_key is not a usable RSA key") from None
    project = project_id or info.get("project_id")
    if not isinstance(project, str) or not re.fullmatch(r"[a-z0-9-]{1,100}", project):
        raise ValueError("no project_id (set FCM_PROJECT_ID)")
    return info, project


class _Response(transport.Response):
    def __init__(self, status: int, headers, data: bytes) -> None:
        self._status, self._headers, self._data = status, headers, data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self):
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class _Request(transport.Request):
    """google-auth's transport, called in a worker thread: the request itself runs on the
    event loop, on a client of the outgoing policy."""

    def __init__(self, client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._client, self._loop, self._timeout_s = client, loop, timeout_s

    async def _fetch(self, method: str, url: str, body, headers) -> _Response:
        async with self._client.stream(method, url, content=body, headers=headers) as response:
            return _Response(response.status_code, response.headers, await read_capped(response, MAX_ANSWER_BYTES))

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        future = asyncio.run_coroutine_threadsafe(self._fetch(method, url, body, headers), self._loop)
        try:
            return future.result(self._timeout_s + 1)  # the client's own timeout comes first
        except Exception as exc:  # httpx errors, the policy's refusals, a loop shutting down
            future.cancel()
            raise google_exceptions.TransportError(type(exc).__name__) from None


def data_strings(message: Message, *, extras: bool = True) -> dict[str, str]:
    """FCM data values must be strings: others are sent as JSON. Extras that do not fit the
    limit (or all, `extras=False`) are left out (the app can fetch the notification by id)."""
    base = {"notification_id": message.notification_id, "type": message.type}
    extra = {str(k): v if isinstance(v, str) else compact_json.dumps(v)
             for k, v in (message.data if isinstance(message.data, dict) else {}).items()
             if k not in base}
    data = {**extra, **base}
    if not extras or len(json.dumps(data, ensure_ascii=False).encode()) > MAX_DATA_BYTES:
        return base
    return data


class FcmChannel(Channel):
    name = "fcm"

    def __init__(self, service_account_file: str, project_id: str | None, base_url: str, policy: OutgoingPolicy, *,
                 timeout_s: float | None = None, clock: Callable[[], float] = time.time) -> None:
        info, self.project = load_service_account(service_account_file, project_id)
        token_uri = urlsplit(info["token_uri"])
        self._token_origin = f"{token_uri.scheme}://{token_uri.netloc}"  # the operator's file names it: trusted
        self._credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        self._base_url = base_url.rstrip("/")
        self._url = f"{self._base_url}/v1/projects/{self.project}/messages:send"
        self._timeout_s, self._policy = timeout_s, policy
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._token_client: httpx.AsyncClient | None = None
        self._token: tuple[str, float] | None = None  # (access token, when to refresh it on our clock)
        self._refreshing: asyncio.Task | None = None
        self.refreshes = 0

    # Access token ----------------------------------------------------------------------
    async def access_token(self, stale: str | None = None) -> str:
        """A valid token; `stale` is one FCM refused (401): a new one replaces it, once."""
        token = self._token
        if token is not None and token[0] != stale and self._clock() < token[1]:
            return token[0]
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())
        # Shielded: a send that gives up (cancelled) does not cancel the others' refresh.
        return await asyncio.shield(self._refreshing)

    async def _refresh(self) -> str:
        if self._token_client is None:
            self._token_client = self._policy.client(base_url=self._token_origin, timeout_s=self._timeout_s)
        request = _Request(self._token_client, asyncio.get_running_loop(),
                           self._timeout_s or self._policy.timeout_s)
        started = self._clock()
        try:
            token, lifetime = await asyncio.to_thread(self._refresh_sync, request)
        except google_exceptions.GoogleAuthError as exc:
            raise TransientError("oauth_failed", f"FCM access token: {type(exc).__name__}") from None
        self.refreshes += 1
        self._token = (token, started + max(lifetime - REFRESH_AHEAD_S, lifetime / 2))
        return token

    def _refresh_sync(self, request: _Request) -> tuple[str, float]:
        self._credentials.refresh(request)
        expiry = self._credentials.expiry  # naive UTC, from the answer's expires_in
        lifetime = ((expiry - _helpers.utcnow()).total_seconds() if expiry is not None
                    else DEFAULT_TOKEN_LIFETIME_S)
        return self._credentials.token, max(0.0, lifetime)

    # Sending ---------------------------------------------------------------------------
    def body(self, message: Message, token: str) -> bytes:
        ttl = max(0, int(message.ttl_s))
        high = high_priority(message)
        collapse = collapse_id(message)
        android: dict = {"priority": "HIGH" if high else "NORMAL", "ttl": f"{ttl}s"}
        apns_headers = {"apns-priority": "10" if high else "5",
                        "apns-expiration": str(int(self._clock()) + ttl if ttl else 0)}
        if collapse:
            android["collapse_key"] = collapse
            apns_headers["apns-collapse-id"] = collapse
        aps: dict = {"sound": "default"}
        if message.badge is not None:
            aps["badge"] = message.badge
        shown = {"notification": {"title": message.content["title"], "body": message.content["body"]},
                 "data": data_strings(message)}
        if len(compact_json.encode(shown)) > MAX_PAYLOAD_BYTES:  # extras go first, as with APNs
            shown["data"] = data_strings(message, extras=False)
        within_payload_limit(compact_json.encode(shown), "FCM")
        return compact_json.encode({"message": {
            "token": token,
            **shown,
            "android": android,
            "apns": {"headers": apns_headers, "payload": {"aps": aps}},  # iOS apps that use FCM
        }})

    async def send(self, message: Message) -> Sent:
        device = message.address if isinstance(message.address, dict) else {}
        token = device.get("token")
        if not isinstance(token, str) or not FCM_TOKEN_RE.fullmatch(token):
            raise PermanentError("bad_device_token", "not an FCM registration token", gone=True)
        if self._client is None:
            self._client = self._policy.client(base_url=self._base_url, http2=True, timeout_s=self._timeout_s)
        content = self.body(message, token)
        refused: str | None = None
        while True:
            access = await self.access_token(stale=refused)
            response, body = await post(self._client, self._url, content, {
                "authorization": f"Bearer {access}", "content-type": "application/json; charset=UTF-8"}, "FCM")
            status = response.status_code
            if status == 200:
                name = _json(body).get("name")
                return Sent(provider_id=name if isinstance(name, str) else None)
            if status == 401 and refused is None:
                refused = access
                continue
            raise _error(status, response.headers, body)

    async def close(self) -> None:
        if self._refreshing is not None:
            await asyncio.gather(self._refreshing, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._token_client is not None:
            await self._token_client.aclose()
            self._token_client = None


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_code(body: bytes) -> str:
    error = _json(body).get("error")
    if not isinstance(error, dict):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and isinstance(detail.get("errorCode"), str):
            return detail["errorCode"]
    return error.get("status") if isinstance(error.get("status"), str) else ""


def _error(status: int, headers: httpx.Headers, body: bytes) -> Exception:
    code = _error_code(body)
    what = f"FCM answered {status} {code[:64]}".rstrip()
    # Gone only on FCM's own word: a 404 from a wrong FCM_BASE_URL must not delete every device.
    if code in GONE or (status == 404 and code == "NOT_FOUND"):
        return PermanentError(GONE.get(code, "unregistered"), what, gone=True)
    if status == 429 or status >= 500:
        return TransientError(f"fcm_{status}" if status in (429, 500, 503) else "fcm_5xx", what,
                              retry_after_s=retry_after_seconds(headers.get("retry-after")))
    if status == 401:
        return TransientError("fcm_unauthenticated", what)
    if status == 400:
        return PermanentError("fcm_invalid_argument", what)
    return PermanentError("fcm_rejected", what)
