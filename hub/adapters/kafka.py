"""The Kafka connection: topic creation, the producer and a health probe.

The bundled broker has no idempotent producer, so we publish with acks=all and rely on
every consumer deduplicating by CloudEvent id (an event may be delivered twice, never
with two ids).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from config.settings import Settings
from hub.adapters.event_signing import EventSigner

log = logging.getLogger(__name__)

# CONTRACT §3 topics, the dead-letter topic, and the batches of broadcast recipients.
TOPICS = ("orders", "payments", "points", "inventory", "notifications", "dlq", "broadcasts")
_TOPIC_ALREADY_EXISTS = 36


# How long the broker may hold a fetch while no new message exists. A real broker answers
# as soon as a message arrives, so a long wait costs nothing (aiokafka's 500 ms). The bundled
# broker holds every fetch for the whole wait, which is then latency for a live update: it
# gets a short one (HUB_KAFKA_FETCH_MAX_WAIT_MS overrides both). So that an idle hub does
# not fetch 50 times a second per consumer group, a consumer that has had nothing for
# IDLE_AFTER_S (hub/workers/consumer.py) fetches with the idle wait until a message arrives: the first
# event after a quiet spell may wait that long, the ones behind it do not.
EMBEDDED_FETCH_MAX_WAIT_MS = 20
EMBEDDED_IDLE_FETCH_MAX_WAIT_MS = 250


class Kafka:
    def __init__(self, settings: Settings, bootstrap_servers: str, *, embedded: bool = False) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.signer = EventSigner(settings.jwt_secret)  # marks the hub's own events (hub/adapters/event_signing.py)
        # The bundled broker makes a joining member wait half its session timeout, and a
        # restarted process wait out its predecessor's: keep both short on one machine.
        # Real brokers refuse sessions under 6 s by default; they get aiokafka's 10 s.
        session_ms = settings.kafka_session_timeout_ms or (2000 if embedded else 10_000)
        fetch_ms = settings.kafka_fetch_max_wait_ms or (EMBEDDED_FETCH_MAX_WAIT_MS if embedded else 500)
        self.consumer_options = {"session_timeout_ms": session_ms, "heartbeat_interval_ms": max(300, session_ms // 4),
                                 "fetch_max_wait_ms": fetch_ms}
        self.idle_fetch_max_wait_ms = max(fetch_ms, settings.kafka_idle_fetch_max_wait_ms
                                          or (EMBEDDED_IDLE_FETCH_MAX_WAIT_MS if embedded else fetch_ms))
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=False,
            linger_ms=1,
            request_timeout_ms=10_000,
        )

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    async def start(self) -> None:
        await self._create_topics()
        await self.producer.start()

    async def _create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=10_000)
        await admin.start()
        try:
            response = await admin.create_topics([
                NewTopic(self.topic(name), self.settings.kafka_partitions, self.settings.kafka_replication_factor)
                for name in TOPICS
            ])
            for topic, code, message in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise KafkaError(f"cannot create topic {topic}: {message} (error {code})")
        finally:
            await admin.close()

    async def healthy(self) -> bool:
        try:
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), timeout=2)
            return True
        except (KafkaError, asyncio.TimeoutError, OSError):
            return False

    async def stop(self) -> None:
        await self.producer.stop()
