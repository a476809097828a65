"""What every HTTP handler shares: the JSON error shape, body size limit, body parsing
and validation, caller authentication, CORS, request ids and metrics."""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.web
from pydantic import BaseModel, ValidationError

from domain.callers import SERVICE, Caller
from domain.errors import DomainError, Forbidden, Unauthorized
from handlers import bounded_json
from handlers.errors import status_of
from hub.wiring.client_ip import client_ip
from hub.wiring.metrics import HTTP_LATENCY
from hub.wiring.openapi import MAX_PATH_PARAMETER

if TYPE_CHECKING:  # names only: handlers reach the services through the application
    from config.settings import Settings
    from hub.wiring.container import Services

log = logging.getLogger("hub.http")
Model = TypeVar("Model", bound=BaseModel)

_REASON_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "body_too_large", 422: "validation_failed",
    423: "locked", 429: "rate_limited", 500: "internal_error", 503: "unavailable",
}


class ApiError(tornado.web.HTTPError):
    """An HTTP error with the contract's code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(status, reason=None)
        self.code, self.message, self.details = code, message, details


class Wired:
    """What a handler reaches of the hub, from the application settings (hub/wiring/app.py):
    `self.config` (config/settings.py; `self.settings` is Tornado's) and `self.services`
    (hub/wiring/container.py). No stores: handlers call services (tests/test_layout.py)."""

    @property
    def config(self) -> Settings:
        return self.application.settings["config"]

    @property
    def services(self) -> Services:
        return self.application.settings["services"]


@tornado.web.stream_request_body
class BaseHandler(Wired, tornado.web.RequestHandler):
    """The body is streamed so that an oversized one is refused without holding it in
    memory: chunks beyond the limit are discarded and the request answers 413."""

    #: OpenAPI description per method: {"post": {"summary", "body", "auth", "status"}}.
    openapi: dict[str, dict] = {}

    # Request lifecycle -------------------------------------------------------------
    def initialize(self) -> None:
        # Here rather than in prepare(): an unknown HTTP method is answered without prepare().
        self._started = time.perf_counter()
        self._chunks: list[bytes] = []
        self._size = 0
        self._caller: Caller | None | bool = False  # False: not looked up yet

    def prepare(self) -> None:
        self.application.in_flight.add(self)
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and (len(declared) > 18 or int(declared) > self.config.max_body_bytes):
            self._too_large()
        if any(len(value) > MAX_PATH_PARAMETER for value in self.path_kwargs.values()):
            raise ApiError(404, "not_found", f"No such resource (ids are at most {MAX_PATH_PARAMETER} characters).")

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self.config.max_body_bytes:
            self._chunks.append(chunk)
        else:
            self._chunks.clear()

    def _too_large(self) -> None:
        limit = self.config.max_body_bytes
        raise ApiError(413, "body_too_large", f"The request body is larger than {limit} bytes.", {"limit": limit})

    def on_finish(self) -> None:
        self.application.in_flight.discard(self)
        # Label values from fixed sets only: any client can send any method.
        method = self.request.method if self.request.method in self.SUPPORTED_METHODS else "OTHER"
        HTTP_LATENCY.labels(type(self).__name__, method, str(self.get_status())).observe(
            time.perf_counter() - self._started)

    def on_connection_close(self) -> None:
        self.application.in_flight.discard(self)

    def set_default_headers(self) -> None:
        # Runs again when an error clears the headers; the id must survive that.
        if not hasattr(self, "request_id"):
            self.request_id = self.request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
        self.set_header("X-Request-ID", self.request_id)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        origin = self.request.headers.get("Origin")
        if origin and origin in self.application.settings["cors_origins"]:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
            self.set_header("Access-Control-Expose-Headers", "X-Request-ID, Retry-After, X-Channel-Seq")

    def options(self, *args: Any, **kwargs: Any) -> None:
        """CORS preflight: allowed origins get the methods and headers the API uses."""
        if "Access-Control-Allow-Origin" in self._headers:
            self.set_header("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
            self.set_header("Access-Control-Allow-Headers",
                            "Authorization, Content-Type, Idempotency-Key, X-API-Key, X-Request-ID")
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)

    # Bodies ------------------------------------------------------------------------
    def body(self) -> bytes:
        if self._size > self.config.max_body_bytes:
            self._too_large()
        return b"".join(self._chunks)

    def json_body(self) -> Any:
        """The request body decoded within bounds (handlers/bounded_json.py): 400 for
        malformed, too deep or too large JSON, 422 naming each number out of range."""
        try:
            return bounded_json.loads(self.body() or b"null")
        except bounded_json.MalformedJson as exc:
            raise ApiError(400, "malformed_json", f"The request body is not usable JSON: {exc}.") from None
        except bounded_json.NumbersOutOfRange as exc:
            raise ApiError(422, "validation_failed", "Some numbers are out of range.",
                           [{"field": field, "message": "number out of range"} for field in exc.fields]) from None

    def parse(self, model: type[Model]) -> Model:
        """The request body as `model`: 400 for malformed JSON, 422 naming each bad field."""
        data = self.json_body()
        if not isinstance(data, dict):
            raise ApiError(422, "validation_failed", "The request body must be a JSON object.",
                           [{"field": "", "message": "expected an object"}])
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ApiError(422, "validation_failed", "Some fields are invalid.", _field_errors(exc)) from None

    def parse_query(self, model: type[Model]) -> Model:
        """The query string as `model` (the last value of a repeated parameter wins; empty
        values count as absent): 422 naming each bad parameter."""
        raw = {name: values[-1].decode(errors="replace") for name, values in self.request.query_arguments.items()}
        try:
            return model.model_validate({k: v for k, v in raw.items() if v != ""})
        except ValidationError as exc:
            raise ApiError(422, "validation_failed", "Some query parameters are invalid.", _field_errors(exc)) from None

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    # Callers -----------------------------------------------------------------------
    @property
    def client_ip(self) -> str:
        """The client's address, through trusted proxies (hub/wiring/client_ip.py): what per-client
        limits count by. Never `request.remote_ip` directly."""
        return client_ip(self.request, self.config)

    @property
    def caller(self) -> Caller | None:
        """Who is asking, from a Bearer token or a service API key; None if anonymous."""
        if self._caller is False:
            self._caller = self._authenticate()
        return self._caller

    def _authenticate(self) -> Caller | None:
        key = self.request.headers.get("X-API-Key")
        if key is not None:
            if any(hmac.compare_digest(key.encode(), k.encode()) for k in self.config.service_key_list):
                return SERVICE
            raise Unauthorized("The API key is not valid.", code="invalid_api_key")
        header = self.request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Use 'Authorization: Bearer <access_token>'.", code="invalid_token")
        caller, _expires = self.services.access_tokens.verify(token.strip())
        return caller

    def require_user(self) -> Caller:
        """A signed-in user (not a service key)."""
        caller = self.caller
        if caller is None or caller.is_service:
            raise Unauthorized("Sign in first.", code="authentication_required")
        return caller

    def require_admin(self) -> Caller:
        caller = self.require_user()
        if not caller.is_admin:
            raise Forbidden("This needs an admin.", code="admin_only")
        return caller

    def require_service_or_admin(self) -> Caller:
        caller = self.caller
        if caller is None:
            raise Unauthorized("Sign in or send a service API key.", code="authentication_required")
        if not (caller.is_service or caller.is_admin):
            raise Forbidden("This needs a service API key or an admin.", code="forbidden")
        return caller

    # Errors ------------------------------------------------------------------------
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, DomainError):
            status_code, code, message, details = status_of(exc), exc.code, exc.message, exc.details
            self.set_status(status_code)
            if isinstance(details, dict) and "retry_after" in details:
                self.set_header("Retry-After", str(details["retry_after"]))
        elif isinstance(exc, ApiError):
            code, message, details = exc.code, exc.message, exc.details
        else:
            code = _REASON_CODES.get(status_code, "error")
            message = self._reason if status_code < 500 else "Something went wrong on our side."
            details = None
        self.finish(json.dumps({"error": {"code": code, "message": message, "details": details}}, default=str))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, (DomainError, tornado.web.HTTPError)):
            return  # a client's mistake, answered with its status; the access log has it
        log.error("unhandled error", exc_info=(typ, value, tb), extra={"request_id": getattr(self, "request_id", None)})


def _field_errors(exc: ValidationError) -> list[dict]:
    return [
        {"field": ".".join(str(part) for part in err["loc"]), "message": err["msg"].removeprefix("Value error, ")}
        for err in exc.errors()
    ]


class NotFoundHandler(BaseHandler):
    """Any unknown route, for every method."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, "route_not_found", f"No such endpoint: {self.request.method} {self.request.path}.")
