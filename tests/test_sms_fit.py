"""SMS text fits one segment (domain/sms): 160 GSM-7 units (extension characters count
two) or 70 UTF-16 units once any character is outside GSM-7; longer text is cut at a word
boundary and ends with "..."."""

from __future__ import annotations

import random

import pytest

from domain.sms import fit_sms, is_gsm7, length


def units(text):
    return length(text)[0]


@pytest.mark.parametrize("text, used, limit", [
    ("", 0, 160),
    ("Hello", 5, 160),
    ("Price: 5€", 10, 160),              # € is an extension character: two units
    ("[x]{y}|~^\\", 18, 160),            # eight extension characters at two, x and y at one
    ("Ça coûte", 8, 70),                 # û is not GSM-7: the whole message is UCS-2
    ("ΔΦΓΛΩΠΨΣΘΞ", 10, 160),            # Greek capitals of the GSM alphabet
    ("αβγ", 3, 70),                      # Greek lowercase is not
    ("订单已发货", 5, 70),
    ("Shipped 📦", 10, 70),              # an emoji is a surrogate pair: two units
])
def test_length(text, used, limit):
    assert length(text) == (used, limit)


def test_short_text_is_unchanged():
    for text in ("Order HUB-1 shipped.", "x" * 160, "€" * 80, "é" * 160, "订" * 70, "📦" * 35, "a" * 69 + "α"):
        assert fit_sms(text) == text


def test_whitespace_is_collapsed():
    assert fit_sms("  Order \n HUB-1\t\tshipped.  ") == "Order HUB-1 shipped."
    # Collapsing comes first: text that fits only once collapsed is kept whole.
    text = ("word " + " " * 10) * 20
    assert fit_sms(text) == " ".join(["word"] * 20)


def test_gsm_text_is_cut_at_a_word_boundary_with_an_ellipsis():
    words = " ".join(f"word{i:02d}" for i in range(40))  # 279 characters
    out = fit_sms(words)
    assert out.endswith("...") and units(out) <= 160
    kept = out[:-3]
    assert words.startswith(kept) and words[len(kept)] == " "  # whole words only
    assert units(out) > 150  # and not much less than fits


def test_one_character_over_is_cut():
    text = "x" * 100 + " " + "y" * 60  # 161
    assert fit_sms(text) == "x" * 100 + "..."
    assert fit_sms("€" * 81) == "€" * 78 + "..."   # 156 + 3 units


def test_extension_characters_count_two_when_cutting():
    text = " ".join(["5€"] * 100)  # 3 units per word + spaces
    out = fit_sms(text)
    assert units(out) <= 160 and out.endswith("...")
    assert out.count("€") <= 52 and len(out) < 160


@pytest.mark.parametrize("text", [
    "Votre commande a été expédiée 🚚 " * 5,
    "Ваш заказ отправлен и будет доставлен завтра утром, спасибо за покупку у нас в магазине",
    "您的订单已经发货，预计明天送达。感谢您在我们商店购物，欢迎再次光临，祝您生活愉快，万事如意，身体健康！" * 2,
    "αβγδε " * 20,
    "📦" * 40,
])
def test_non_gsm_text_fits_seventy_units(text):
    out = fit_sms(text)
    assert not is_gsm7(text)
    assert out.endswith("...")
    assert units(out) <= 70
    collapsed = " ".join(text.split())
    assert collapsed.startswith(out[:-3])


def test_a_surrogate_pair_is_never_split():
    out = fit_sms("a" + "📦" * 40)
    assert out == "a" + "📦" * 33 + "..."  # 1 + 66 + 3 = 70
    assert fit_sms("ab" + "📦" * 40) == "ab" + "📦" * 32 + "..."  # 2 + 64 + 3: the 34th would need 71


def test_a_long_word_without_spaces_is_cut_hard():
    assert fit_sms("x" * 300) == "x" * 157 + "..."
    assert fit_sms("订" * 100) == "订" * 67 + "..."


def test_a_far_word_boundary_is_not_used():
    """A cut at the only space would lose more than half: the text is cut mid-word."""
    text = "Hi " + "x" * 200
    out = fit_sms(text)
    assert out == ("Hi " + "x" * 200)[:157] + "..."


def test_trailing_punctuation_before_the_ellipsis_is_dropped():
    text = "Your order has shipped, " * 10
    out = fit_sms(text)
    assert out.endswith("...") and not out.endswith(",...") and not out.endswith(" ...")


def test_random_texts_always_fit_one_segment():
    rng = random.Random(7)
    alphabets = ["abc def ghi ", "abc €[] ", "abc é ü ", "αβγ ωψ ", "订单 发货 ", "ab 📦 cd ", "a\tb\nc  "]
    for _ in range(2000):
        alphabet = "".join(rng.sample(alphabets, rng.randint(1, 3)))
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        out = fit_sms(text)
        used, limit = length(out)
        assert used <= limit, (text, out)
        collapsed = " ".join(text.split())
        assert out == collapsed or (out.endswith("...") and collapsed.startswith(out[:-3])), (text, out)
