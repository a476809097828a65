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

# Addresses are RFC 5321 dot-atoms in ASCII: no quoted local parts, comments, address
# literals or UTF-8 local parts (SMTPUTF8 is not done end to end); an internationalized
# domain is written in its xn-- form. What is refused here can never break a send.
EMAIL_MAX, EMAIL_LOCAL_MAX = 254, 64
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL_LOCAL = re.compile(rf"{_ATOM}(\.{_ATOM})*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_TOP_LABEL = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_LOCALE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    local, _, domain = email.rpartition("@")
    labels = domain.split(".")
    if (len(email) > EMAIL_MAX or len(local) > EMAIL_LOCAL_MAX or not email.isascii()
            or not _EMAIL_LOCAL.fullmatch(local) or len(labels) < 2
            or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels) or not _TOP_LABEL.fullmatch(labels[-1])):
        raise ValueError("must be an email address such as name@example.com (ASCII letters, digits and "
                         "!#$%&'*+/=?^_`{|}~.- before the @; no quotes, comments or spaces)")
    return email


def is_valid_email(value: str | None) -> bool:
    """Whether a stored address can be sent to (one stored before the rules tightened may not)."""
    try:
        return bool(value) and normalize_email(value) == value
    except ValueError:
        return False


def normalize_phone(value: str) -> str:
    phone = _PHONE_SEPARATORS.sub("", value)
    if not _E164.fullmatch(phone):
        raise ValueError("must be an international phone number such as +15551234567")
    return phone


def sms_allowed(phone: str, calling_codes: tuple[str, ...]) -> bool:
    """Whether SMS may go to this E.164 number: its country calling code is listed (an
    empty list allows any). Calling codes are a prefix code, so a prefix test is exact."""
    return not calling_codes or any(phone.startswith(f"+{code}") for code in calling_codes)


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
