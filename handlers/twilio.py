"""POST /api/v1/webhooks/twilio: SMS status callbacks.

The `X-Twilio-Signature` is checked before anything else (HMAC-SHA1 over the URL Twilio
called and the form fields, with the auth token). The status goes to the domain
(domain/delivery_reports.py), which moves a delivery forward only.
"""

from __future__ import annotations

from tornado.httputil import parse_body_arguments
from twilio.request_validator import RequestValidator

from domain.notification_policy import DELIVERED, FAILED, SENT
from handlers.base import ApiError, BaseHandler

# Twilio's MessageStatus → ours.
_STATUSES = {"sent": SENT, "delivered": DELIVERED, "undelivered": FAILED, "failed": FAILED}


class TwilioStatusHandler(BaseHandler):
    openapi = {"post": {"summary": "Twilio SMS status callback (X-Twilio-Signature checked); moves the delivery "
                                   "forward only", "status": 204, "auth": None}}

    async def post(self) -> None:
        settings = self.config
        if not settings.twilio_auth_token:
            raise ApiError(404, "sms_unavailable", "SMS is not configured on this hub.")
        # The body is streamed (BaseHandler), so Tornado never fills body_arguments: parse it here.
        form: dict[str, list[bytes]] = {}
        parse_body_arguments(self.request.headers.get("Content-Type", ""), self.body(), form, {})
        params = {name: values[-1].decode(errors="replace") for name, values in form.items()}
        # Twilio signs the URL it called: behind a proxy that is the public URL, not ours.
        url = f"{settings.public_url}{self.request.uri}" if settings.public_url else self.request.full_url()
        signature = self.request.headers.get("X-Twilio-Signature", "")
        if not signature or not RequestValidator(settings.twilio_auth_token).validate(url, params, signature):
            raise ApiError(403, "invalid_signature", "The X-Twilio-Signature does not match this request.")
        status = _STATUSES.get(params.get("MessageStatus", ""))
        notification_id = self.get_query_argument("n", None)
        if status is not None and notification_id:
            reason = f"twilio_{params.get('ErrorCode') or params['MessageStatus']}" if status == FAILED else None
            await self.services.delivery_reports.report(notification_id, "sms", status, provider_id=params.get("MessageSid"),
                                                   reason=reason)
        self.set_status(204)
        self.finish()
