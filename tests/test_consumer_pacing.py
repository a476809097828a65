"""An idle consumer fetches with the long idle wait, so an idle hub barely polls the broker;
a message brings it back to the short wait, and nothing is missed on the way."""

from __future__ import annotations

import asyncio
import json

import pytest

from config.settings import load_settings
from domain.events import cloud_event
from hub.workers import consumer as consumer_module
from hub.workers.consumer import EventConsumer
from hub.adapters.kafka import Kafka


async def until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def fetches_during(consumer: EventConsumer, seconds: float) -> int:
    """Fetch requests the consumer sends to the broker in `seconds`."""
    client = consumer.consumer._client
    sent, real_send = [], client.send

    async def send(node_id, request, *args, **kwargs):
        if type(request).__name__.startswith("FetchRequest"):
            sent.append(request)
        return await real_send(node_id, request, *args, **kwargs)

    client.send = send
    try:
        await asyncio.sleep(seconds)
    finally:
        client.send = real_send
    return len(sent)


@pytest.mark.timeout(60)
async def test_an_idle_consumer_polls_slowly_and_a_message_brings_it_back(hub_env, monkeypatch):
    monkeypatch.setattr(consumer_module, "IDLE_AFTER_S", 0.5)
    settings = load_settings({**hub_env, "HUB_KAFKA_IDLE_FETCH_MAX_WAIT_MS": "400"})
    kafka = Kafka(settings, hub_env["KAFKA_BOOTSTRAP_SERVERS"])
    await kafka.start()
    handled = []

    async def handler(event: dict) -> None:
        handled.append((event["id"], consumer.consumer._fetcher._fetch_max_wait_ms))

    consumer = EventConsumer(kafka, group="pacing", topics=["orders"], handler=handler, source=settings.event_source)
    await consumer.start()
    try:
        await until(lambda: consumer.consumer.assignment(), what="the group to assign partitions")
        await until(lambda: consumer.consumer._fetcher._fetch_max_wait_ms == 400, what="the idle wait")
        # 20 ms fetches would be ~50 a second; at the idle wait a handful.
        assert await fetches_during(consumer, 2.0) <= 10

        event = cloud_event("order.shipped", "/elsewhere", {"order_id": "o1"})
        await kafka.producer.send_and_wait(kafka.topic("orders"), json.dumps(event).encode(), key=b"o1")
        await until(lambda: handled, what="the event to be handled")
        assert handled == [(event["id"], 20)]  # handled, and the consumer is back to the short wait
        await until(lambda: consumer.consumer._fetcher._fetch_max_wait_ms == 400, what="the idle wait again")
    finally:
        await consumer.stop()
        await kafka.stop()
