"""Native push devices (CONTRACT v2 §5): platforms, token formats, the per-user cap."""

from __future__ import annotations

import re

PLATFORMS = ("apns", "fcm")
ENVIRONMENTS = ("production", "sandbox")
MAX_DEVICES_PER_USER = 10  # a new one past this evicts the user's oldest
# APNs device tokens are 32 bytes in hex today; Apple says they may grow (up to 100 bytes).
APNS_TOKEN_RE = re.compile(r"[0-9a-f]{64,200}")
# FCM registration tokens (and Firebase installation ids): about 160 URL-safe characters.
FCM_TOKEN_RE = re.compile(r"[A-Za-z0-9_:.-]{16,1024}")


def normalize_token(platform: str, token: str) -> str:
    """The token as stored and sent; ValueError when it is not one of the platform's."""
    if platform == "apns":
        token = token.strip().lower().replace(" ", "")
        if not APNS_TOKEN_RE.fullmatch(token):
            raise ValueError("an APNs device token is 64 to 200 hexadecimal characters")
        return token
    if not FCM_TOKEN_RE.fullmatch(token):  # fullmatch: `$` would let a final newline in
        raise ValueError("an FCM registration token is 16 to 1024 of A-Z a-z 0-9 _ : . -")
    return token
