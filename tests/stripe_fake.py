"""A Stripe-shaped HTTP server for tests, and helpers to sign and build Stripe webhook events.

`StripeFake` answers `POST /v1/payment_intents` (and `GET /v1/payment_intents/{id}`) and
`POST /v1/refunds` (`payment_intent`, `amount`; the refunds made are in `refunds`) the way
Stripe's API does: form-encoded parameters (`amount`, `currency`, `metadata[order_id]`, ...),
`Authorization: Bearer sk_...` (or HTTP Basic with the key as user name), and the
`Idempotency-Key` header (the first response for a key is replayed, byte for byte, for every
later request with that key and the same parameters; other parameters give Stripe's
`idempotency_error`). Every request is recorded in `requests`.

    fake = StripeFake(api_key="sk_test_123")
    await fake.start()          # in the test's loop; fake.base_url is then "http://127.0.0.1:<port>"
    ...
    await fake.stop()

`sign()` gives a real `Stripe-Signature` header value; `event()`, `payment_intent()`,
`succeeded_intent()`, `failed_intent()` and `refunded_charge()` build the JSON Stripe sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl

from tornado.web import RequestHandler

from tests.local_http import LocalHttpPeer

API_VERSION = "2024-06-20"


def _rand(n: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    body: bytes
    status: int = 0
    response: dict | None = None

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")

    @property
    def metadata(self) -> dict[str, str]:
        return {k[len("metadata["):-1]: v for k, v in self.form.items()
                if k.startswith("metadata[") and k.endswith("]")}


@dataclass
class _Stored:
    params: list[tuple[str, str]]
    path: str
    status: int
    body: bytes


class StripeFake(LocalHttpPeer):
    def __init__(self, api_key: str = "sk_test_123") -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.intents: dict[str, dict] = {}
        self.refunds: list[dict] = []  # refunds made (an idempotent replay makes none)
        self._idempotent: dict[str, _Stored] = {}
        self._errors: list[tuple[int, dict]] = []
        self._outage: tuple[int, dict] | None = None

    # Lifecycle ------------------------------------------------------------------------

    async def start(self) -> str:
        return self._serve([
            (r"/v1/payment_intents", _PaymentIntents, {"fake": self}),
            (r"/v1/payment_intents/([^/]+)", _PaymentIntent, {"fake": self}),
            (r"/v1/refunds", _Refunds, {"fake": self}),
            (r"/.*", _NotFound, {"fake": self}),
        ])

    # For tests --------------------------------------------------------------------------

    def fail_next(self, status: int = 500, error: dict | None = None) -> None:
        """The next API request (after authentication) gets this error instead."""
        self._errors.append((status, {"error": error or {"type": "api_error", "message": "Something went wrong."}}))

    def outage(self, status: int | None = 500, error: dict | None = None) -> None:
        """Every API request (after authentication) gets this error until `outage(None)`."""
        self._outage = None if status is None else (
            status, {"error": error or {"type": "api_error", "message": "Something went wrong."}})

    def created(self) -> list[Recorded]:
        """The successful `POST /v1/payment_intents` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/payment_intents"
                and r.status == 200]

    # The API ---------------------------------------------------------------------------

    def _authenticate(self, handler: RequestHandler) -> str | None:
        """The error message when the request's key is missing or wrong, else None."""
        header = handler.request.headers.get("Authorization", "")
        key = None
        if header.startswith("Bearer "):
            key = header[len("Bearer "):].strip()
        elif header.startswith("Basic "):
            try:
                key = base64.b64decode(header[len("Basic "):]).decode().split(":", 1)[0]
            except Exception:  # noqa: BLE001
                key = ""
        if not key:
            return ("You did not provide an API key. You need to provide your API key in the Authorization "
                    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
        if not hmac.compare_digest(key, self.api_key):
            return f"Invalid API Key provided: {key[:8]}{'*' * max(0, len(key) - 12)}{key[-4:]}"
        return None

    def create_intent(self, params: list[tuple[str, str]]) -> tuple[int, dict]:
        form = dict(params)
        if "amount" not in form:
            return 400, _param_error("amount", "Missing required param: amount.", code="parameter_missing")
        if "currency" not in form:
            return 400, _param_error("currency", "Missing required param: currency.", code="parameter_missing")
        try:
            amount = int(form["amount"])
            if str(amount) != form["amount"].strip():
                raise ValueError
        except ValueError:
            return 400, _param_error("amount", f"Invalid integer: {form['amount']}")
        if amount < 1:
            return 400, _param_error("amount", "Amount must be at least $0.50 usd", code="amount_too_small")
        currency = form["currency"]
        if currency != currency.lower() or len(currency) != 3:
            return 400, _param_error("currency", f"Invalid currency: {currency}. Stripe currently supports "
                                                 "these currencies: usd, eur, ...")
        metadata = {k[len("metadata["):-1]: v for k, v in params if k.startswith("metadata[") and k.endswith("]")}
        pi_id = "pi_" + _rand(24)
        intent = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "automatic_payment_methods": {"allow_redirects": "always", "enabled": True}
            if form.get("automatic_payment_methods[enabled]") == "true" else None,
            "capture_method": form.get("capture_method", "automatic"),
            "client_secret": f"{pi_id}_secret_{_rand(25)}",
            "confirmation_method": "automatic",
            "created": int(time.time()),
            "currency": currency,
            "customer": form.get("customer"),
            "description": form.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "next_action": None,
            "payment_method": None,
            "payment_method_types": [v for k, v in params if k.startswith("payment_method_types[")] or ["card"],
            "receipt_email": form.get("receipt_email"),
            "status": "requires_payment_method",
        }
        self.intents[pi_id] = intent
        return 200, intent


    def create_refund(self, params: list[tuple[str, str]]) -> tuple[int, dict]:
        form = dict(params)
        intent = self.intents.get(form.get("payment_intent", ""))
        if intent is None:
            return 400, {"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "payment_intent",
                                   "message": f"No such payment_intent: '{form.get('payment_intent')}'"}}
        left = intent["amount"] - sum(r["amount"] for r in self.refunds if r["payment_intent"] == intent["id"])
        if left <= 0:
            return 400, {"error": {"type": "invalid_request_error", "code": "charge_already_refunded",
                                   "message": "Charge has already been refunded."}}
        try:
            amount = int(form.get("amount", left))
        except ValueError:
            return 400, _param_error("amount", f"Invalid integer: {form['amount']}")
        if not 0 < amount <= left:
            return 400, {"error": {"type": "invalid_request_error", "code": "amount_too_large", "param": "amount",
                                   "message": f"Refund amount ({amount}) is greater than unrefunded amount ({left})."}}
        refund = {"id": "re_" + _rand(24), "object": "refund", "amount": amount, "charge": "ch_" + _rand(24),
                  "created": int(time.time()), "currency": intent["currency"], "metadata": {},
                  "payment_intent": intent["id"], "reason": form.get("reason"), "status": "succeeded"}
        self.refunds.append(refund)
        return 200, refund


def _param_error(param: str, message: str, code: str = "parameter_invalid_integer") -> dict:
    return {"error": {"type": "invalid_request_error", "code": code, "param": param, "message": message,
                      "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"}}


class _Base(RequestHandler):
    def initialize(self, fake: StripeFake) -> None:
        self.fake = fake
        self.record: Recorded | None = None

    def check_xsrf_cookie(self) -> None:
        pass

    def prepare(self) -> None:
        body = self.request.body or b""
        try:
            params = parse_qsl(body.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            params = []
        self.params = params
        self.record = Recorded(self.request.method, self.request.path, dict(self.request.headers.get_all()),
                               dict(params), body)
        self.fake.requests.append(self.record)

    def respond(self, status: int, payload: dict | bytes) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.record.status = status
        self.record.response = json.loads(raw)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Request-Id", "req_" + _rand(14))
        self.set_header("Stripe-Version", API_VERSION)
        self.finish(raw)

    def authenticated(self) -> bool:
        error = self.fake._authenticate(self)
        if error:
            self.set_header("WWW-Authenticate", 'Basic realm="Stripe"')
            self.respond(401, {"error": {"type": "invalid_request_error", "message": error}})
            return False
        if self.fake._errors or self.fake._outage:
            status, body = self.fake._errors.pop(0) if self.fake._errors else self.fake._outage
            self.respond(status, body)
            return False
        return True


class _Creating(_Base):
    def create(self, make) -> None:
        """A POST that creates something: the first answer for an Idempotency-Key is replayed."""
        if not self.authenticated():
            return
        key = self.request.headers.get("Idempotency-Key")
        if key is not None:
            stored = self.fake._idempotent.get(key)
            if stored is not None:
                if stored.params != self.params or stored.path != self.request.path:
                    self.respond(400, {"error": {
                        "type": "idempotency_error",
                        "message": "Keys for idempotent requests can only be used with the same parameters they "
                                   "were first used with. Try using a key other than "
                                   f"'{key}' if you meant to execute a different request."}})
                    return
                self.set_header("Idempotent-Replayed", "true")
                self.respond(stored.status, stored.body)
                return
        status, payload = make(self.params)
        raw = json.dumps(payload).encode()
        if key is not None and status < 500:
            self.fake._idempotent[key] = _Stored(self.params, self.request.path, status, raw)
        self.respond(status, raw)


class _PaymentIntents(_Creating):
    def post(self) -> None:
        self.create(self.fake.create_intent)


class _Refunds(_Creating):
    def post(self) -> None:
        self.create(self.fake.create_refund)


class _PaymentIntent(_Base):
    def get(self, pi_id: str) -> None:
        if not self.authenticated():
            return
        intent = self.fake.intents.get(pi_id)
        if intent is None:
            self.respond(404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                         "param": "intent", "message": f"No such payment_intent: '{pi_id}'"}})
            return
        self.respond(200, intent)


class _NotFound(_Base):
    def _any(self, *args) -> None:
        if not self.authenticated():
            return
        self.respond(404, {"error": {"type": "invalid_request_error",
                                     "message": f"Unrecognized request URL ({self.request.method}: "
                                                f"{self.request.path})."}})

    get = post = put = patch = delete = _any


# Webhooks ---------------------------------------------------------------------------------

def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value for `payload`, as Stripe computes it."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    signed = f"{ts}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def event(type: str, obj: dict, event_id: str | None = None, created: int | None = None) -> dict:  # noqa: A002
    return {
        "id": event_id or "evt_" + _rand(24),
        "object": "event",
        "type": type,
        "api_version": API_VERSION,
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_" + _rand(14), "idempotency_key": str(uuid.uuid4())},
        "data": {"object": obj},
    }


def payment_intent(*, amount: int, status: str, order_id: str | None = None, currency: str = "usd",
                   pi_id: str | None = None, amount_received: int | None = None, metadata: dict | None = None,
                   last_payment_error: dict | None = None) -> dict:
    """A PaymentIntent object. `metadata` replaces the default `{"order_id": order_id}` when given."""
    pi_id = pi_id or "pi_" + _rand(24)
    if metadata is None:
        metadata = {} if order_id is None else {"order_id": order_id}
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount_received if amount_received is not None else (
            amount if status == "succeeded" else 0),
        "capture_method": "automatic",
        "client_secret": f"{pi_id}_secret_{_rand(25)}",
        "confirmation_method": "automatic",
        "created": int(time.time()) - 30,
        "currency": currency,
        "customer": None,
        "description": None,
        "last_payment_error": last_payment_error,
        "latest_charge": ("ch_" + _rand(24)) if status == "succeeded" else None,
        "livemode": False,
        "metadata": metadata,
        "payment_method": "pm_" + _rand(24),
        "payment_method_types": ["card"],
        "status": status,
    }


def succeeded_intent(*, amount: int, order_id: str | None = None, **kwargs) -> dict:
    """`data.object` of `payment_intent.succeeded`; `amount_received` defaults to `amount`."""
    return payment_intent(amount=amount, status="succeeded", order_id=order_id, **kwargs)


DECLINED = {"message": "Your card was declined.", "code": "card_declined", "decline_code": "generic_decline",
            "type": "card_error", "doc_url": "https://stripe.com/docs/error-codes/card-declined"}


def failed_intent(*, amount: int, order_id: str | None = None, last_payment_error: dict | None = None,
                  **kwargs) -> dict:
    """`data.object` of `payment_intent.payment_failed` (a declined card unless told otherwise)."""
    return payment_intent(amount=amount, status="requires_payment_method", order_id=order_id,
                          last_payment_error=last_payment_error or dict(DECLINED), **kwargs)


def refunded_charge(*, amount: int, amount_refunded: int, payment_intent: str, order_id: str | None = None,
                    currency: str = "usd", charge_id: str | None = None, metadata: dict | None = None) -> dict:
    """`data.object` of `charge.refunded`; `amount_refunded` is cumulative, as at Stripe."""
    if metadata is None:
        metadata = {} if order_id is None else {"order_id": order_id}
    return {
        "id": charge_id or "ch_" + _rand(24),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "captured": True,
        "created": int(time.time()) - 60,
        "currency": currency,
        "livemode": False,
        "metadata": metadata,
        "paid": True,
        "payment_intent": payment_intent,
        "refunded": amount_refunded >= amount,
        "status": "succeeded",
    }
