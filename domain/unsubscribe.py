"""One-click unsubscribe (RFC 8058): the signed link a marketing email carries in its
`List-Unsubscribe` header, and what following it changes.

The link names the user and the category and carries an HMAC-SHA256 of both under a key
derived from the hub's secret, so it needs no sign-in and no stored token, and cannot be
made for another user or category. It has no expiry: an unsubscribe link must keep
working for as long as the mail is in someone's mailbox, and using it twice changes
nothing more.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

from domain.notification_policy import CATEGORIES, effective_preferences


class UnsubscribeLinks:
    def __init__(self, secret: str, base_url: str) -> None:
        self._key = hmac.new(secret.encode(), b"hub-unsubscribe-v1", hashlib.sha256).digest()
        self.base_url = base_url.rstrip("/")

    def signature(self, user_id: str, category: str) -> str:
        mac = hmac.new(self._key, f"{user_id}\x00{category}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def url(self, user_id: str, category: str) -> str:
        query = urlencode({"u": user_id, "c": category, "s": self.signature(user_id, category)})
        return f"{self.base_url}/api/v1/unsubscribe?{query}"

    def verify(self, user_id: str, category: str, signature: str) -> bool:
        return hmac.compare_digest(self.signature(user_id, category).encode(), signature.encode())


def without_category(stored_preferences: dict | None, channel: str, category: str) -> dict:
    """The channel's preference with `category` no longer allowed (the rest as before).
    "all" becomes every other category, so nothing else the user gets changes."""
    setting = effective_preferences(stored_preferences)["channels"][channel]
    types = setting.get("types") or []
    if "all" in types:
        types = [c for c in CATEGORIES if c != category] + [t for t in types if t != "all"]
    kept = [t for t in types if t != category and not t.startswith(f"{category}_")]
    return {"enabled": bool(setting.get("enabled")), "types": kept}
