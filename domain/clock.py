"""The one clock of the business rules (injected, so tests can move time)."""

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Now, to the millisecond: what MongoDB stores, so a response and a later read agree."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
