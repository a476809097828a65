"""Which events become which notifications, for whom (domain/notification_rules): the
RULES table against CONTRACT §3, the checks that reject an event, and the stable ids."""

from __future__ import annotations

import pytest

from domain.events import Rejected
from domain.notification_policy import CHANNELS
from domain.notification_rules import (ADMINS, RULES, STOCK_WATCHERS, USER, notification_id, plan, recipient_user,
                                       requested)

USER_ID = "u-1"
ORDER = {"order_id": "o-1", "number": "HUB-0001", "user_id": USER_ID, "status": "x", "total": "10.00",
         "currency": "EUR"}
PAYMENT = {"order_id": "o-1", "user_id": USER_ID, "amount": "10.00", "currency": "EUR", "provider": "stripe",
           "payment_id": "p-1"}
POINTS = {"user_id": USER_ID, "delta": 10, "balance": 30, "reason": "order_paid", "order_id": "o-1"}


def event(event_type, data, subject=None, event_id="e-1"):
    return {"specversion": "1.0", "id": event_id, "source": "test", "type": event_type, "subject": subject,
            "data": data}


def planned(event_type, data, **kw):
    return [(p.rule.type, p.rule.category, p.rule.priority, p.rule.recipients) for p in plan(event(event_type, data, **kw))]


# Every type of CONTRACT §3 → (notification type, category, priority, recipients), or nothing.
CONTRACT_TYPES = [
    ("order.created", ORDER, [("order_created", "order", "normal", USER)]),
    ("order.confirmed", ORDER, [("order_confirmed", "order", "normal", USER)]),
    ("order.processing", ORDER, []),
    ("order.shipped", ORDER, [("order_shipped", "order", "normal", USER)]),
    ("order.delivered", ORDER, [("order_delivered", "order", "normal", USER)]),
    ("order.completed", ORDER, []),
    ("order.cancelled", ORDER, [("order_cancelled", "order", "normal", USER)]),
    ("order.returned", ORDER, [("order_returned", "order", "normal", USER)]),
    ("order.refunded", ORDER, [("order_refunded", "order", "normal", USER)]),
    ("payment.succeeded", PAYMENT, [("payment_succeeded", "payment", "normal", USER)]),
    ("payment.failed", PAYMENT, [("payment_failed", "payment", "high", USER)]),
    ("payment.refunded", PAYMENT, [("payment_refunded", "payment", "normal", USER)]),
    ("points.awarded", POINTS, [("points_awarded", "points", "low", USER)]),
    ("points.redeemed", dict(POINTS, delta=-10), [("points_redeemed", "points", "normal", USER)]),
    ("points.reversed", dict(POINTS, delta=-10), [("points_reversed", "points", "normal", USER)]),
    ("points.expired", dict(POINTS, delta=-10), [("points_expired", "points", "low", USER)]),
    ("inventory.changed", {"product_id": "p", "available": 3, "previous": 0, "low_stock_threshold": 5},
     [("back_in_stock", "stock", "normal", STOCK_WATCHERS)]),
    ("inventory.low", {"product_id": "p", "available": 2, "previous": 6, "low_stock_threshold": 5},
     [("stock_low", "stock", "normal", ADMINS)]),
    # CONTRACT v2 §5: reminders, ordinary marketing notifications.
    ("cart.abandoned", {"user_id": "u-1", "item_count": 2}, [("cart_reminder", "marketing", "low", USER)]),
    ("coupon.expiring", {"user_id": "u-1", "code": "SUMMER"}, [("coupon_expiring", "marketing", "low", USER)]),
]


@pytest.mark.parametrize("event_type, data, expected", CONTRACT_TYPES, ids=[c[0] for c in CONTRACT_TYPES])
def test_every_contract_event_type_maps_as_the_rules_say(event_type, data, expected):
    assert planned(event_type, data) == expected


def test_the_table_covers_the_contract_types_and_nothing_else():
    notifying = {t for t, _, expected in CONTRACT_TYPES if expected}
    assert set(RULES) == notifying


def test_an_unknown_event_type_causes_nothing():
    assert plan(event("order.teleported", ORDER)) == []
    assert plan(event("catalog.updated", {})) == []


@pytest.mark.parametrize("previous, available, applies", [
    (0, 1, True),
    (-2, 5, True),      # oversold, now back
    (0, 0, False),
    (1, 5, False),      # was already in stock
    (3, 0, False),      # went out of stock
    (0, -1, False),
    (None, 5, True),    # no previous: read as 0 (nothing was known to be in stock)
    (0, "5", False),    # not a number
    (0, True, False),   # a bool is not a count
    (0, 2.5, False),
])
def test_back_in_stock_only_when_stock_comes_back(previous, available, applies):
    data = {"product_id": "p", "available": available, "low_stock_threshold": 5}
    if previous is not None:
        data["previous"] = previous
    assert bool(plan(event("inventory.changed", data))) is applies


def test_relevance_windows_and_topics():
    stock_low, = RULES["inventory.low"]
    back, = RULES["inventory.changed"]
    assert stock_low.expires_after_s == 3600
    assert back.expires_after_s == 24 * 3600
    assert all(rule.expires_after_s is None for t, rules in RULES.items() if not t.startswith("inventory.")
               for rule in rules)
    data = {"product_id": "p9", "order_id": "o-7"}
    assert stock_low.topic(data) == "low-p9" and back.topic(data) == "stock-p9"
    assert RULES["order.shipped"][0].topic(data) == RULES["order.confirmed"][0].topic(data) == "order-o-7"
    assert RULES["points.awarded"][0].topic(data) == "points"
    assert RULES["payment.failed"][0].topic(data) is None


def test_a_rule_planned_from_an_event_asks_for_every_channel_with_no_fixed_text():
    p, = plan(event("order.shipped", ORDER))
    assert p.channels == CHANNELS and p.title is None and p.body is None


@pytest.mark.parametrize("event_type, data", [
    ("order.created", {k: v for k, v in ORDER.items() if k != "user_id"}),
    ("order.shipped", dict(ORDER, user_id="")),
    ("order.cancelled", dict(ORDER, user_id="   ")),
    ("payment.failed", {k: v for k, v in PAYMENT.items() if k != "user_id"}),
    ("payment.succeeded", dict(PAYMENT, user_id=42)),
    ("points.awarded", {k: v for k, v in POINTS.items() if k != "user_id"}),
    ("points.expired", dict(POINTS, user_id=None)),
])
def test_user_events_without_a_user_are_rejected(event_type, data):
    with pytest.raises(Rejected, match="user_id"):
        plan(event(event_type, data))


def test_the_subject_names_the_user_when_the_data_does_not():
    data = {k: v for k, v in ORDER.items() if k != "user_id"}
    e = event("order.shipped", data, subject="u-from-subject")
    assert [p.rule.type for p in plan(e)] == ["order_shipped"]
    assert recipient_user(e) == "u-from-subject"
    assert recipient_user(event("order.shipped", ORDER, subject="other")) == USER_ID  # the data wins


def test_a_user_event_type_without_rules_needs_no_user():
    assert plan(event("order.processing", {"order_id": "o"})) == []


def test_inventory_events_need_no_user():
    assert plan(event("inventory.low", {"product_id": "p", "available": 1})) != []


REQUEST = {"user_id": USER_ID, "type": "order_delayed", "title": "Your order is late", "body": "Sorry."}


def test_notification_requested_as_given():
    p, = plan(event("notification.requested", dict(REQUEST, priority="urgent", channels=["sms", "email"],
                                                   data={"order_id": "o-1"}, expires_after_s=600)))
    assert (p.rule.type, p.rule.category, p.rule.priority, p.rule.recipients) == ("order_delayed", "order", "urgent", USER)
    assert (p.title, p.body) == ("Your order is late", "Sorry.")
    assert p.channels == ("email", "sms")  # in the engine's channel order
    assert p.rule.expires_after_s == 600


def test_notification_requested_defaults():
    p, = plan(event("notification.requested", REQUEST))
    assert p.rule.priority == "normal" and p.channels == CHANNELS and p.rule.expires_after_s is None
    assert p.rule.topic({}) is None


@pytest.mark.parametrize("notification_type, category", [
    ("order_delayed", "order"),
    ("order.delayed", "order"),
    ("payment_reminder", "payment"),
    ("points_bonus", "points"),
    ("stock_report", "stock"),
    ("promo", "marketing"),
    ("summer_sale", "marketing"),
    ("orders_digest", "marketing"),  # `orders` is not the category `order`
])
def test_requested_category_derives_from_the_type(notification_type, category):
    p, = plan(event("notification.requested", dict(REQUEST, type=notification_type)))
    assert p.rule.category == category


def test_requested_category_given_wins():
    p, = plan(event("notification.requested", dict(REQUEST, type="promo", category="points")))
    assert p.rule.category == "points"


@pytest.mark.parametrize("change, message", [  # None: the field is left out
    ({"user_id": None}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"type": None}, "type"),
    ({"title": None}, "title"),
    ({"title": "  "}, "title"),
    ({"title": 5}, "title"),
    ({"body": None}, "body"),
    ({"priority": "critical"}, "priority"),
    ({"priority": "HIGH"}, "priority"),
    ({"channels": "email"}, "channels"),
    ({"channels": []}, "channels"),
    ({"channels": ["email", "fax"]}, "channels"),
    ({"channels": {"email": True}}, "channels"),
    ({"data": ["x"]}, "data"),
    ({"data": "x"}, "data"),
    ({"category": "news"}, "category"),
    ({"category": ["order"]}, "category"),
    ({"expires_after_s": 0}, "expires_after_s"),
    ({"expires_after_s": "60"}, "expires_after_s"),
    ({"expires_after_s": True}, "expires_after_s"),
])
def test_bad_notification_requested_is_rejected(change, message):
    data = dict(REQUEST)
    for key, value in change.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    with pytest.raises(Rejected, match=message):
        plan(event("notification.requested", data))


def test_requested_is_what_plan_uses():
    assert requested(REQUEST) == plan(event("notification.requested", REQUEST))[0]


def test_notification_id_is_stable_and_distinct():
    base = notification_id("e-1", "order_shipped", "u-1")
    assert base == notification_id("e-1", "order_shipped", "u-1")
    assert len(base) == 32 and int(base, 16) >= 0
    others = {notification_id("e-2", "order_shipped", "u-1"), notification_id("e-1", "order_created", "u-1"),
              notification_id("e-1", "order_shipped", "u-2")}
    assert base not in others and len(others) == 3
    # The parts are separated: moving characters from one part to the next changes the id.
    assert notification_id("e-1x", "y", "u") != notification_id("e-1", "xy", "u")
