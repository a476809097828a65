"""The Tornado application: every route in one table."""

from __future__ import annotations

import logging

import tornado.web

from handlers.auth import LoginHandler, LogoutHandler, RefreshHandler, RegisterHandler
from handlers.broadcasts import BroadcastCancelHandler, BroadcastHandler, BroadcastsHandler
from handlers.base import NotFoundHandler
from handlers.cart import CartCouponHandler, CartHandler, CartItemHandler, CartPointsHandler
from handlers.coupons import CouponHandler, CouponsHandler
from handlers.devices import DeviceHandler, DevicesHandler
from handlers.events import EventsHandler
from handlers.ops import HealthHandler, MetricsHandler, OpenApiHandler, ReadyHandler
from handlers.orders import CancelHandler, OrderHandler, OrdersHandler, TransitionHandler
from handlers.payments import OrderPaymentsHandler, PaymentIntentHandler, StripeWebhookHandler
from handlers.points import PointsHandler, RedemptionsHandler
from handlers.preferences import PreferencesHandler
from handlers.products import ProductHandler, ProductsHandler, StockHandler
from handlers.notifications import InboxHandler, NotificationsHandler, ReadAllHandler, ReadHandler
from handlers.push import PushSubscriptionsHandler, VapidKeyHandler
from handlers.stock_alerts import StockAlertHandler
from handlers.templates import TemplateHandler, TemplatesHandler
from handlers.topics import MyTopicHandler, TopicHandler, TopicsHandler, TopicSubscribersHandler
from handlers.twilio import TwilioStatusHandler
from handlers.unsubscribe import UnsubscribeHandler
from handlers.users import MeHandler
from handlers.web import WEB_ROUTES
from handlers.ws import WebSocketHandler
from hub.wiring.client_ip import client_ip
from hub.wiring.openapi import build_openapi

access_log = logging.getLogger("hub.access")

API = "/api/v1"
ROUTES: list[tuple[str, type]] = [
    (r"/healthz", HealthHandler),
    (r"/readyz", ReadyHandler),
    (r"/metrics", MetricsHandler),
    (rf"{API}/openapi.json", OpenApiHandler),
    (rf"{API}/auth/register", RegisterHandler),
    (rf"{API}/auth/login", LoginHandler),
    (rf"{API}/auth/refresh", RefreshHandler),
    (rf"{API}/users/me", MeHandler),
    (rf"{API}/users/me/points", PointsHandler),
    (rf"{API}/users/me/preferences", PreferencesHandler),
    (rf"{API}/points/redemptions", RedemptionsHandler),
    (rf"{API}/products", ProductsHandler),
    (rf"{API}/products/(?P<product_id>[^/]+)", ProductHandler),
    (rf"{API}/products/(?P<product_id>[^/]+)/stock", StockHandler),
    (rf"{API}/orders", OrdersHandler),
    (rf"{API}/orders/(?P<order_id>[^/]+)", OrderHandler),
    (rf"{API}/orders/(?P<order_id>[^/]+)/cancel", CancelHandler),
    (rf"{API}/orders/(?P<order_id>[^/]+)/transitions", TransitionHandler),
    (rf"{API}/orders/(?P<order_id>[^/]+)/payment-intent", PaymentIntentHandler),
    (rf"{API}/orders/(?P<order_id>[^/]+)/payments", OrderPaymentsHandler),
    (rf"{API}/webhooks/stripe", StripeWebhookHandler),
    (rf"{API}/events", EventsHandler),
    (rf"{API}/users/me/notifications", InboxHandler),
    (rf"{API}/users/me/notifications/read-all", ReadAllHandler),
    (rf"{API}/users/me/notifications/(?P<notification_id>[^/]+)/read", ReadHandler),
    (rf"{API}/notifications", NotificationsHandler),
    (rf"{API}/push/vapid-public-key", VapidKeyHandler),
    (rf"{API}/users/me/push-subscriptions", PushSubscriptionsHandler),
    (rf"{API}/products/(?P<product_id>[^/]+)/stock-alerts", StockAlertHandler),
    (rf"{API}/templates", TemplatesHandler),
    (rf"{API}/templates/(?P<notification_type>[^/]+)/(?P<channel>[^/]+)", TemplateHandler),
    (rf"{API}/webhooks/twilio", TwilioStatusHandler),
    (r"/ws", WebSocketHandler),
    (rf"{API}/users/me/devices", DevicesHandler),
    (rf"{API}/users/me/devices/(?P<device_id>[^/]+)", DeviceHandler),
    (rf"{API}/users/me/cart", CartHandler),
    (rf"{API}/users/me/cart/items/(?P<product_id>[^/]+)", CartItemHandler),
    (rf"{API}/users/me/cart/coupon", CartCouponHandler),
    (rf"{API}/users/me/cart/points", CartPointsHandler),
    (rf"{API}/coupons", CouponsHandler),
    (rf"{API}/coupons/(?P<code>[^/]+)", CouponHandler),
    (rf"{API}/auth/logout", LogoutHandler),
    (rf"{API}/topics", TopicsHandler),
    (rf"{API}/topics/(?P<key>[^/]+)", TopicHandler),
    (rf"{API}/topics/(?P<key>[^/]+)/subscribers", TopicSubscribersHandler),
    (rf"{API}/users/me/topics/(?P<key>[^/]+)", MyTopicHandler),
    (rf"{API}/broadcasts", BroadcastsHandler),
    (rf"{API}/broadcasts/(?P<broadcast_id>[^/]+)", BroadcastHandler),
    (rf"{API}/broadcasts/(?P<broadcast_id>[^/]+)/cancel", BroadcastCancelHandler),
    (rf"{API}/unsubscribe", UnsubscribeHandler),
]


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # The path only: query strings may carry tokens (/ws?token=...).
    status = handler.get_status()
    access_log.log(
        logging.WARNING if status >= 500 else logging.INFO,
        "request",
        extra={
            "method": handler.request.method,
            "path": handler.request.path,
            "status": status,
            "duration_ms": round(handler.request.request_time() * 1000, 2),
            "request_id": getattr(handler, "request_id", None),
            "remote_ip": client_ip(handler.request, handler.application.settings["config"]),
        },
    )


def make_app(hub) -> tornado.web.Application:
    app = tornado.web.Application(
        ROUTES + WEB_ROUTES,  # the web app's files (not API: left out of the OpenAPI document)
        default_handler_class=NotFoundHandler,
        config=hub.settings,  # config/settings.py's Settings (a handler's `settings` is Tornado's)
        services=hub.services,
        health=hub.health,
        openapi=build_openapi(ROUTES, hub.settings),
        cors_origins=frozenset(hub.settings.cors_origin_list),
        log_function=_log_request,
        serve_traceback=False,
        # Tornado's defaults are no pings and 10 MiB frames (LESSONS: NAT boxes drop idle connections).
        websocket_ping_interval=25,
        websocket_ping_timeout=20,
        websocket_max_message_size=64 * 1024,
    )
    app.in_flight = set()  # handlers still answering; shutdown waits for them
    app.websockets = set()  # open WebSocket connections; shutdown closes them with 1001
    app.websocket_ips: dict[str, int] = {}  # connections per client address (HUB_WS_MAX_CONNECTIONS_PER_IP)
    app.websocket_users: dict[str, int] = {}  # connections per user (HUB_WS_MAX_CONNECTIONS_PER_USER)
    return app
