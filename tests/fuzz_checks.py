"""A schemathesis check for tests/test_fuzz_openapi.py (loaded with SCHEMATHESIS_HOOKS).

Data that /api/v1/openapi.json allows must be accepted: a 400 or 422 for it means the
document and the validation disagree, which breaks generated clients. The only refusals
allowed are those that depend on state or settings no schema can carry; each is listed
here with its reason, by operation and error code.
"""

from __future__ import annotations

import schemathesis

STATE_DEPENDENT: dict[str, dict[str, set[str] | None]] = {
    # The lines name products by id: an id the fuzzer makes up names none.
    "POST /api/v1/orders": {"unknown_product": None},
    # Whether a template compiles and renders, and which parts a channel needs (the channel
    # is in the path), is checked by rendering it.
    "PUT /api/v1/templates/{notification_type}/{channel}": {"invalid_template": None, "unknown_channel": None},
    # Only products with a points price can be bought with points.
    "POST /api/v1/points/redemptions": {"not_redeemable": None},
    # The Stripe-Signature is an HMAC of the body with the webhook secret.
    "POST /api/v1/webhooks/stripe": {"invalid_signature": None},
    # Web Push endpoints must be on an allowed host (HUB_PUSH_ALLOWED_HOSTS), a setting: only
    # a refusal of the endpoint itself is allowed.
    "POST /api/v1/users/me/push-subscriptions": {"validation_failed": {"endpoint"}, "endpoint_not_allowed": None},
}
# Refusals that say nothing about the data's shape.
ACCEPTABLE = {401, 403, 404, 409, 423, 429}


@schemathesis.check
def schema_valid_data_is_accepted(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    if response.status_code in ACCEPTABLE or response.status_code >= 500:  # 5xx: not_a_server_error's
        return None
    try:
        error = response.json()["error"]
        code, details = error["code"], error.get("details")
    except (ValueError, KeyError, TypeError):
        code, details = None, None
    allowed = STATE_DEPENDENT.get(case.operation.label, {})
    if code in allowed:
        fields = allowed[code]
        if fields is None or (isinstance(details, list) and {d.get("field") for d in details} <= fields):
            return None
    raise AssertionError(f"Schema-valid data refused with {response.status_code} {code}: {response.text[:500]}")
