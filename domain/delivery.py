"""What every delivery channel implements: send one rendered message to one address.
The domain's types (channels/ implements them; the domain never imports channels/).

A channel never retries by itself: it says whether a failure is worth retrying
(TransientError: timeouts, 4xx SMTP replies, 5xx HTTP answers, 429) or not
(PermanentError: a rejected address, a dead subscription), and the notification
dispatcher decides when to try again.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DeliveryError(Exception):
    """`reason` is a short snake_case word recorded in the delivery log; the message is
    for operators and never holds secrets."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TransientError(DeliveryError):
    """Worth another attempt later; `retry_after_s` is how long the provider asked us to
    wait (its Retry-After), if it said."""

    def __init__(self, reason: str, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason, message)
        self.retry_after_s = retry_after_s


class PermanentError(DeliveryError):
    """Retrying cannot help. `gone` tells the dispatcher the address itself is dead (a
    404/410 push subscription is forgotten; a hard-bounced email address is not used
    again)."""

    def __init__(self, reason: str, message: str, *, gone: bool = False) -> None:
        super().__init__(reason, message)
        self.gone = gone


@dataclass
class Message:
    """One notification rendered for one channel and one address.

    `content` holds the channel's rendered parts: email `subject`, `text`, `html`;
    SMS `text`; push `title`, `body`; websocket the notification frame."""

    notification_id: str
    user_id: str
    address: object  # email address, phone number, push subscription dict, or user id
    content: dict[str, str]
    priority: str = "normal"
    ttl_s: int = 86400
    topic: str | None = None  # replaces an older undelivered push with the same topic
    data: dict = field(default_factory=dict)
    type: str = ""  # the notification type, e.g. order_shipped
    created_at: str = ""  # RFC 3339
    badge: int | None = None  # native push: the user's unread count, shown on the app icon
    headers: dict[str, str] = field(default_factory=dict)  # email: extra headers (List-Unsubscribe)


@dataclass
class Sent:
    """A provider accepted the message. `provider_id` is its id for the message
    (Twilio's SID, the SMTP Message-ID, the push service's Location), if any."""

    provider_id: str | None = None
    delivered: bool = False  # True when accepting is delivering (the live socket)


class Channel:
    name: str

    async def send(self, message: Message) -> Sent:
        """Deliver or raise TransientError / PermanentError."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections; called once at shutdown."""
