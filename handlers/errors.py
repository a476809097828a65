"""The one place where errors become HTTP statuses. The domain's errors carry a code, a
sentence and details, never a status: this table maps them."""

from __future__ import annotations

from domain.errors import Conflict, DomainError, Forbidden, Invalid, Locked, NotFound, RateLimited, Unauthorized
from domain.payments import NotYet, PaymentProviderError, PaymentsUnavailable

# Looked up along the error's class hierarchy: the most specific class listed wins.
STATUS_OF = {
    DomainError: 400,
    Invalid: 422,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Locked: 423,
    RateLimited: 429,
    PaymentsUnavailable: 503,
    NotYet: 503,  # the sender retries (a Stripe webhook, a service's event)
    PaymentProviderError: 502,
}


def status_of(exc: DomainError) -> int:
    return next(STATUS_OF[cls] for cls in type(exc).__mro__ if cls in STATUS_OF)
