"""Firebase Cloud Messaging, HTTP v1: `POST {FCM_BASE_URL}/v1/projects/{project}/messages:send`.

The OAuth2 access token comes from the service account through google-auth (which signs
the RS256 assertion and posts it to the account's `token_uri`). Its refresh is
synchronous, so it runs in a thread, on an httpx client of channels/provider_http.py
(same TLS trust and destination policy as the sends); concurrent sends share one refresh;
the token is refreshed ahead of its expiry, and once more when FCM answers 401.

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

import httpx
from google.auth import _helpers, exceptions as google_exceptions, transport
from google.oauth2 import service_account

from channels import provider_http
from channels.apns import CONNECTION_RETRIES, collapse_id, high_priority
from channels.base import Channel, Message, PermanentError, Sent, TransientError
from channels.push import retry_after_seconds
from domain.devices import FCM_TOKEN_RE

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
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self):
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class _Request(transport.Request):
    """google-auth's transport over a policy-checked httpx client."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        try:
            return _Response(self._client.request(method, url, content=body, headers=headers))
        except (httpx.HTTPError, provider_http.RefusedDestination) as exc:
            raise google_exceptions.TransportError(type(exc).__name__) from None


def data_strings(message: Message) -> dict[str, str]:
    """FCM data values must be strings: others are sent as JSON. Extras that do not fit the
    limit are left out (the app can fetch the notification by id)."""
    base = {"notification_id": message.notification_id, "type": message.type}
    extra = {str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), ensure_ascii=False)
             for k, v in (message.data if isinstance(message.data, dict) else {}).items()
             if k not in base}
    data = {**extra, **base}
    if len(json.dumps(data, ensure_ascii=False).encode()) > MAX_DATA_BYTES:
        return base
    return data


class FcmChannel(Channel):
    name = "fcm"

    def __init__(self, service_account_file: str, project_id: str | None, base_url: str, timeout_s: float,
                 policy: provider_http.DestinationPolicy, *, extra_ca_file: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        info, self.project = load_service_account(service_account_file, project_id)
        self._credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        self._url = f"{base_url.rstrip('/')}/v1/projects/{self.project}/messages:send"
        self._timeout_s, self._policy, self._extra_ca_file = timeout_s, policy, extra_ca_file
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._token_client: httpx.Client | None = None
        self._token: tuple[str, float] | None = None  # (access token, when to refresh it on our clock)
        self._refreshing: asyncio.Task | None = None
        self.refreshes = 0

    # Access token ----------------------------------------------------------------------
    async def access_token(self, stale: str | None = None) -> str:
        """A valid token; `stale` is one FCM refused (401): a new one replaces it, once."""
        token = self._token
        if token is not None and token[0] != stale and self._clock() < token[1]:
            return token[0]
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
        task = self._refreshing
        try:
            return await asyncio.shield(task)
        finally:
            if self._refreshing is task and task.done():
                self._refreshing = None

    async def _refresh(self) -> str:
        if self._token_client is None:
            self._token_client = provider_http.sync_client(self._policy, timeout_s=self._timeout_s,
                                                           extra_ca_file=self._extra_ca_file)
        request = _Request(self._token_client)
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
        return json.dumps({"message": {
            "token": token,
            "notification": {"title": message.content["title"], "body": message.content["body"]},
            "data": data_strings(message),
            "android": android,
            "apns": {"headers": apns_headers, "payload": {"aps": aps}},  # iOS apps that use FCM
        }}, separators=(",", ":"), ensure_ascii=False).encode()

    async def send(self, message: Message) -> Sent:
        device = message.address if isinstance(message.address, dict) else {}
        token = device.get("token")
        if not isinstance(token, str) or not FCM_TOKEN_RE.match(token):
            raise PermanentError("bad_device_token", "not an FCM registration token", gone=True)
        if self._client is None:
            self._client = provider_http.async_client(self._policy, timeout_s=self._timeout_s,
                                                      extra_ca_file=self._extra_ca_file)
        content = self.body(message, token)
        refused: str | None = None
        broken = 0
        while True:
            access = await self.access_token(stale=refused)
            try:
                response = await provider_http.post(self._client, self._url, content=content, headers={
                    "authorization": f"Bearer {access}", "content-type": "application/json; charset=UTF-8"})
            except httpx.TimeoutException:
                raise TransientError("timeout", "FCM did not answer in time") from None
            except provider_http.RefusedDestination as exc:
                raise PermanentError("destination_refused", str(exc)) from None
            except httpx.TransportError as exc:
                broken += 1
                if broken <= CONNECTION_RETRIES:
                    continue
                raise TransientError("unreachable", f"FCM: {type(exc).__name__}") from None
            status = response.status_code
            if status == 200:
                return Sent(provider_id=_json(response).get("name"))
            if status == 401 and refused is None:
                refused = access
                continue
            raise _error(status, response)

    async def close(self) -> None:
        if self._refreshing is not None:
            await asyncio.gather(self._refreshing, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._token_client is not None:
            self._token_client.close()
            self._token_client = None


def _json(response: httpx.Response) -> dict:
    try:
        value = json.loads(response.content)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_code(response: httpx.Response) -> str:
    error = _json(response).get("error")
    if not isinstance(error, dict):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and isinstance(detail.get("errorCode"), str):
            return detail["errorCode"]
    return error.get("status") if isinstance(error.get("status"), str) else ""


def _error(status: int, response: httpx.Response) -> Exception:
    code = _error_code(response)
    what = f"FCM answered {status} {code[:64]}".rstrip()
    if code in GONE or status == 404:
        return PermanentError(GONE.get(code, "unregistered"), what, gone=True)
    if status == 429 or status >= 500:
        return TransientError(f"fcm_{status}" if status in (429, 500, 503) else "fcm_5xx", what,
                              retry_after_s=retry_after_seconds(response.headers.get("retry-after")))
    if status == 401:
        return TransientError("fcm_unauthenticated", what)
    if status == 400:
        return PermanentError("fcm_invalid_argument", what)
    return PermanentError("fcm_rejected", what)
