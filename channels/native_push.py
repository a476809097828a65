"""What the APNs and FCM channels share: the collapse key, the priority rule, the payload
limit, and one POST under the outgoing policy (hub/adapters/outgoing.py) with its failures classified."""

from __future__ import annotations

import hashlib

import httpx

from domain.delivery import Message, PermanentError, TransientError
from hub.adapters.outgoing import OutgoingRefused, ResponseTooLarge, read_capped

CONNECTION_RETRIES = 2  # immediate retries of a request whose connection broke (reset, GOAWAY)
MAX_COLLAPSE_ID_BYTES = 64  # APNs' limit for apns-collapse-id
MAX_ANSWER_BYTES = 16 * 1024  # provider answers are small JSON
MAX_PAYLOAD_BYTES = 4096  # what APNs and FCM deliver to a phone in one notification


def collapse_id(message: Message) -> str | None:
    """The entity the message is about (an order or a product), so a newer message about it
    replaces an older one not yet shown; at most 64 bytes (longer ids are hashed)."""
    data = message.data if isinstance(message.data, dict) else {}
    for field, prefix in (("order_id", "order"), ("product_id", "product")):
        value = data.get(field)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            key = f"{prefix}-{value}"
            if len(key.encode()) > MAX_COLLAPSE_ID_BYTES:
                key = f"{prefix}-{hashlib.sha256(str(value).encode()).hexdigest()[:48]}"
            return key
    return None


def within_payload_limit(payload: bytes, provider: str) -> bytes:
    """`payload` (what the phone receives) if it is within MAX_PAYLOAD_BYTES; refused before
    sending otherwise, as the provider would refuse it."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PermanentError("payload_too_large", f"{provider} payload of {len(payload)} bytes is over 4 KiB")
    return payload


def high_priority(message: Message) -> bool:
    return message.priority in ("high", "urgent")


async def post(client: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str],
               provider: str) -> tuple[httpx.Response, bytes]:
    """The answer and its body (capped). A connection that breaks before the answer (a
    reset, a GOAWAY that fails the requests in flight) is tried again on a new one, up to
    CONNECTION_RETRIES times; then TransientError("unreachable"). Timeouts are transient;
    a destination the policy refuses or an oversized answer is permanent."""
    broken = 0
    while True:
        try:
            async with client.stream("POST", url, content=content, headers=headers) as response:
                return response, await read_capped(response, MAX_ANSWER_BYTES)
        except OutgoingRefused as exc:
            if exc.reason == "unresolvable":
                raise TransientError("unreachable", f"{provider} does not resolve") from None
            raise PermanentError("destination_refused", f"{provider}: {exc.reason}") from None
        except ResponseTooLarge:
            raise PermanentError("answer_too_large", f"{provider} answered too much") from None
        except httpx.TimeoutException:
            raise TransientError("timeout", f"{provider} did not answer in time") from None
        except httpx.TransportError as exc:
            broken += 1
            if broken > CONNECTION_RETRIES:
                raise TransientError("unreachable", f"{provider}: {type(exc).__name__}") from None
