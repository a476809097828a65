"""A hub process's lifecycle: connect, start in order, stop in reverse. The stores and
services are built in one place (hub/wiring/container.py); this starts and stops them.

MongoDB, Redis and Kafka are either the real services named by the settings or the
embedded stand-ins; nothing above this module knows which.
"""

from __future__ import annotations

import asyncio
import logging

from config.settings import Settings, SettingsError
from domain.errors import Conflict
from hub.adapters.embedded_broker import EmbeddedBroker
from hub.adapters.kafka import Kafka
from hub.adapters.mongo import connect_mongo, mongo_healthy
from hub.adapters.redis_client import connect_redis, redis_healthy
from hub.live.realtime import FanOut
from hub.wiring.container import Services, Stores, build
from hub.wiring.demo import seed as seed_demo
from hub.workers.consumer import EventConsumer
from hub.workers.outbox import OutboxRelay
from hub.workers.sweeper import Sweeper

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
        self.stores: Stores | None = None
        self.services: Services | None = None
        self.consumers: list[EventConsumer] = []
        self.sweeper: Sweeper | None = None
        self.demo_accounts: dict | None = None  # hub/wiring/demo.py's sign-ins, when HUB_DEMO seeded them

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
        self.relay = OutboxRelay(self.kafka, settings.event_source)

        self.stores, self.services = stores, services = build(settings, db=self.db, redis=self.redis,
                                                               kafka=self.kafka, relay=self.relay)
        for store in stores.all():
            await store.create_indexes()
        if settings.admin_email and settings.admin_password:
            try:
                await services.accounts.ensure_admin(settings.admin_email, settings.admin_password)
            except Conflict as exc:
                raise SettingsError(f"HUB_ADMIN_EMAIL: {exc.message}") from None
        if settings.demo:
            self.demo_accounts = await seed_demo(settings, stores, services)

        await services.realtime.start()
        services.dispatcher.start()

        self.relay.start()
        # One process publishes each event on its feeds, with their seq, for the WebSocket
        # clients of every process (docs/realtime.md).
        fan_out = FanOut(services.realtime, settings.event_source)
        self.consumers = [
            EventConsumer(self.kafka, group="hub-orders", topics=["orders"], handler=services.orders.apply_external,
                          source=settings.event_source),
            EventConsumer(self.kafka, group="hub-payments", topics=["payments"],
                          handler=services.payments.apply_external, source=settings.event_source),
            EventConsumer(self.kafka, group="hub-points", topics=["points"], handler=services.points.apply_external,
                          source=settings.event_source),
            EventConsumer(self.kafka, group="hub-notify", topics=["orders", "payments", "points", "inventory",
                                                                  "notifications"],
                          handler=self._notify, source=settings.event_source, skip_own=False),
            EventConsumer(self.kafka, group="hub-realtime", topics=["orders", "payments", "points", "inventory"],
                          handler=fan_out.add, flush=fan_out.flush, source=settings.event_source, skip_own=False),
            # A batch is up to HUB_BROADCAST_BATCH_SIZE recipients: seconds of work each.
            EventConsumer(self.kafka, group="hub-broadcasts", topics=["broadcasts"],
                          handler=services.broadcasts.handle_batch,
                          source=settings.event_source, skip_own=False, max_poll_records=1),
        ]
        for consumer in self.consumers:
            await consumer.start()
        self.sweeper = Sweeper([services.orders.sweep, services.points.sweep, services.points.expire,
                                services.checkout.sweep, services.carts.remind, services.coupons.remind_expiring],
                               settings.sweep_interval_s)
        self.sweeper.start()
        services.broadcasts.start()
        self._announce_channels()

    async def _notify(self, event: dict) -> None:
        """hub-notify: record the event's notifications (then the offset is committed),
        and wait while this process has plenty in hand (backpressure into Kafka)."""
        await self.services.notifier.record(event)
        await self.services.dispatcher.room()

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
        services = self.services
        if self.sweeper is not None:
            await self.sweeper.stop()
        if services is not None:
            await services.broadcasts.stop()
        # All at once: each first waits out the fetch in hand. Each commits what it handled.
        await asyncio.gather(*(consumer.stop() for consumer in self.consumers))
        if services is not None:
            await services.dispatcher.stop()
            services.accounts.close()
            await services.notifier.close()
            await services.realtime.stop()
        if self.relay is not None:
            await self.relay.stop()
        if services is not None and services.stripe is not None:
            await services.stripe.close()
        if self.kafka is not None:
            await self.kafka.stop()
        if self.broker is not None:
            await self.broker.stop()
        if self.redis is not None:
            await self.redis.aclose()
        if self.mongo_client is not None and self._owns_mongo_client:
            await self.mongo_client.close()
