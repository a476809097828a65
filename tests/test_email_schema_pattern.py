"""The e-mail pattern in /api/v1/openapi.json is exactly the rule domain/users.py applies:
a generated client's address is accepted if and only if the document allows it."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.users import EMAIL_MAX, normalize_email
from handlers.schemas import EMAIL_SCHEMA_PATTERN

PATTERN = re.compile(EMAIL_SCHEMA_PATTERN)


def accepted(address: str) -> bool:
    try:
        normalize_email(address)
    except ValueError:
        return False
    return True


def allowed(address: str) -> bool:
    return len(address) <= EMAIL_MAX and PATTERN.search(address) is not None


@settings(max_examples=500, deadline=None)
@given(st.from_regex(PATTERN).filter(lambda a: len(a) <= EMAIL_MAX))
def test_every_address_the_document_allows_is_accepted(address):
    assert accepted(address)


# Near-addresses: the characters that matter, and lengths around each bound.
_PARTS = st.sampled_from(["a", "Z", "9", "-", ".", "@", "!", "~", "'", "_", "\"", "(", " ", "é", "a" * 61, "b" * 63])


@settings(max_examples=2000, deadline=None)
@given(st.lists(_PARTS, max_size=12).map("".join))
def test_the_document_allows_every_address_that_is_accepted(address):
    # The rule also forgives surrounding spaces, which the document does not mention.
    assert accepted(address) == allowed(address) or address != address.strip()


def test_the_bounds():
    assert allowed("a" * 64 + "@example.com") and accepted("a" * 64 + "@example.com")
    assert not allowed("a" * 65 + "@example.com") and not accepted("a" * 65 + "@example.com")
    assert allowed("a@" + "b" * 63 + ".io") and not allowed("a@" + "b" * 64 + ".io")
    assert not accepted("a@" + "b" * 64 + ".io")
    assert not allowed("a@example.1o") and not accepted("a@example.1o")
