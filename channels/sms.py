"""SMS through Twilio's Messages API, with the official library on an httpx client under
the outgoing policy (hub/adapters/outgoing.py: timeouts, no redirects, capped answers)."""

from __future__ import annotations

import logging
import re

import httpx
from twilio.base.exceptions import TwilioException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from domain.delivery import Channel, Message, PermanentError, Sent, TransientError
from hub.adapters.outgoing import OutgoingPolicy, ResponseTooLarge, read_capped

# The library logs every request line and header at INFO; keep that out of the hub's logs.
_twilio_log = logging.getLogger(__name__ + ".twilio")
_twilio_log.setLevel(logging.WARNING)
MAX_ANSWER_BYTES = 16 * 1024  # a Message resource is about 1 KB of JSON
MESSAGE_SID_RE = re.compile(r"^(SM|MM)[0-9a-f]{32}$")


class _TwilioOverHttpx(AsyncHttpClient):
    """Twilio's async HTTP client interface on an httpx client of the outgoing policy."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        super().__init__(_twilio_log, True, None)
        self._http = http

    async def request(self, method, uri, params=None, data=None, headers=None, auth=None, timeout=None,
                      allow_redirects=False) -> Response:
        async with self._http.stream(method.upper(), uri, params=params, data=data, headers=headers,
                                     auth=auth) as response:
            body = await read_capped(response, MAX_ANSWER_BYTES)
        return Response(response.status_code, body.decode("utf-8", "replace"), response.headers)

    async def close(self) -> None:
        await self._http.aclose()


class SmsChannel(Channel):
    name = "sms"

    def __init__(self, account_sid: str, auth_token: str, from_number: str, api_base: str,
                 status_callback_url: str | None, timeout_s: float, *, policy: OutgoingPolicy) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.from_number = from_number
        self.api_base = api_base.rstrip("/")
        self.status_callback_url = status_callback_url
        self.timeout_s = timeout_s
        self._policy = policy
        self._client: Client | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"<SmsChannel {self.api_base} account={self.account_sid}>"

    def _twilio(self) -> Client:
        if self._client is None:
            http = _TwilioOverHttpx(self._policy.client(base_url=self.api_base, timeout_s=self.timeout_s))
            client = Client(self.account_sid, self._auth_token, http_client=http)
            # TWILIO_EDGE / TWILIO_REGION from the environment would rewrite api_base's host.
            client.edge = client.region = None
            client.api.base_url = self.api_base  # ApiBase hard-codes https://api.twilio.com
            self._client = client
        return self._client

    async def send(self, message: Message) -> Sent:
        params = {"to": str(message.address), "from_": self.from_number, "body": message.content["text"]}
        if self.status_callback_url:
            # The notification id in the URL finds the delivery even if the callback
            # overtakes our record of Twilio's message sid.
            params["status_callback"] = f"{self.status_callback_url}?n={message.notification_id}"
        try:
            created = await self._twilio().messages.create_async(**params)
        except TwilioException as exc:  # TwilioRestException or the RFC 9457 TwilioServiceException
            raise _classify(exc) from None
        except httpx.TimeoutException:
            raise TransientError("timeout", f"Twilio did not answer within {self.timeout_s}s") from None
        except ResponseTooLarge:
            raise TransientError("provider_error", "Twilio's answer was larger than expected") from None
        except httpx.HTTPError as exc:
            raise TransientError("unreachable", f"Twilio request failed: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # a 2xx answer that is not JSON
            raise TransientError("provider_error", f"unreadable answer from Twilio: {exc}") from None
        # The sid is shown in the delivery log: only in Twilio's own shape.
        sid = created.sid if isinstance(created.sid, str) and MESSAGE_SID_RE.match(created.sid) else None
        return Sent(provider_id=sid)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.http_client.close()
            self._client = None


def _classify(exc: TwilioException) -> TransientError | PermanentError:
    status = getattr(exc, "status", None) or 0
    code = getattr(exc, "code", None)
    text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", None) or str(exc)
    detail = f"Twilio {status}, error {code}: {text}"[:300]
    if status == 429:
        return TransientError("sms_rate_limited", detail)
    if 400 <= status < 500:
        return PermanentError("sms_rejected", detail)
    return TransientError("sms_provider_error", detail)  # 5xx, or an unexpected 3xx
