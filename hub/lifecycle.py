"""The hub's connections and services: started in order, stopped in reverse.

MongoDB, Redis and Kafka are either the real services named by the settings or the
embedded stand-ins; nothing above this module knows which.
"""

from __future__ import annotations

import json
import logging

from config.settings import Settings, SettingsError
from domain.accounts import Accounts
from domain.broadcasts import Broadcasts
from domain.clock import utcnow
from domain.cart import Carts
from domain.catalog import Catalog
from domain.checkout import Checkout
from domain.coupons import Coupons
from domain.delivery_reports import DeliveryReports
from domain.devices import Devices
from domain.errors import Conflict
from domain.events import cloud_event
from domain.inbox import Inbox
from domain.ordering import Orders
from domain.payments import Payments
from domain.points import Points
from domain.realtime_channels import ADMIN_ORDERS
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
from domain.notification_templates import Templates
from domain.notifications import Notifier
from hub.consumer import EventConsumer
from hub.embedded_broker import EmbeddedBroker
from hub.frequency_caps import FrequencyCaps
from hub.kafka import Kafka
from hub.mongo import connect_mongo, mongo_healthy
from hub.demo import seed as seed_demo
from hub.metrics import BROADCAST_RECIPIENTS, DELIVERIES, PUSH_TARGETS, TEMPLATE_FAILURES
from hub.notify_dispatcher import Dispatcher
from hub.outbox import OutboxRelay
from hub.outgoing import OutgoingPolicy
from hub.ratelimit import RateLimiter
from hub.realtime import FanOut, Realtime
from hub.redis_client import connect_redis, redis_healthy
from hub.store.broadcasts import BroadcastStore
from hub.store.devices import DeviceStore
from hub.store.carts import CartStore
from hub.store.coupons import CouponStore
from hub.store.login_failures import LoginFailureStore
from hub.store.notifications import NotificationStore
from hub.store.orders import OrderStore
from hub.store.outbox import OutboxStore
from hub.store.payments import PaymentStore
from hub.store.points import PointsStore
from hub.store.products import ProductStore
from hub.store.refresh_tokens import RefreshTokenStore
from hub.store.stock_alerts import StockAlertStore
from hub.store.templates import TemplateStore
from hub.store.topics import TopicStore
from hub.store.users import UserStore
from hub.stripe_gateway import StripeGateway
from hub.sweeper import Sweeper

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, settings: Settings, mongo_client=None) -> None:
        """`mongo_client` lets a test restart a hub on the same embedded store."""
        self.settings = settings
        self.mongo_client = mongo_client
        self._owns_mongo_client = mongo_client is None
        self.broker: EmbeddedBroker | None = None
        self.kafka: Kafka | None = None
        self.redis = None
        self.relay: OutboxRelay | None = None
        self.consumers: list[EventConsumer] = []
        self.sweeper: Sweeper | None = None
        self.stripe: StripeGateway | None = None
        self.realtime: Realtime | None = None
        self.dispatcher: Dispatcher | None = None
        self.channels: dict = {}
        self.broadcasts: Broadcasts | None = None
        self.demo_accounts: dict | None = None  # hub/demo.py's sign-ins, when HUB_DEMO seeded them
        self.outgoing = OutgoingPolicy.from_settings(settings)  # every provider client's HTTP calls
        self.accounts: Accounts | None = None

    async def start(self) -> None:
        settings = self.settings
        if self.mongo_client is None:
            self.mongo_client = connect_mongo(settings)
        self.db = self.mongo_client[settings.mongodb_db]
        self.redis = connect_redis(settings)
        await self.redis.ping()

        bootstrap = settings.kafka_bootstrap_servers
        if bootstrap is None:
            self.broker = EmbeddedBroker()
            bootstrap = await self.broker.start()
        self.kafka = Kafka(settings, bootstrap, embedded=self.broker is not None)
        await self.kafka.start()
        self.relay = OutboxRelay(self.db, self.kafka, settings.event_source)

        self.users = UserStore(self.db)
        self.refresh_tokens = RefreshTokenStore(self.db)
        self.login_failures = LoginFailureStore(self.db)
        self.product_store = ProductStore(self.db, self.relay.notify("products"))
        self.order_store = OrderStore(self.db, self.relay.notify("orders"))
        self.payment_store = PaymentStore(self.db, self.relay.notify("payments"))
        self.points_store = PointsStore(self.db, self.relay.notify("points_accounts"))
        self.notification_store = NotificationStore(self.db)
        self.template_store = TemplateStore(self.db)
        self.stock_alert_store = StockAlertStore(self.db)
        self.device_store = DeviceStore(self.db)
        self.coupon_store = CouponStore(self.db, self.relay.notify("coupons"))
        self.cart_store = CartStore(self.db, self.relay.notify("carts"))
        self.topic_store = TopicStore(self.db)
        self.broadcast_store = BroadcastStore(self.db)
        self.outbox_store = OutboxStore(self.db, self.relay.publisher("outbox"))
        for store in (self.users, self.refresh_tokens, self.product_store, self.order_store, self.payment_store,
                      self.points_store, self.notification_store, self.template_store, self.stock_alert_store,
                      self.device_store, self.coupon_store, self.cart_store, self.login_failures, self.topic_store,
                      self.broadcast_store, self.outbox_store):
            await store.create_indexes()

        self.access_tokens = AccessTokens(settings.jwt_secret, settings.access_token_ttl_s)
        self.accounts = Accounts(self.users, self.refresh_tokens, self.access_tokens, settings.refresh_token_ttl_s,
                                 login_failures=self.login_failures, sms_countries=settings.sms_country_codes)
        self.rate_limiter = RateLimiter(self.redis, settings.redis_prefix)
        self.service_events = ServiceEvents(self.users, self.outbox_store, source=settings.event_source)
        self.topics = Topics(self.topic_store, self.users, clock=utcnow)
        self.devices = Devices(self.device_store, self.users, clock=utcnow)
        self.stock_alerts = StockAlerts(self.stock_alert_store, clock=utcnow)
        self.inbox = Inbox(self.notification_store, clock=utcnow)
        self.catalog = Catalog(self.product_store, currency=settings.currency, clock=utcnow)
        self.orders = Orders(self.order_store, self.product_store, source=settings.event_source,
                             currency=settings.currency, payment_timeout_s=settings.order_payment_timeout_s, clock=utcnow,
                             max_unpaid=settings.max_unpaid_orders)
        self.stripe = StripeGateway(settings.stripe_api_key, settings.stripe_api_base,
                                    self.outgoing) if settings.stripe_api_key else None
        self.points = Points(self.points_store, self.product_store, source=settings.event_source,
                             per_unit=settings.points_per_unit, ttl_days=settings.points_ttl_days, clock=utcnow)
        self.payments = Payments(self.payment_store, self.orders, self.order_store, self.stripe, self.points,
                                 source=settings.event_source, clock=utcnow)
        self.checkout = Checkout(self.coupon_store, self.points, self.order_store, source=settings.event_source,
                                 points_per_currency_unit=settings.points_per_currency_unit, clock=utcnow)
        self.orders.checkout = self.checkout
        if settings.admin_email and settings.admin_password:
            try:
                await self.accounts.ensure_admin(settings.admin_email, settings.admin_password)
            except Conflict as exc:
                raise SettingsError(f"HUB_ADMIN_EMAIL: {exc.message}") from None
        if settings.demo:
            self.demo_accounts = await seed_demo(self)

        self.realtime = Realtime(self.redis, settings.redis_prefix, history_size=settings.ws_history_size,
                                 history_age_s=settings.ws_history_ttl_s)
        await self.realtime.start()
        self.channels = notification_channels(settings, self.realtime, self.outgoing)

        def count_delivery(channel: str, status: str, reason: str | None) -> None:
            DELIVERIES.labels(channel, status, reason or "").inc()

        self.templates = Templates(self.template_store,
                                   on_failure=lambda channel: TEMPLATE_FAILURES.labels(channel).inc())
        self.notifier = Notifier(
            self.notification_store, self.users, self.product_store, self.stock_alert_store, self.templates,
            FrequencyCaps(self.redis, settings.redis_prefix), self.channels, clock=utcnow,
            retry_base_s=settings.notify_retry_base_s, max_attempts=settings.notify_max_attempts,
            source=settings.event_source,
            on_delivery=count_delivery, devices=self.device_store,
            on_target=lambda kind, status, reason: PUSH_TARGETS.labels(kind, status, reason or "").inc(),
            sms_countries=settings.sms_country_codes, sms_max_per_day=settings.sms_max_per_day)
        self.delivery_reports = DeliveryReports(self.notification_store, clock=utcnow, on_delivery=count_delivery)
        self.dispatcher = Dispatcher(self.notifier, self.notification_store, concurrency=settings.notify_concurrency,
                                     clock=utcnow)
        cart_url = f"{settings.public_base_url}/#/cart"
        self.coupons = Coupons(self.coupon_store, source=settings.event_source, cart_url=cart_url, clock=utcnow,
                               notify=self.notifier.record)
        self.carts = Carts(self.cart_store, self.product_store, self.order_store, self.checkout,
                           source=settings.event_source, currency=settings.currency, max_items=settings.cart_max_items,
                           max_quantity=settings.max_line_quantity, remind_after_s=settings.cart_reminder_after_s, cart_url=cart_url,
                           clock=utcnow, publish=lambda user_id, event: self.realtime.publish_events(
                               [(event, [f"user:{user_id}"])]))
        self.notifier.on_recorded = self.dispatcher.submit
        self.unsubscribe_links = UnsubscribeLinks(settings.jwt_secret,
                                                  settings.public_base_url)
        self.notifier.unsubscribe_url = self.unsubscribe_links.url
        self.broadcasts = Broadcasts(
            self.broadcast_store, self.topic_store, self.users, self.notifier, self.notification_store,
            publish=self._publish_batch, source=settings.event_source, batch_size=settings.broadcast_batch_size,
            concurrency=settings.broadcast_concurrency, clock=utcnow,
            on_processed=lambda outcome, n: BROADCAST_RECIPIENTS.labels(outcome).inc(n),
            on_progress=self._broadcast_progress)
        self.notifier.on_broadcast_moves = self.broadcasts.delivery_moved
        self.dispatcher.start()

        self.relay.start()
        # One process publishes each event on its channels, with their seq, for the WebSocket
        # clients of every process (docs/realtime.md).
        fan_out = FanOut(self.realtime, settings.event_source)
        self.consumers = [
            EventConsumer(self.kafka, group="hub-orders", topics=["orders"], handler=self.orders.apply_external,
                          source=settings.event_source),
            EventConsumer(self.kafka, group="hub-payments", topics=["payments"], handler=self.payments.apply_external,
                          source=settings.event_source),
            EventConsumer(self.kafka, group="hub-points", topics=["points"], handler=self.points.apply_external,
                          source=settings.event_source),
            EventConsumer(self.kafka, group="hub-notify", topics=["orders", "payments", "points", "inventory",
                                                                  "notifications"],
                          handler=self._notify, source=settings.event_source, skip_own=False),
            EventConsumer(self.kafka, group="hub-realtime", topics=["orders", "payments", "points", "inventory"],
                          handler=fan_out.add, flush=fan_out.flush, source=settings.event_source, skip_own=False),
            # A batch is up to HUB_BROADCAST_BATCH_SIZE recipients: seconds of work each.
            EventConsumer(self.kafka, group="hub-broadcasts", topics=["broadcasts"], handler=self.broadcasts.handle_batch,
                          source=settings.event_source, skip_own=False, max_poll_records=1),
        ]
        for consumer in self.consumers:
            await consumer.start()
        self.sweeper = Sweeper([self.orders.sweep, self.points.sweep, self.points.expire, self.checkout.sweep,
                                self.carts.remind, self.coupons.remind_expiring], settings.sweep_interval_s)
        self.sweeper.start()
        self.broadcasts.start()
        self._announce_channels()

    async def _notify(self, event: dict) -> None:
        """hub-notify: record the event's notifications (then the offset is committed),
        and wait while this process has plenty in hand (backpressure into Kafka)."""
        await self.notifier.record(event)
        await self.dispatcher.room()

    async def _publish_batch(self, event: dict) -> None:
        """A broadcast's page of recipients, on the `broadcasts` topic; keyed by page so
        that the pages spread over the partitions, and so over the processes."""
        value = json.dumps(event).encode()
        await self.kafka.producer.send_and_wait(self.kafka.topic("broadcasts"), value, key=event["id"].encode(),
                                                headers=self.kafka.signer.headers(value))

    async def _broadcast_progress(self, broadcast: dict) -> None:
        """Admins watching `admin:orders` see each broadcast's progress live (docs/realtime.md)."""
        event = cloud_event("broadcast.progress", self.settings.event_source, broadcast)
        await self.realtime.publish_events([(event, [ADMIN_ORDERS])])

    def _announce_channels(self) -> None:
        s = self.settings
        for channel, configured, setting in (
            ("email", s.smtp_url, "SMTP_URL"),
            ("sms", s.twilio_account_sid and s.twilio_auth_token and s.twilio_from, "TWILIO_*"),
            ("push", s.vapid_private_key, "VAPID_PRIVATE_KEY"),
            ("apns", s.apns_key_file, "APNS_KEY_FILE"),
            ("fcm", s.fcm_service_account_file, "FCM_SERVICE_ACCOUNT_FILE"),
            ("payments", s.stripe_api_key, "STRIPE_API_KEY"),
        ):
            if not configured:
                log.warning(f"{setting} is unset: {channel} is off", extra={"channel": channel})

    async def health(self) -> dict[str, bool]:
        return {
            "mongo": await mongo_healthy(self.db),
            "redis": await redis_healthy(self.redis),
            "kafka": await self.kafka.healthy(),
        }

    async def stop(self) -> None:
        """Close everything that was opened, in reverse order; safe after a failed start."""
        if self.sweeper is not None:
            await self.sweeper.stop()
        if self.broadcasts is not None:
            await self.broadcasts.stop()
        for consumer in self.consumers:
            await consumer.stop()  # commits the offsets of what was handled
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.accounts is not None:
            self.accounts.close()
        for channel in self.channels.values():
            await channel.close()
        if self.realtime is not None:
            await self.realtime.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.stripe is not None:
            await self.stripe.close()
        if self.kafka is not None:
            await self.kafka.stop()
        if self.broker is not None:
            await self.broker.stop()
        if self.redis is not None:
            await self.redis.aclose()
        if self.mongo_client is not None and self._owns_mongo_client:
            await self.mongo_client.close()


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
