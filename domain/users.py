"""What a user is: field rules and the public view of a stored user document."""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ROLES = ("customer", "admin")
DEFAULT_TIMEZONE = "UTC"
DEFAULT_LOCALE = "en"
PASSWORD_MIN, PASSWORD_MAX = 8, 256
# A hard-bounced address gets no email for this long; then one try tells whether it came back.
EMAIL_BOUNCE_HOLD = timedelta(days=30)

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_LOCALE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise ValueError("must be an email address")
    return email


def normalize_phone(value: str) -> str:
    phone = _PHONE_SEPARATORS.sub("", value)
    if not _E164.fullmatch(phone):
        raise ValueError("must be an international phone number such as +15551234567")
    return phone


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone name such as Europe/Paris") from None
    return value


def check_locale(value: str) -> str:
    if not _LOCALE.fullmatch(value):
        raise ValueError("must be a language tag such as en or pt-BR")
    return value


def email_bounce(user: dict) -> dict | None:
    """The hard bounce recorded for the user's current address ({address, reason, at}), if any."""
    bounce = user.get("email_bounce")
    return bounce if bounce and bounce.get("address") == user.get("email") else None


def public_user(doc: dict) -> dict:
    bounce = email_bounce(doc)
    return {
        "id": doc["_id"],
        "email": doc["email"],
        "name": doc.get("name"),
        "phone": doc.get("phone"),
        "timezone": doc.get("timezone", DEFAULT_TIMEZONE),
        "locale": doc.get("locale", DEFAULT_LOCALE),
        "roles": doc.get("roles", ["customer"]),
        "email_bounced_at": bounce["at"].isoformat() if bounce else None,
        "created_at": doc["created_at"].isoformat(),
    }
