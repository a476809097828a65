"""The limit of the stack for bench/broadcast.py: a bare pipeline, in its own process, that
consumes the same `broadcast.batch` events from Kafka and sends the same emails and Web
Pushes (encrypted, VAPID-signed) to the same sinks with the hub's own channel classes, but
with no store, no policy, no templates, no delivery log and no live socket.

Environment: KAFKA_BOOTSTRAP_SERVERS, BASELINE_TOPIC, BASELINE_EXPECT (recipients),
SMTP_URL, BENCH_PUSH_URL, BENCH_P256DH / BENCH_AUTH, HUB_PUSH_ALLOWED_HOSTS.
Prints one JSON line: {"recipients": n, "seconds": s, "cpu_s": its CPU seconds meanwhile}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from domain.delivery import Message  # noqa: E402
from channels.email import EmailChannel  # noqa: E402
from channels.push import PushChannel  # noqa: E402
from config.settings import load_settings  # noqa: E402
from hub.adapters.outgoing import OutgoingPolicy  # noqa: E402

CONCURRENCY = 128


async def main() -> None:
    settings = load_settings(dict(os.environ))
    email = EmailChannel(settings.smtp_url, None, 10)
    push = PushChannel(settings.vapid_private_key, "mailto:bench@example.com", 10,
                       policy=OutgoingPolicy.from_settings(settings))
    keys = {"p256dh": os.environ["BENCH_P256DH"], "auth": os.environ["BENCH_AUTH"]}
    push_url, expect = os.environ["BENCH_PUSH_URL"], int(os.environ["BASELINE_EXPECT"])
    consumer = AIOKafkaConsumer(os.environ["BASELINE_TOPIC"], bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                                group_id=f"baseline-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    slots = asyncio.Semaphore(CONCURRENCY)

    async def deliver(user_id: str) -> None:
        i = int(user_id.rsplit("-", 1)[1])
        async with slots:
            await asyncio.gather(
                email.send(Message(uuid.uuid4().hex, user_id, f"bench-{i}@example.com",
                                   {"subject": "Flash sale", "text": "Everything 30% off today"})),
                push.send(Message(uuid.uuid4().hex, user_id, {"endpoint": f"{push_url}/push/{i}", "keys": keys},
                                  {"title": "Flash sale", "body": "Everything 30% off today"})))

    done, started, cpu0 = 0, None, 0.0
    while done < expect:
        batches = await consumer.getmany(timeout_ms=200)
        for messages in batches.values():
            for message in messages:
                if started is None:
                    started, cpu0 = time.time(), time.process_time()
                ids = json.loads(message.value)["data"]["user_ids"]
                await asyncio.gather(*(deliver(user_id) for user_id in ids))
                done += len(ids)
    print(json.dumps({"recipients": done, "seconds": time.time() - started, "cpu_s": time.process_time() - cpu0}),
          flush=True)
    await consumer.stop()
    await email.close()
    await push.close()


if __name__ == "__main__":
    asyncio.run(main())
