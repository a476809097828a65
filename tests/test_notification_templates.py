"""Notification templates (domain/notification_templates): every shipped template renders
for every channel, HTML is escaped and text is not, the sandbox holds, admin overrides are
checked, looked up by locale with fallbacks, and cached for CACHE_S."""

from __future__ import annotations

import pytest
from jinja2 import TemplateError
from jinja2.sandbox import SecurityError

from domain.errors import Invalid
from domain.notification_templates import (DEFAULTS, MAX_TEMPLATE_CHARS, PARTS, Templates, check_parts,
                                           default_parts)
from handlers.errors import status_of


ORDER = {"order_id": "o-1", "number": "HUB-20260001", "user_id": "u-1", "status": "paid", "total": "59.90",
         "currency": "EUR"}
PAYMENT = {"order_id": "o-1", "number": "HUB-20260001", "user_id": "u-1", "amount": "59.90", "currency": "EUR",
           "provider": "stripe", "payment_id": "pi_1"}
STOCK = {"product_id": "p-1", "available": 7, "previous": 0, "low_stock_threshold": 10}
PRODUCT = {"id": "p-1", "name": "Blue Kettle", "slug": "blue-kettle"}

# Each type: realistic data, and the facts every channel's rendering must show.
CASES = {
    "order_created": (ORDER, ["HUB-20260001", "59.90 EUR"]),
    "order_confirmed": (ORDER, ["HUB-20260001"]),
    "order_shipped": (ORDER, ["HUB-20260001"]),
    "order_delivered": (ORDER, ["HUB-20260001"]),
    "order_cancelled": (dict(ORDER, reason="payment timeout"), ["HUB-20260001", "payment timeout"]),
    "order_returned": (ORDER, ["HUB-20260001"]),
    "order_refunded": (ORDER, ["HUB-20260001", "59.90 EUR"]),
    "payment_succeeded": (PAYMENT, ["HUB-20260001", "59.90 EUR"]),
    "payment_failed": (PAYMENT, ["HUB-20260001", "59.90 EUR"]),
    "payment_refunded": (PAYMENT, ["HUB-20260001", "59.90 EUR"]),
    "points_awarded": ({"user_id": "u-1", "delta": 60, "balance": 160, "reason": "order_paid"}, ["60", "160"]),
    "points_redeemed": ({"user_id": "u-1", "delta": -40, "balance": 120, "reason": "redeemed"}, ["40", "120"]),
    "points_reversed": ({"user_id": "u-1", "delta": -60, "balance": 60, "reason": "refund"}, ["60 points", "60"]),
    "points_expired": ({"user_id": "u-1", "delta": -25, "balance": 35, "reason": "expired"}, ["25", "35"]),
    "back_in_stock": (STOCK, ["Blue Kettle", "7"]),
    "stock_low": (dict(STOCK, available=3, previous=12), ["Blue Kettle", "3", "10"]),
    "cart_reminder": ({"user_id": "u-1", "item_count": 3, "subtotal": "42.00", "currency": "EUR",
                       "cart_url": "https://shop.example/#/cart"}, ["3 items", "42.00 EUR", "https://shop.example/#/cart"]),
    "coupon_expiring": ({"user_id": "u-1", "code": "SUMMER", "ends_at": "2026-07-01T00:00:00+00:00",
                         "cart_url": "https://shop.example/#/cart"}, ["SUMMER", "https://shop.example/#/cart"]),
}


class FakeTemplateStore:
    """What Templates needs of TemplateStore: all() (counted), put(), delete()."""

    def __init__(self, overrides=()):
        self.docs = {(d["type"], d["channel"], d["locale"]): d for d in overrides}
        self.reads = 0

    async def all(self):
        self.reads += 1
        return list(self.docs.values())

    async def put(self, notification_type, channel, locale, parts):
        self.docs[(notification_type, channel, locale)] = {"type": notification_type, "channel": channel,
                                                           "locale": locale, "parts": parts}

    async def delete(self, notification_type, channel, locale):
        return self.docs.pop((notification_type, channel, locale), None) is not None


def override(notification_type, channel, locale, **parts):
    return {"type": notification_type, "channel": channel, "locale": locale, "parts": parts}


def context(data, product=None, **extra):
    return {"data": data, "product": product or {}, "type": "t", "priority": "normal", "title": "", "body": "",
            "user": {"name": "Ada", "email": "ada@example.com"}, **extra}


def visible(channel, rendered):
    """The parts a reader sees (the HTML shell aside)."""
    return [rendered[p] for p in PARTS[channel] if p != "html"]


def test_every_type_has_a_case():
    assert set(CASES) == set(DEFAULTS)


@pytest.mark.parametrize("notification_type", sorted(DEFAULTS))
@pytest.mark.parametrize("channel", sorted(PARTS))
async def test_every_default_renders_for_every_channel(notification_type, channel):
    templates = Templates(FakeTemplateStore())
    data, facts = CASES[notification_type]
    rendered = await templates.render(notification_type, channel, "en", context(data, PRODUCT))
    assert set(rendered) == set(PARTS[channel])
    assert all(rendered[p].strip() for p in PARTS[channel])
    whole = " ".join(visible(channel, rendered))
    for fact in facts:
        assert fact in whole, (fact, rendered)
    assert "{{" not in whole and "{%" not in whole
    if channel == "email":  # the HTML carries the title and the body too
        assert rendered["subject"] in rendered["html"]
        assert rendered["text"] in rendered["html"] or "&#" in rendered["html"]


async def test_the_title_and_body_a_service_gave_are_the_default_for_requested_types():
    templates = Templates(FakeTemplateStore())
    rendered = await templates.render("order_delayed", "push", "en", context({}, title="Late", body="Sorry, a day late."))
    assert rendered == {"title": "Late", "body": "Sorry, a day late."}
    sms = await templates.render("order_delayed", "sms", "en", context({}, title="Late", body="Sorry."))
    assert sms == {"text": "Late: Sorry."}


async def test_defaults_survive_points_data_that_is_missing_or_odd():
    """An event from another service with no delta (or a string) must still render: a render
    failure of the shipped template would make its event fail forever."""
    templates = Templates(FakeTemplateStore())
    for data in ({}, {"delta": None, "balance": 3}, {"delta": "-40", "balance": 3}):
        for notification_type in ("points_redeemed", "points_reversed", "points_expired", "points_awarded"):
            rendered = await templates.render(notification_type, "push", "en", context(data))
            assert rendered["title"] and rendered["body"]
    rendered = await templates.render("points_redeemed", "push", "en", context({"delta": "-40", "balance": 3}))
    assert rendered["title"] == "You spent 40 points"


async def test_html_is_escaped_and_text_is_not():
    templates = Templates(FakeTemplateStore())
    evil = "<script>alert('x')</script> & Co"
    rendered = await templates.render("back_in_stock", "email", "en", context(STOCK, dict(PRODUCT, name=evil)))
    assert rendered["subject"] == f"{evil} is back in stock"
    assert rendered["text"].startswith(evil)
    assert "<script>" not in rendered["html"]
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in rendered["html"]
    # A service's title in a requested notification as well.
    rendered = await templates.render("promo", "email", "en", context({}, title="<b>Sale</b>", body="<img src=x>"))
    assert rendered["subject"] == "<b>Sale</b>" and rendered["text"] == "<img src=x>"
    assert "&lt;b&gt;Sale&lt;/b&gt;" in rendered["html"] and "&lt;img src=x&gt;" in rendered["html"]
    assert "<b>" not in rendered["html"] and "<img" not in rendered["html"]
    # Push and SMS are text: not escaped.
    push = await templates.render("promo", "push", "en", context({}, title="Fish & Chips", body="1 < 2"))
    assert push == {"title": "Fish & Chips", "body": "1 < 2"}


async def test_an_html_override_is_autoescaped_but_its_own_markup_stays():
    store = FakeTemplateStore([override("promo", "email", "en", subject="{{ title }}", text="{{ body }}",
                                        html="<p><b>{{ title }}</b> {{ data.note }}</p>")])
    rendered = await Templates(store).render("promo", "email", "en", context({"note": "<i>x</i>"}, title="A&B"))
    assert rendered["html"] == "<p><b>A&amp;B</b> &lt;i&gt;x&lt;/i&gt;</p>"
    assert rendered["subject"] == "A&B"


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ data.__class__ }}",
    "{{ data.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ user.__class__.__base__ }}",
])
async def test_the_sandbox_hides_python_internals(source):
    """Unsafe attributes read as undefined: they render empty."""
    rendered = await Templates(FakeTemplateStore()).render_parts({"text": "[" + source + "]"}, context({"a": 1}))
    assert rendered == {"text": "[]"}


@pytest.mark.parametrize("source", [
    "{{ data.__class__.__subclasses__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ data.update({'a': 2}) }}",   # the sandbox is immutable: no changing the event's data
    "{{ data.clear() }}",
])
async def test_the_sandbox_refuses_calls_into_internals_or_mutation(source):
    data = {"a": 1}
    with pytest.raises(SecurityError):
        await Templates(FakeTemplateStore()).render_parts({"text": source}, context(data))
    assert data == {"a": 1}


async def test_runaway_or_broken_templates_fail_as_template_errors():
    """Whatever goes wrong while rendering is a TemplateError, which the engine handles (it
    falls back to the shipped template, or fails the delivery with `template_error`)."""
    templates = Templates(FakeTemplateStore())
    for source in ("{{ range(10**9) | list | length }}", "{{ 1 / 0 }}", "{{ data.a + 'x' }}", "{{ 'x' | abs }}"):
        with pytest.raises(TemplateError):
            await templates.render_parts({"text": source}, context({"a": 1}))


async def test_a_missing_variable_renders_empty():
    templates = Templates(FakeTemplateStore())
    rendered = await templates.render_parts(
        {"title": "Order {{ data.number }}!", "body": "[{{ nothing }}][{{ data.a.b.c }}][{{ product.name }}]"},
        context({}))
    assert rendered == {"title": "Order !", "body": "[][][]"}
    rendered = await templates.render("order_shipped", "push", "en", context({}))
    assert rendered == {"title": "Order  shipped", "body": "Your order  is on its way."}


async def test_check_parts_rejects_invalid_jinja_naming_the_field():
    with pytest.raises(Invalid) as raised:
        check_parts("push", {"title": "Hi {{ unclosed", "body": "ok"})
    error = raised.value
    assert status_of(error) == 422 and error.code == "invalid_template"
    assert [d["field"] for d in error.details] == ["title"]
    assert "invalid template" in error.details[0]["message"]
    with pytest.raises(Invalid) as raised:
        check_parts("email", {"subject": "s", "text": "{% if x %}no end", "html": "<p>{{ a | }}</p>"})
    assert [d["field"] for d in raised.value.details] == ["text", "html"]


@pytest.mark.parametrize("channel, parts, fields", [
    ("email", {"subject": "s", "text": "t"}, ["html"]),
    ("sms", {}, ["text"]),
    ("sms", {"text": "   "}, ["text"]),
    ("sms", {"text": 5}, ["text"]),
    ("push", {"title": "t", "body": "b", "html": "<p>"}, ["html"]),
    ("sms", {"text": "t", "subject": "s"}, ["subject"]),
    ("websocket", {"title": "t"}, ["body"]),
    ("push", {"title": "x" * (MAX_TEMPLATE_CHARS + 1), "body": "b"}, ["title"]),
])
def test_check_parts_rejects_missing_and_extra_parts(channel, parts, fields):
    with pytest.raises(Invalid) as raised:
        check_parts(channel, parts)
    assert raised.value.code == "invalid_template" and status_of(raised.value) == 422
    assert [d["field"] for d in raised.value.details] == fields


@pytest.mark.parametrize("channel", sorted(PARTS))
def test_check_parts_accepts_every_default(channel):
    for notification_type in DEFAULTS:
        check_parts(channel, default_parts(notification_type, channel))


LOCALES = [
    override("order_shipped", "push", "fr", title="Commande {{ data.number }} expédiée", body="fr"),
    override("order_shipped", "push", "fr-CA", title="Commande {{ data.number }} envoyée", body="fr-CA"),
    override("order_shipped", "push", "en", title="Shipped: {{ data.number }}", body="en"),
    override("order_created", "push", "de", title="Bestellung {{ data.number }}", body="de"),
]


@pytest.mark.parametrize("notification_type, locale, origin, body", [
    ("order_shipped", "fr-CA", "override:fr-CA", "fr-CA"),   # exact
    ("order_shipped", "fr-BE", "override:fr", "fr"),         # its language
    ("order_shipped", "fr", "override:fr", "fr"),
    ("order_shipped", "de-AT", "override:en", "en"),         # then English
    ("order_shipped", None, "override:en", "en"),
    ("order_created", "de-CH", "override:de", "de"),
    ("order_created", "fr-CA", "default", None),             # then the shipped default
    ("order_shipped", "fr-CA-x", "override:fr", "fr"),       # the language is what precedes the first "-"
])
async def test_locale_fallback(notification_type, locale, origin, body):
    templates = Templates(FakeTemplateStore(LOCALES))
    parts, got_origin = await templates.parts_for(notification_type, "push", locale)
    assert got_origin == origin
    if body is None:
        assert parts == default_parts(notification_type, "push")
    else:
        assert parts["body"] == body


async def test_locale_fallback_is_per_channel():
    templates = Templates(FakeTemplateStore(LOCALES))
    _, origin = await templates.parts_for("order_shipped", "email", "fr-CA")
    assert origin == "default"
    rendered = await templates.render("order_shipped", "push", "fr-CA", context(ORDER))
    assert rendered["title"] == "Commande HUB-20260001 envoyée"


async def test_overrides_are_cached_for_cache_s():
    now = [100.0]
    store = FakeTemplateStore()
    templates = Templates(store, clock=lambda: now[0])
    assert (await templates.parts_for("order_shipped", "push", "en"))[1] == "default"
    assert store.reads == 1
    # Another process saves an override: not seen until the cache is CACHE_S old.
    await store.put("order_shipped", "push", "en", {"title": "New", "body": "new"})
    now[0] += Templates.CACHE_S - 0.01
    assert (await templates.parts_for("order_shipped", "push", "en"))[1] == "default"
    assert store.reads == 1
    now[0] += 0.01
    parts, origin = await templates.parts_for("order_shipped", "push", "en")
    assert origin == "override:en" and parts["title"] == "New"
    assert store.reads == 2
    for _ in range(5):
        await templates.render("order_shipped", "push", "en", context(ORDER))
    assert store.reads == 2  # rendering costs no read within the window


async def test_this_process_sees_its_own_save_and_delete_at_once():
    now = [0.0]
    store = FakeTemplateStore()
    templates = Templates(store, clock=lambda: now[0])
    await templates.parts_for("order_shipped", "push", "en")
    await templates.save("order_shipped", "push", "en", {"title": "Mine {{ data.number }}", "body": "b"})
    assert (await templates.render("order_shipped", "push", "en", context(ORDER)))["title"] == "Mine HUB-20260001"
    assert await templates.delete("order_shipped", "push", "en") is True
    assert (await templates.parts_for("order_shipped", "push", "en"))[1] == "default"
    assert await templates.delete("order_shipped", "push", "en") is False


async def test_save_refuses_an_invalid_template_and_stores_nothing():
    store = FakeTemplateStore()
    with pytest.raises(Invalid):
        await Templates(store).save("order_shipped", "push", "en", {"title": "{{ x", "body": "b"})
    assert store.docs == {}


async def test_shared_renders_are_rendered_once_unless_personal_and_failures_are_counted():
    store = FakeTemplateStore([override("promo", "websocket", "en", title="{{ title }}", body="{{ body }}"),
                               override("promo", "email", "en", subject="Hi {{ user.name }}", text="{{ body }}"),
                               override("promo", "sms", "en", text="{{ data.n * 'x' }}")])
    failed = []
    templates = Templates(store, on_failure=failed.append)
    ann, bob = (context({}, title="Sale", body="Today", user={"name": name, "email": ""}) for name in ("Ann", "Bob"))
    key = ("broadcast-1", "Sale", "Today")
    first = await templates.render("promo", "websocket", "en", ann, key)
    assert await templates.render("promo", "websocket", "en", bob, key) is first  # the same rendering
    # A template naming the user is rendered for each recipient, shared key or not.
    assert (await templates.render("promo", "email", "en", ann, key))["subject"] == "Hi Ann"
    assert (await templates.render("promo", "email", "en", bob, key))["subject"] == "Hi Bob"
    # An override failing on a shared render is counted like any other.
    with pytest.raises(TemplateError):
        await templates.render("promo", "sms", "en", context({"n": 10 ** 9}), key)
    assert failed == ["sms"]
