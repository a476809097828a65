"""SMS text that fits one segment, so a message never silently costs several.

One SMS carries 160 characters of the GSM-7 alphabet (the extension characters such as
`€` or `[` take two), or 70 UTF-16 code units when any character is outside it. Longer
text is cut at a word boundary and ends with "...", which is GSM-7.
"""

from __future__ import annotations

_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = set("^{}\\[~]|€\f")
GSM7_LIMIT, UCS2_LIMIT = 160, 70


def _cost(char: str, gsm7: bool) -> int:
    if gsm7:
        return 2 if char in _GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1  # astral characters are surrogate pairs


def is_gsm7(text: str) -> bool:
    return all(c in _GSM7 or c in _GSM7_EXTENSION for c in text)


def length(text: str) -> tuple[int, int]:
    """(units used, units one segment holds) for `text`."""
    gsm7 = is_gsm7(text)
    return sum(_cost(c, gsm7) for c in text), GSM7_LIMIT if gsm7 else UCS2_LIMIT


def fit_sms(text: str) -> str:
    """`text` (whitespace collapsed) if it fits one segment, else cut to fit with "..."."""
    text = " ".join(text.split())
    used, limit = length(text)
    if used <= limit:
        return text
    gsm7 = is_gsm7(text)
    budget, kept = limit - 3, []
    for char in text:
        budget -= _cost(char, gsm7)
        if budget < 0:
            break
        kept.append(char)
    cut = "".join(kept)
    if " " in cut[len(cut) // 2:]:  # prefer a word boundary unless it loses too much
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:") + "..."
