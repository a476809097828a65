"""Every store and service of a hub process, built in one place from the settings and the
connections (`build`). Handlers get them through the Tornado application settings (`self.stores`,
`self.services`), workers as arguments; nothing is added to them later.

Names say which is which: `stores.orders` persists orders (hub/stores/orders.py),
`services.orders` holds their rules (domain/ordering.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from config.settings import Settings
from domain.accounts import Accounts
from domain.broadcasts import Broadcasts
from domain.cart import Carts
from domain.catalog import Catalog
from domain.checkout import Checkout
from domain.clock import utcnow
from domain.coupons import Coupons
from domain.delivery_reports import DeliveryReports
from domain.devices import Devices
from domain.events import cloud_event
from domain.feeds import ADMIN_ORDERS, user_feed
from domain.inbox import Inbox
from domain.notification_templates import Templates
from domain.notifications import Notifier
from domain.ordering import Orders
from domain.payments import Payments
from domain.points import Points
from domain.service_events import ServiceEvents
from domain.stock_alerts import StockAlerts
from domain.tokens import AccessTokens
from domain.topics import Topics
from domain.unsubscribe import UnsubscribeLinks
from channels.apns import ApnsChannel
from channels.email import EmailChannel
from channels.fcm import FcmChannel
from channels.push import PushChannel
from channels.sms import SmsChannel
from channels.websocket import WebSocketChannel
from hub.adapters.frequency_caps import FrequencyCaps
from hub.adapters.kafka import Kafka
from hub.adapters.outgoing import OutgoingPolicy, OutgoingRefused
from hub.adapters.ratelimit import RateLimiter
from hub.adapters.stripe_gateway import StripeGateway
from hub.live.realtime import Realtime
from hub.stores.broadcasts import BroadcastStore
from hub.stores.carts import CartStore
from hub.stores.coupons import CouponStore
from hub.stores.devices import DeviceStore
from hub.stores.login_failures import LoginFailureStore
from hub.stores.notifications import NotificationStore
from hub.stores.orders import OrderStore
from hub.stores.outbox import OutboxStore
from hub.stores.payments import PaymentStore
from hub.stores.points import PointsStore
from hub.stores.products import ProductStore
from hub.stores.refresh_tokens import RefreshTokenStore
from hub.stores.stock_alerts import StockAlertStore
from hub.stores.templates import TemplateStore
from hub.stores.topics import TopicStore
from hub.stores.users import UserStore
from hub.wiring.metrics import BROADCAST_RECIPIENTS, DELIVERIES, PUSH_TARGETS, TEMPLATE_FAILURES
from hub.workers.notify_dispatcher import Dispatcher
from hub.workers.outbox import OutboxRelay


@dataclass(frozen=True)
class Stores:
    """One per MongoDB collection."""
    users: UserStore
    refresh_tokens: RefreshTokenStore
    login_failures: LoginFailureStore
    products: ProductStore
    orders: OrderStore
    payments: PaymentStore
    points: PointsStore
    notifications: NotificationStore
    templates: TemplateStore
    stock_alerts: StockAlertStore
    devices: DeviceStore
    coupons: CouponStore
    carts: CartStore
    topics: TopicStore
    broadcasts: BroadcastStore
    outbox: OutboxStore  # events accepted over HTTP, until Kafka has them

    def all(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True)
class Services:
    """The rules (domain/), and what handlers and workers call beside them."""
    access_tokens: AccessTokens
    accounts: Accounts
    rate_limiter: RateLimiter
    service_events: ServiceEvents
    topics: Topics
    devices: Devices
    stock_alerts: StockAlerts
    inbox: Inbox
    delivery_reports: DeliveryReports
    catalog: Catalog
    orders: Orders
    points: Points
    payments: Payments
    checkout: Checkout
    coupons: Coupons
    carts: Carts
    templates: Templates
    notifier: Notifier
    dispatcher: Dispatcher
    broadcasts: Broadcasts
    unsubscribe_links: UnsubscribeLinks
    stripe: StripeGateway | None  # None without STRIPE_API_KEY
    realtime: Realtime  # the live fan-out (hub/live)


def build(settings: Settings, *, db, redis, kafka: Kafka, relay: OutboxRelay) -> tuple[Stores, Services]:
    """The stores over `db` and the services over them; nothing is started here (Hub.start
    does, in order)."""
    stores = build_stores(db, relay)
    return stores, _services(settings, stores, redis=redis, kafka=kafka)


def build_stores(db, relay: OutboxRelay) -> Stores:
    """The stores over `db`; those with an outbox wake the relay when they add to it, and the
    relay publishes through them."""
    stores = Stores(
        users=UserStore(db),
        refresh_tokens=RefreshTokenStore(db),
        login_failures=LoginFailureStore(db),
        products=ProductStore(db, relay.notify("products")),
        orders=OrderStore(db, relay.notify("orders")),
        payments=PaymentStore(db, relay.notify("payments")),
        points=PointsStore(db, relay.notify("points_accounts")),
        notifications=NotificationStore(db),
        templates=TemplateStore(db),
        stock_alerts=StockAlertStore(db),
        devices=DeviceStore(db),
        coupons=CouponStore(db, relay.notify("coupons")),
        carts=CartStore(db, relay.notify("carts")),
        topics=TopicStore(db),
        broadcasts=BroadcastStore(db),
        outbox=OutboxStore(db, relay.publisher("outbox")),
    )
    relay.register(products=stores.products, orders=stores.orders, payments=stores.payments,
                   points_accounts=stores.points, coupons=stores.coupons, carts=stores.carts, outbox=stores.outbox)
    return stores


def _services(settings: Settings, stores: Stores, *, redis, kafka: Kafka) -> Services:
    outgoing = OutgoingPolicy.from_settings(settings)
    source = settings.event_source
    access_tokens = AccessTokens(settings.jwt_secret, settings.access_token_ttl_s)
    accounts = Accounts(stores.users, stores.refresh_tokens, access_tokens, settings.refresh_token_ttl_s,
                        login_failures=stores.login_failures, sms_countries=settings.sms_country_codes)
    service_events = ServiceEvents(stores.users, stores.outbox, source=source)
    catalog = Catalog(stores.products, currency=settings.currency, clock=utcnow)
    orders = Orders(stores.orders, stores.products, source=source,
                    currency=settings.currency, payment_timeout_s=settings.order_payment_timeout_s, clock=utcnow,
                    max_unpaid=settings.max_unpaid_orders)
    stripe = StripeGateway(settings.stripe_api_key, settings.stripe_api_base,
                           outgoing) if settings.stripe_api_key else None
    points = Points(stores.points, stores.products, source=source,
                    per_unit=settings.points_per_unit, ttl_days=settings.points_ttl_days, clock=utcnow)
    payments = Payments(stores.payments, orders, stores.orders, stripe, points, source=source, clock=utcnow)
    checkout = Checkout(stores.coupons, points, stores.orders, source=source,
                        points_per_currency_unit=settings.points_per_currency_unit, clock=utcnow)
    orders.checkout = checkout
    orders.payments = payments

    realtime = Realtime(redis, settings.redis_prefix, history_size=settings.ws_history_size,
                        history_age_s=settings.ws_history_ttl_s)
    channels = notification_channels(settings, realtime, outgoing)

    def count_delivery(channel: str, status: str, reason: str | None) -> None:
        DELIVERIES.labels(channel, status, reason or "").inc()

    templates = Templates(stores.templates, on_failure=lambda channel: TEMPLATE_FAILURES.labels(channel).inc())
    notifier = Notifier(
        stores.notifications, stores.users, stores.products, stores.stock_alerts, templates,
        FrequencyCaps(redis, settings.redis_prefix), channels, clock=utcnow,
        retry_base_s=settings.notify_retry_base_s, max_attempts=settings.notify_max_attempts,
        source=source,
        on_delivery=count_delivery, devices=stores.devices,
        on_target=lambda kind, status, reason: PUSH_TARGETS.labels(kind, status, reason or "").inc(),
        sms_countries=settings.sms_country_codes, sms_max_per_day=settings.sms_max_per_day)
    dispatcher = Dispatcher(notifier, stores.notifications, concurrency=settings.notify_concurrency, clock=utcnow)
    cart_url = f"{settings.public_base_url}/#/cart"
    coupons = Coupons(stores.coupons, source=source, cart_url=cart_url, clock=utcnow, notify=notifier.record)
    carts = Carts(stores.carts, stores.products, stores.orders, checkout,
                  source=source, currency=settings.currency, max_items=settings.cart_max_items,
                  max_quantity=settings.max_line_quantity, remind_after_s=settings.cart_reminder_after_s,
                  cart_url=cart_url, clock=utcnow,
                  publish=lambda user_id, event: realtime.publish_events([(event, [user_feed(user_id)])]))
    notifier.on_recorded = dispatcher.submit
    unsubscribe_links = UnsubscribeLinks(settings.jwt_secret, settings.public_base_url)
    notifier.unsubscribe_url = unsubscribe_links.url

    async def publish_batch(event: dict) -> None:
        """A broadcast's page of recipients, on the `broadcasts` topic; keyed by page so
        that the pages spread over the partitions, and so over the processes."""
        value = json.dumps(event).encode()
        await kafka.producer.send_and_wait(kafka.topic("broadcasts"), value, key=event["id"].encode(),
                                           headers=kafka.signer.headers(value))

    async def broadcast_progress(broadcast: dict) -> None:
        """Admins watching `admin:orders` see each broadcast's progress live (docs/realtime.md)."""
        event = cloud_event("broadcast.progress", source, broadcast)
        await realtime.publish_events([(event, [ADMIN_ORDERS])])

    broadcasts = Broadcasts(
        stores.broadcasts, stores.topics, stores.users, notifier, stores.notifications,
        publish=publish_batch, source=source, batch_size=settings.broadcast_batch_size,
        concurrency=settings.broadcast_concurrency, clock=utcnow,
        on_processed=lambda outcome, n: BROADCAST_RECIPIENTS.labels(outcome).inc(n),
        on_progress=broadcast_progress)
    notifier.on_broadcast_moves = broadcasts.delivery_moved
    return Services(
        access_tokens=access_tokens, accounts=accounts, rate_limiter=RateLimiter(redis, settings.redis_prefix),
        service_events=service_events, topics=Topics(stores.topics, stores.users, clock=utcnow),
        devices=Devices(stores.devices, stores.users, clock=utcnow, endpoint_refusal=_refusal_of(outgoing),
                        web_push="push" in channels),
        stock_alerts=StockAlerts(stores.stock_alerts, clock=utcnow), inbox=Inbox(stores.notifications, clock=utcnow),
        delivery_reports=DeliveryReports(stores.notifications, clock=utcnow, on_delivery=count_delivery),
        catalog=catalog, orders=orders, points=points, payments=payments, checkout=checkout, coupons=coupons,
        carts=carts, templates=templates, notifier=notifier, dispatcher=dispatcher, broadcasts=broadcasts,
        unsubscribe_links=unsubscribe_links, stripe=stripe, realtime=realtime)


def _refusal_of(outgoing: OutgoingPolicy):
    """The outgoing policy's check of a push endpoint, as the reason it refuses one (or None)."""
    async def refusal(url: str) -> str | None:
        try:
            await outgoing.check_push_endpoint(url)
        except OutgoingRefused as exc:
            return exc.reason
        return None
    return refusal


def notification_channels(settings: Settings, realtime: Realtime, outgoing: OutgoingPolicy) -> dict:
    """The delivery channels this hub is configured for; the others are off."""
    timeout = settings.provider_timeout_s
    channels = {"websocket": WebSocketChannel(realtime)}
    if settings.smtp_url:
        channels["email"] = EmailChannel(settings.smtp_url, settings.smtp_from, timeout, require_tls=settings.production)
    if settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from:
        callback = f"{settings.public_url}/api/v1/webhooks/twilio" if settings.public_url else None
        channels["sms"] = SmsChannel(settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_from,
                                     settings.twilio_api_base, callback, timeout, policy=outgoing)
    if settings.vapid_private_key:
        channels["push"] = PushChannel(settings.vapid_private_key, settings.vapid_subject or "mailto:hub@localhost",
                                       timeout, policy=outgoing)
    if settings.apns_key_file:
        channels["apns"] = ApnsChannel(settings.apns_key_file, settings.apns_key_id, settings.apns_team_id,
                                       settings.apns_topic, settings.apns_base_url, settings.apns_sandbox_base_url,
                                       outgoing)
    if settings.fcm_service_account_file:
        channels["fcm"] = FcmChannel(settings.fcm_service_account_file, settings.fcm_project_id, settings.fcm_base_url,
                                     outgoing)
    return channels
