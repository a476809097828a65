"""The hub's own events carry a signature only the hub can make, so a service that writes
`source: <HUB_EVENT_SOURCE>` into an event cannot pass it off as the hub's (which would skip
the state machine: a refund notification for an unpaid order).

The signature is a Kafka header, `hub-signature`: HMAC-SHA256 over the message value with a
key derived from JWT_SECRET (every hub process of a deployment shares it; no service has
it). Consumers dead-letter an event that claims the hub's source without a valid one.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "hub-signature"
_KEY_LABEL = b"hub event signature v1"  # keeps this key apart from the JWT signing key


class EventSigner:
    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()

    def _signature(self, value: bytes) -> bytes:
        return hmac.new(self._key, value, hashlib.sha256).hexdigest().encode()

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """The Kafka headers to publish the hub's own event `value` with."""
        return [(SIGNATURE_HEADER, self._signature(value))]

    def signed(self, headers, value: bytes | None) -> bool:
        """Whether a consumed message (its headers and value) was signed by the hub."""
        given = [v for k, v in headers or () if k == SIGNATURE_HEADER]
        return len(given) == 1 and isinstance(given[0], bytes) and value is not None \
            and hmac.compare_digest(given[0], self._signature(value))
