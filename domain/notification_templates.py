"""Notification templates: Jinja2 in a sandbox, per (type, channel, locale).

Every notification type has a shipped default (a title and a body in English) from which
each channel's parts are made: email `subject`, `text`, `html`; SMS `text`; push and
WebSocket `title`, `body`. Admins may replace any channel's parts for a type and locale;
lookup falls back from the user's locale to `en`, then to the shipped default.

The sandbox (domain/template_sandbox.py) stops templates from reaching Python internals
and bounds what they may cost (numbers, text sizes, steps, time); HTML parts are
autoescaped, so data from events (a product name, a service's title) cannot inject markup.
A missing variable renders empty rather than failing the delivery. A template is compiled
and rendered on sample data before it is saved; one that still fails when sending (on
real data) is counted and the shipped default is used instead.
"""

from __future__ import annotations

import time
from typing import Callable

from jinja2 import ChainableUndefined, TemplateError, meta

from domain.errors import Invalid
from domain.template_sandbox import BoundedSandbox, BudgetExceeded, render_bounded

PARTS = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "push": ("title", "body"),
    "websocket": ("title", "body"),
}
FALLBACK_LOCALE = "en"
MAX_TEMPLATE_CHARS = 20_000

_order_ref = "order {{ data.number or data.order_id }}"
# `abs` of a missing or non-numeric delta (another service's event) would fail the render.
_points = "{{ (data.delta or 0) | int | abs }}"
DEFAULTS: dict[str, tuple[str, str]] = {
    "order_created": ("Order {{ data.number }} received",
                      "We received your order {{ data.number }} for {{ data.total }} {{ data.currency }}."),
    "order_confirmed": ("Order {{ data.number }} confirmed", "We are preparing your order {{ data.number }}."),
    "order_shipped": ("Order {{ data.number }} shipped", "Your order {{ data.number }} is on its way."),
    "order_delivered": ("Order {{ data.number }} delivered", "Your order {{ data.number }} has been delivered."),
    "order_cancelled": ("Order {{ data.number }} cancelled",
                        "Your order {{ data.number }} was cancelled{% if data.reason %}: {{ data.reason }}{% endif %}."),
    "order_returned": ("Order {{ data.number }} returned", "We registered the return of your order {{ data.number }}."),
    "order_refunded": ("Order {{ data.number }} refunded",
                       "We refunded {{ data.total }} {{ data.currency }} for your order {{ data.number }}."),
    "payment_succeeded": ("Payment received",
                          "We received {{ data.amount }} {{ data.currency }} for " + _order_ref + "."),
    "payment_failed": ("Payment failed",
                       "Your payment of {{ data.amount }} {{ data.currency }} for " + _order_ref
                       + " did not go through. Please try again with another card."),
    "payment_refunded": ("Payment refunded",
                         "We refunded {{ data.amount }} {{ data.currency }} for " + _order_ref + "."),
    "points_awarded": ("You earned {{ data.delta }} points", "Your balance is now {{ data.balance }} points."),
    "points_redeemed": ("You spent " + _points + " points", "Your balance is now {{ data.balance }} points."),
    "points_reversed": (_points + " points taken back",
                        "Points for a refunded order were taken back. Your balance is now {{ data.balance }} points."),
    "points_expired": (_points + " points expired", "Your balance is now {{ data.balance }} points."),
    "back_in_stock": ("{{ product.name or 'A product you watch' }} is back in stock",
                      "{{ product.name or 'It' }} is available again: {{ data.available }} in stock."),
    "stock_low": ("Low stock: {{ product.name or data.product_id }}",
                  "Only {{ data.available }} left (threshold {{ data.low_stock_threshold }})."),
    "cart_reminder": ("Your cart is waiting",
                      "You left {{ data.item_count }} item{{ 's' if data.item_count != 1 }} worth {{ data.subtotal }} "
                      "{{ data.currency }} in your cart. Pick up where you left off: {{ data.cart_url }}"),
    "coupon_expiring": ("Coupon {{ data.code }} ends soon",
                        "Your coupon {{ data.code }} ends at {{ data.ends_at }}. Use it while it lasts: {{ data.cart_url }}"),
}
REQUESTED = ("{{ title }}", "{{ body }}")  # notification.requested without a template of its own

_TEXT = BoundedSandbox(autoescape=False, undefined=ChainableUndefined)
_HTML = BoundedSandbox(autoescape=True, undefined=ChainableUndefined)
MAX_COMPILED = 1000  # compiled templates kept; replaced overrides must not pile up

# What a template is tried on before it is saved: the fields the shipped templates use.
SAMPLE_CONTEXT = {
    "data": {"order_id": "5f0c0ffee", "number": "1001", "status": "shipped", "total": "12.50", "amount": "12.50",
             "currency": "USD", "reason": "requested", "delta": 25, "balance": 125, "product_id": "5f0bead",
             "available": 3, "previous": 0, "low_stock_threshold": 5, "user_id": "5f0ace"},
    "product": {"id": "5f0bead", "name": "Mug", "slug": "mug"}, "type": "order_shipped", "priority": "normal",
    "title": "Order 1001 shipped", "body": "Your order 1001 is on its way.",
    "user": {"name": "Ann", "email": "ann@example.com"},
}

EMAIL_HTML = """<!doctype html>
<html><body style="font-family: sans-serif; max-width: 560px; margin: auto">
<h1 style="font-size: 20px">{{ rendered_title }}</h1>
<p>{{ rendered_body }}</p>
<p style="color: #777; font-size: 12px">You receive this because of your notification preferences.</p>
</body></html>"""


def default_parts(notification_type: str, channel: str) -> dict[str, str]:
    """The shipped template for a channel, made from the type's title and body."""
    title, body = DEFAULTS.get(notification_type, REQUESTED)
    if channel == "email":
        return {"subject": title, "text": body, "html": EMAIL_HTML}
    if channel == "sms":
        return {"text": f"{title}: {body}"}
    return {"title": title, "body": body}


def check_parts(channel: str, parts: dict[str, str]) -> None:
    """422 unless `parts` has exactly the channel's parts, each valid Jinja."""
    expected = PARTS[channel]
    errors = []
    for name in expected:
        source = parts.get(name)
        if not isinstance(source, str) or not source.strip():
            errors.append({"field": name, "message": "required, a non-empty template"})
            continue
        if len(source) > MAX_TEMPLATE_CHARS:
            errors.append({"field": name, "message": f"at most {MAX_TEMPLATE_CHARS} characters"})
            continue
        try:
            compiled = _compile(source, html=name == "html")
            context = dict(SAMPLE_CONTEXT, rendered_title="Title", rendered_body="Body")
            render_bounded(compiled, context)  # on sample data: what fails here fails on every message
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            errors.append({"field": name, "message": f"invalid template{f' (line {line})' if line else ''}: {exc.message}"})
    for name in parts:
        if name not in expected:
            errors.append({"field": name, "message": f"not a part of {channel} templates ({', '.join(expected)})"})
    if errors:
        raise Invalid("The template is not valid.", code="invalid_template", details=errors)


def _compile(source: str, *, html: bool):
    return (_HTML if html else _TEXT).compile_template(source)


class Templates:
    """Renders a notification for a channel. Admin overrides come from `store` (a small
    collection), cached for CACHE_S so rendering costs no read; the process that saves
    an override sees it at once, other processes within CACHE_S."""

    CACHE_S = 5.0

    def __init__(self, store, clock: Callable[[], float] = time.monotonic,
                 on_failure: Callable[[str], None] = lambda channel: None) -> None:
        """`on_failure(channel)` counts an override that failed when rendering (a metric)."""
        self.store = store
        self.clock = clock
        self.on_failure = on_failure
        self._overrides: dict[tuple[str, str, str], dict] = {}
        self._loaded_at: float | None = None
        self._compiled: dict[tuple[bool, str], object] = {}
        self._names: dict[str, set[str]] = {}  # template source → the variables it reads
        self._shared: dict[tuple, dict[str, str]] = {}  # renderings shared by many recipients

    async def _refresh(self) -> None:
        if self._loaded_at is None or self.clock() - self._loaded_at >= self.CACHE_S:
            self._overrides = {(t["type"], t["channel"], t["locale"]): t["parts"] for t in await self.store.all()}
            self._loaded_at = self.clock()

    async def overrides(self) -> set[tuple[str, str, str]]:
        """(type, channel, locale) of every stored override, read now."""
        return {(t["type"], t["channel"], t["locale"]) for t in await self.store.all()}

    async def parts_for(self, notification_type: str, channel: str, locale: str | None) -> tuple[dict, str]:
        """The template parts to use and where they come from (`override:<locale>` or `default`)."""
        await self._refresh()
        locale = locale or FALLBACK_LOCALE
        for candidate in dict.fromkeys((locale, locale.split("-")[0], FALLBACK_LOCALE)):
            parts = self._overrides.get((notification_type, channel, candidate))
            if parts is not None:
                return parts, f"override:{candidate}"
        return default_parts(notification_type, channel), "default"

    async def render(self, notification_type: str, channel: str, locale: str | None, context: dict,
                     share_key: tuple | None = None) -> dict[str, str]:
        """Raises TemplateError when a template fails at render time (the delivery fails
        permanently with reason `template_error`). With `share_key` (the same content for
        many recipients, e.g. a broadcast), a template that does not name the user is
        rendered once per key, channel and locale."""
        parts, source = await self.parts_for(notification_type, channel, locale)
        try:
            if share_key is None or self.personal(parts):
                return await self.render_parts(parts, context)
            key = (share_key, notification_type, channel, locale)
            rendered = self._shared.get(key)
            if rendered is None:
                if len(self._shared) >= MAX_COMPILED:
                    self._shared.clear()
                rendered = self._shared[key] = await self.render_parts(parts, context)
            return rendered
        except TemplateError:
            if source != "default":
                self.on_failure(channel)
            raise

    async def render_parts(self, parts: dict[str, str], context: dict) -> dict[str, str]:
        out = {name: self._render(source, context, html=False) for name, source in parts.items() if name != "html"}
        if "html" in parts:
            html_context = dict(context, rendered_title=out.get("subject", ""), rendered_body=out.get("text", ""))
            out["html"] = self._render(parts["html"], html_context, html=True)
        return out

    def _render(self, source: str, context: dict, *, html: bool) -> str:
        template = self._compiled.get((html, source))
        if isinstance(template, str):  # ran out of its budget before: as costly on every message
            raise BudgetExceeded(template)
        try:
            if template is None:
                if len(self._compiled) > MAX_COMPILED:
                    self._compiled.clear()
                template = self._compiled[(html, source)] = _compile(source, html=html)
            return render_bounded(template, context).strip()
        except BudgetExceeded as exc:
            self._compiled[(html, source)] = exc.message
            raise

    def personal(self, parts: dict[str, str]) -> bool:
        """Does any part name the recipient (`user`)? If not, everyone with the same
        notification content gets the same rendering."""
        for name, source in parts.items():
            names = self._names.get(source)
            if names is None:
                if len(self._names) > MAX_COMPILED:
                    self._names.clear()
                names = self._names[source] = meta.find_undeclared_variables(
                    (_HTML if name == "html" else _TEXT).parse(source))
            if "user" in names:
                return True
        return False

    async def save(self, notification_type: str, channel: str, locale: str, parts: dict) -> None:
        check_parts(channel, parts)
        await self.store.put(notification_type, channel, locale, parts)
        self._loaded_at = None

    async def delete(self, notification_type: str, channel: str, locale: str) -> bool:
        deleted = await self.store.delete(notification_type, channel, locale)
        self._loaded_at = None
        return deleted
