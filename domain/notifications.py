"""The notification engine: events become notifications, notifications become deliveries.

`record(event)` turns an event into one notification per recipient (domain/notification_rules)
and stores each with one delivery per channel: `queued`, or `suppressed` with the routing
reason. The notification's id derives from the event id, type and recipient, so a
duplicate event finds the notification already stored and records nothing. When
`record` returns, the consumer commits the offset.

`process(id)` moves a notification's due deliveries on, and is what the dispatcher runs
(right after `record`, and later for retries and held messages):
- a delivery not yet cleared goes through the policy again with the user's current
  preferences (they may have changed while it was held): routing, expiry, do not
  disturb, frequency caps (once per notification, across channels);
- a cleared one is sent; a transient failure is retried with backoff up to
  `max_attempts`, a permanent one fails with its reason. A push goes to each of the
  user's targets (Web Push subscriptions, APNs and FCM devices), each with its own
  outcome and retries; a dead subscription or device is forgotten.
Every change is written conditionally on the status it moves from, so a provider's
callback that overtook the send is never undone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from datetime import datetime, timedelta
from typing import Callable, NamedTuple

from jinja2 import TemplateError

from domain.delivery import DeliveryError, Message, PermanentError, Sent, TransientError
from domain.events import Rejected, topic_for
from domain.notification_policy import (CHANNELS, DELIVERED, FAILED, HELD, PENDING, QUEUED, SENT, SUPPRESSED,
                                        counts_against_caps, effective_preferences, retry_delay_s, route, timing)
from domain.notification_rules import ADMINS, STOCK_WATCHERS, USER, Planned, notification_id, plan, recipient_user
from domain.notification_templates import default_parts
from domain.sms import fit_sms
from domain.users import EMAIL_BOUNCE_HOLD, email_bounce, is_valid_email, sms_allowed

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)  # a dispatch not finished by then is taken up again
APPLIED_TOPICS = ("orders", "payments", "points")  # other services' events here are applied, then re-announced
DEFAULT_PUSH_TTL_S = 24 * 3600
# The `push` channel's targets: kind -> the key of its sender in `channels` (Web Push is "push").
PUSH_SENDERS = {"webpush": "push", "apns": "apns", "fcm": "fcm"}


class Notifier:
    def __init__(self, store, users, products, stock_alerts, templates, caps, channels: dict, *,
                 clock: Callable[[], datetime], retry_base_s: float, max_attempts: int,
                 on_recorded: Callable[[str], None] = lambda nid: None,
                 on_delivery: Callable[[str, str, str | None], None] = lambda channel, status, reason: None,
                 jitter: Callable[[], float] = random.random, source: str | None = None, devices=None,
                 on_target: Callable[[str, str, str | None], None] = lambda kind, status, reason: None,
                 sms_countries: tuple[str, ...] = (), sms_max_per_day: int | None = None) -> None:
        self.store = store
        self.users = users
        self.products = products
        self.stock_alerts = stock_alerts
        self.templates = templates
        self.caps = caps
        self.channels = channels
        self.clock = clock
        self.retry_base_s = retry_base_s
        self.max_attempts = max_attempts
        self.on_recorded = on_recorded
        self.on_delivery = on_delivery
        self.jitter = jitter
        self.source = source  # the hub's own CloudEvents source
        self.devices = devices  # native push devices (hub/stores/devices.py), when APNs or FCM is on
        self.on_target = on_target
        self.sms_countries = sms_countries  # calling codes SMS may go to; empty: any
        self.sms_max_per_day = sms_max_per_day  # per user in any 24 hours, whatever the preferences; None: no ceiling
        # What `record` just stored, for the `process` that follows at once: saves two reads.
        self._fresh: dict[str, tuple[dict, dict]] = {}
        # Set by the hub: (user id, category) → the signed one-click unsubscribe URL that
        # marketing emails carry (RFC 8058); and who hears of a broadcast's deliveries moving.
        self.unsubscribe_url: Callable[[str, str], str] | None = None
        self.on_broadcast_moves: Callable[[dict, dict], None] = lambda doc, moves: None

    # Recording -------------------------------------------------------------------------
    async def record(self, event: dict) -> list[str]:
        """Stores the notifications `event` causes; returns their ids. Raises Rejected
        for an event that cannot be notified (e.g. its user does not exist)."""
        if self.source is not None and event["source"] != self.source and topic_for(event["type"]) in APPLIED_TOPICS:
            # Another service's order, payment or points event takes effect through the
            # hub, which announces the change with its own event: that one notifies, so a
            # change notifies once (and an impossible one, dead-lettered, not at all).
            return []
        ids = []
        for planned in plan(event):
            watchers = await self._watchers(event) if planned.rule.recipients == STOCK_WATCHERS else []
            recipients = await self._recipients(planned, event, watchers)
            for user in recipients:
                nid = notification_id(event["id"], planned.rule.type, user["_id"])
                doc = await self._notification(nid, event, planned, user)
                pending = any(d["status"] == QUEUED for d in doc["deliveries"].values())
                if await self.store.insert(doc, due_at=self.clock() + LEASE if pending else None) and pending:
                    self._fresh[nid] = (doc, user)
                    self.on_recorded(nid)
                ids.append(nid)
            if watchers:
                # One alert per request, removed once recorded (a crash before this re-notifies
                # nobody twice: the ids are stable). Alerts of deleted accounts go too.
                await self.stock_alerts.remove(event["data"]["product_id"], watchers)
        return ids

    async def record_batch(self, event: dict, planned: Planned, users: list[dict],
                           extra: dict) -> tuple[list[tuple[dict, dict]], set[str]]:
        """`record` for many recipients of one planned notification (a broadcast's batch),
        with `extra` fields on each, in two bulk writes. Returns (notification, user) for
        each and the ids stored now: the others were stored by an earlier try of the batch.
        The new ones with work wait for `process`, which the caller runs."""
        built = []
        for user in await self._with_devices(users):
            doc = await self._notification(notification_id(event["id"], planned.rule.type, user["_id"]),
                                           event, planned, user)
            doc.update(extra)
            built.append((doc, user))
        pending = {doc["_id"] for doc, _ in built if any(d["status"] == QUEUED for d in doc["deliveries"].values())}
        stored = await self.store.insert_many([doc for doc, _ in built], due_at=self.clock() + LEASE, pending=pending)
        for doc, user in built:
            if doc["_id"] in stored and doc["_id"] in pending:
                self._fresh[doc["_id"]] = (doc, user)
        return built, stored

    def is_fresh(self, nid: str) -> bool:
        return nid in self._fresh

    async def _watchers(self, event: dict) -> list[str]:
        product_id = event["data"].get("product_id")
        return await self.stock_alerts.watchers(product_id) if isinstance(product_id, str) else []

    async def _recipients(self, planned: Planned, event: dict, watchers: list[str]) -> list[dict]:
        kind = planned.rule.recipients
        if kind == USER:
            user_id = recipient_user(event)
            user = await self.users.get(str(user_id)) if user_id else None
            if user is None:
                raise Rejected(f"unknown user {user_id!r}")
            users = [user]
        elif kind == ADMINS:
            users = await self.users.admins()
        else:
            users = [u for u in [await self.users.get(user_id) for user_id in watchers] if u is not None]
        return await self._with_devices(users)

    async def _with_devices(self, users: list[dict]) -> list[dict]:
        """The users, each with their native push devices under `devices` (when APNs or FCM
        is on), read in one query."""
        if users and self.devices is not None and ("apns" in self.channels or "fcm" in self.channels):
            devices = await self.devices.of_users([user["_id"] for user in users])
            for user in users:
                user["devices"] = devices[user["_id"]]
        return users

    async def _notification(self, nid: str, event: dict, planned: Planned, user: dict) -> dict:
        rule, now = planned.rule, self.clock()
        data = event["data"].get("data", {}) if event["type"] == "notification.requested" else event["data"]
        product = None
        if rule.category == "stock" and isinstance(data.get("product_id"), str):
            found = await self.products.get(data["product_id"])
            product = found and {"id": found["_id"], "name": found.get("name"), "slug": found.get("slug")}
        doc = {
            "_id": nid, "user_id": user["_id"], "event_id": event["id"], "event_type": event["type"],
            "type": rule.type, "category": rule.category, "priority": rule.priority,
            "title": planned.title, "body": planned.body, "data": data, "product": product,
            "topic": rule.topic(data), "created_at": now, "read_at": None,
            "expires_at": now + timedelta(seconds=rule.expires_after_s) if rule.expires_after_s else None,
        }
        # The inbox shows the in-app rendering; other channels render when they send.
        inapp = await self._render(doc, "websocket", user)
        doc["title"], doc["body"] = inapp["title"], inapp["body"]
        prefs = effective_preferences(user.get("preferences"))
        decisions = route(prefs, rule.type, rule.category, planned.channels, self._unavailable(user))
        doc["deliveries"] = {
            channel: _delivery(QUEUED if status == PENDING else status, reason, now)
            for channel, (status, reason) in decisions.items()
        }
        for channel, (status, reason) in decisions.items():
            self.on_delivery(channel, QUEUED if status == PENDING else status, reason)
        return doc

    def _unavailable(self, user: dict) -> dict[str, str]:
        """Channels this user cannot be reached on, and why."""
        # `push` is on when any of its senders is (PUSH_SENDERS); every other channel is its own sender.
        reasons = {channel: "channel_off" for channel in CHANNELS
                   if channel != "push" and channel not in self.channels}
        if not any(sender in self.channels for sender in PUSH_SENDERS.values()):
            reasons["push"] = "channel_off"
        if not user.get("email"):
            reasons.setdefault("email", "no_address")
        elif not is_valid_email(user["email"]):  # stored before the address rules tightened
            reasons.setdefault("email", "invalid_address")
        bounce = email_bounce(user)
        if bounce and self.clock() < bounce["at"] + EMAIL_BOUNCE_HOLD:
            reasons.setdefault("email", "address_bounced")
        if not user.get("phone"):
            reasons.setdefault("sms", "no_address")
        elif not sms_allowed(user["phone"], self.sms_countries):  # stored before HUB_SMS_ALLOWED_COUNTRIES said so
            reasons.setdefault("sms", "sms_country_not_allowed")
        if not self._push_targets(user):
            reasons.setdefault("push", "no_address")
        return reasons

    async def _render(self, doc: dict, channel: str, user: dict) -> dict[str, str]:
        context = {
            "data": doc["data"], "product": doc.get("product") or {}, "type": doc["type"],
            "priority": doc["priority"], "title": doc.get("title") or "", "body": doc.get("body") or "",
            "user": {"name": user.get("name") or "", "email": user.get("email") or ""},
        }
        try:
            # A broadcast's content is the same for every recipient unless the template names
            # the user: rendered once per channel and locale, not once per recipient.
            share = (doc["broadcast_id"], context["title"], context["body"]) if doc.get("broadcast_id") else None
            return await self.templates.render(doc["type"], channel, user.get("locale"), context, share)
        except TemplateError:
            # A broken override must not lose the message: the shipped template still works.
            log.warning("template failed at render; using the default",
                        extra={"type": doc["type"], "channel": channel}, exc_info=True)
            return await self.templates.render_parts(default_parts(doc["type"], channel), context)

    # Processing ------------------------------------------------------------------------
    async def process_many(self, nids: list[str], slots: asyncio.Semaphore | None = None) -> None:
        """Moves the due deliveries of these notifications on; the caller holds their jobs.
        Those not in hand are read in one query (their users and devices in one more each),
        the frequency caps of all are counted in one Redis round trip, as many notifications
        send at once as `slots` lets (shared with the caller's other batches; each channel
        also bounds its own connections), and the delivery logs and the jobs are written in
        bulk as the sends finish. A notification that fails by our fault (not a provider's) is
        logged and left to its job's lease."""
        now = self.clock()
        found = {nid: self._fresh.pop(nid) for nid in nids if nid in self._fresh}
        missing = [nid for nid in nids if nid not in found]
        if missing:
            docs = await self.store.many(missing, whole=True)
            users = {u["_id"]: u for u in await self._with_devices(await self.users.many(
                list({doc["user_id"] for doc in docs})))}
            found.update((doc["_id"], (doc, users.get(doc["user_id"]))) for doc in docs)
        # No notification: a crash came between storing its job and storing it.
        jobs: dict[str, tuple[datetime | None, bool]] = {nid: (None, False) for nid in missing if nid not in found}
        screened = {nid: self._screen(doc, user, now) for nid, (doc, user) in found.items()}
        admitted = await self.caps.admit_many([s.caps for s in screened.values() if s.caps is not None], now)
        if slots is None:
            slots = asyncio.Semaphore(max(1, len(found)))

        async def advance(nid: str) -> dict[str, dict]:
            (doc, user), step = found[nid], screened[nid]
            held, release = step.held, admitted.get(nid)
            if release is not None:
                expires_at = doc.get("expires_at")
                held = (HELD, "frequency_cap", min(release, expires_at) if expires_at else release)
            changes = dict(step.changes, **await self._clear(doc, step.fresh, held, now))
            deliveries = doc["deliveries"]
            sendable = [c for c in step.due
                        if c not in changes or changes[c]["status"] == QUEUED and changes[c].get("cleared")]
            if sendable:
                async with slots:
                    sent = await asyncio.gather(*(self._send(doc, user, c, changes.get(c, deliveries[c]), now)
                                                  for c in sendable))
                changes.update(zip(sendable, sent))
            return changes

        finished: dict[str, dict[str, dict]] = {}  # changes made, not written yet
        writing = asyncio.Lock()

        async def settle(nid: str) -> None:
            try:
                finished[nid] = await advance(nid)
            except Exception:  # the store or a bug: the job keeps its lease and runs again after it
                log.exception("notification dispatch failed; will retry", extra={"notification_id": nid})
                return
            # Group commit: what was sent is written at once, together with whatever finished
            # while the write before was under way. A message sent but not yet recorded goes
            # again if the process dies, so that window is kept to one write.
            async with writing:
                if finished:  # else an earlier holder wrote this one with its own
                    written = dict(finished)
                    finished.clear()
                    await asyncio.shield(self._write(found, written, {}))  # a stop must not lose what was sent

        try:
            await asyncio.gather(*(settle(nid) for nid in found))
        finally:
            # Also when cancelled (the process stopping): what was sent is written, else it
            # would be sent again when the job runs after its lease.
            await self._write(found, finished, jobs)

    async def _write(self, found: dict[str, tuple[dict, dict]], finished: dict[str, dict[str, dict]],
                     jobs: dict[str, tuple[datetime | None, bool]]) -> None:
        """The changed delivery logs (compare-and-set) and the notifications' next jobs."""
        updates = {nid: (changes, {c: found[nid][0]["deliveries"][c]["status"] for c in changes})
                   for nid, changes in finished.items()}
        applied = await self.store.update_deliveries(updates)
        jobs = dict(jobs)
        for nid, (changes, expected) in updates.items():
            doc = found[nid][0]
            for channel in applied.get(nid, []):
                self.on_delivery(channel, changes[channel]["status"], changes[channel].get("reason"))
            if applied.get(nid) and doc.get("broadcast_id"):
                self.on_broadcast_moves(doc, {c: (expected[c], changes[c]["status"]) for c in applied[nid]})
            deliveries = doc["deliveries"]
            deliveries.update(changes)
            waits = [d.get("next_at") or d.get("release_at") for d in deliveries.values() if d["status"] in (QUEUED, HELD)]
            jobs[nid] = (min((w for w in waits if w is not None), default=None),
                         any(d["status"] == HELD for d in deliveries.values()))
        await self.store.set_jobs(jobs)

    async def close(self) -> None:
        """Closes the delivery channels it sends through (their connections), at shutdown."""
        for channel in self.channels.values():
            await channel.close()

    async def acknowledge(self, user_id: str, nid: str) -> bool:
        """The user's client received it live (`ack` frame): its websocket delivery moves to
        delivered, once and never back. False when the user has no such notification."""
        doc = await self.store.advance_delivery(nid, "websocket", DELIVERED, [QUEUED, SENT], {"at": self.clock()},
                                                user_id=user_id)
        if doc is not None:
            self.on_delivery("websocket", DELIVERED, None)
            return True
        return await self.store.owned(user_id, nid) is not None

    def _screen(self, doc: dict, user: dict | None, now: datetime) -> "_Screened":
        """The policy for the due deliveries up to the frequency caps: those suppressed
        (routing, expiry, no user), the fresh ones still to clear, what holds them so far
        (DND, a cap of 0), and the caps entry to count when that is all that is left."""
        deliveries = doc["deliveries"]
        due = [channel for channel, d in deliveries.items() if _is_due(d, now)]
        if user is None:
            return _Screened(due, {c: _moved(deliveries[c], SUPPRESSED, "no_user", now) for c in due}, [], None, None)
        if not due:
            return _Screened(due, {}, [], None, None)
        changes = {}
        prefs = effective_preferences(user.get("preferences"))
        for channel, (status, reason) in route(prefs, doc["type"], doc["category"], due, self._unavailable(user)).items():
            if status == SUPPRESSED:
                changes[channel] = _moved(deliveries[channel], SUPPRESSED, reason, now)
        expires_at = doc.get("expires_at")
        if expires_at is not None and now >= expires_at:
            for channel in (c for c in due if c not in changes):
                changes[channel] = _moved(deliveries[channel], SUPPRESSED, "expired", now)
            return _Screened(due, changes, [], None, None)
        fresh = [c for c in due if c not in changes and not deliveries[c].get("cleared")]
        if not fresh:
            return _Screened(due, changes, [], None, None)
        held, caps = timing(prefs, user.get("timezone") or "UTC", doc["priority"], now, expires_at), None
        if held is None and counts_against_caps(doc["priority"]):
            frequency = prefs["frequency"]
            if not frequency["max_per_hour"] or not frequency["max_per_day"]:
                held = (SUPPRESSED, "frequency_cap", None)  # a cap of 0: such messages never fit
            else:
                caps = (doc["user_id"], doc["_id"], frequency["max_per_hour"], frequency["max_per_day"])
        return _Screened(due, changes, fresh, held, caps)

    async def _clear(self, doc: dict, fresh: list[str], held: tuple | None, now: datetime) -> dict[str, dict]:
        """The fresh deliveries' new state: held or suppressed by `held`, else cleared to
        send (marked `cleared`; an SMS only under the hub's daily ceiling)."""
        deliveries, changes = doc["deliveries"], {}
        for channel in fresh:
            if held is None and channel == "sms" and not await self._sms_fits(doc, now):
                changes[channel] = _moved(deliveries[channel], SUPPRESSED, "sms_daily_limit", now)
            elif held is None:
                changes[channel] = dict(_moved(deliveries[channel], QUEUED, None, now), cleared=True)
            elif held[0] == SUPPRESSED:
                changes[channel] = _moved(deliveries[channel], SUPPRESSED, held[1], now)
            else:
                status, reason, until = held
                changes[channel] = dict(_moved(deliveries[channel], status, reason, now), release_at=until)
        return changes

    async def _sms_fits(self, doc: dict, now: datetime) -> bool:
        """Under the hub's SMS ceiling (toll fraud): every priority counts, and preferences
        cannot raise it. Counted when the SMS is cleared to go, so retries count once."""
        if self.sms_max_per_day is None:
            return True
        return self.sms_max_per_day > 0 and await self.caps.admit_daily("sms", doc["user_id"], doc["_id"], now,
                                                                        self.sms_max_per_day)

    async def _send(self, doc: dict, user: dict, channel: str, delivery: dict, now: datetime) -> dict:
        if channel == "push":
            return await self._push(doc, user, delivery, now)
        attempts = delivery.get("attempts", 0) + 1
        try:
            # The live channel shows what the inbox shows, rendered when it was recorded.
            content = ({"title": doc["title"], "body": doc["body"]} if channel == "websocket"
                       else await self._render(doc, channel, user))
            sent = await self.channels[channel].send(self._message(doc, user, channel, content))
        except TransientError as exc:
            if attempts >= self.max_attempts:
                return _moved(delivery, FAILED, exc.reason, now, attempts=attempts)
            delay = retry_delay_s(attempts, self.retry_base_s, self.jitter(), exc.retry_after_s)
            return dict(_moved(delivery, QUEUED, exc.reason, now, attempts=attempts),
                        next_at=now + timedelta(seconds=delay), cleared=True)
        except PermanentError as exc:
            log.warning("delivery failed permanently",
                        extra={"notification_id": doc["_id"], "channel": channel, "reason": exc.reason})
            if channel == "email" and exc.gone:
                await self.users.mark_email_bounced(user["_id"], user["email"], exc.reason, now)
            return _moved(delivery, FAILED, exc.reason, now, attempts=attempts)
        except TemplateError:
            log.exception("template failed", extra={"notification_id": doc["_id"], "channel": channel})
            return _moved(delivery, FAILED, "template_error", now, attempts=attempts)
        if channel == "email" and email_bounce(user):
            await self.users.clear_email_bounce(user["_id"], user["email"])  # the address works again
        return dict(_moved(delivery, DELIVERED if sent.delivered else SENT, None, now, attempts=attempts),
                    provider_id=sent.provider_id)

    def _message(self, doc: dict, user: dict, channel: str, content: dict, address=None,
                 badge: int | None = None) -> Message:
        if address is None:
            address = {"email": user.get("email"), "sms": user.get("phone")}.get(channel, user["_id"])
        if channel == "sms":
            content = {"text": fit_sms(content["text"])}
        ttl = DEFAULT_PUSH_TTL_S
        if doc.get("expires_at") is not None:
            ttl = max(0, int((doc["expires_at"] - self.clock()).total_seconds()))
        headers = {}
        if channel == "email" and doc["category"] == "marketing" and self.unsubscribe_url is not None:
            # RFC 8058 one-click unsubscribe, as the large mailbox providers require of bulk senders.
            headers = {"List-Unsubscribe": f"<{self.unsubscribe_url(doc['user_id'], 'marketing')}>",
                       "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        return Message(notification_id=doc["_id"], user_id=doc["user_id"], address=address, content=content,
                       priority=doc["priority"], ttl_s=ttl, topic=doc.get("topic"), data=doc["data"],
                       type=doc["type"], created_at=doc["created_at"].isoformat(), badge=badge, headers=headers)

    def _push_targets(self, user: dict) -> dict[str, dict]:
        """The user's push targets on the senders this hub has: id -> {kind, address}."""
        targets = {}
        if "push" in self.channels:
            for subscription in user.get("push_subscriptions") or []:
                targets[webpush_id(subscription)] = {"kind": "webpush", "address": subscription}
        for device in user.get("devices") or []:
            if device["platform"] in self.channels:
                targets[device["_id"]] = {"kind": device["platform"], "address": device}
        return targets

    async def _push(self, doc: dict, user: dict, delivery: dict, now: datetime) -> dict:
        """One round of the push delivery. Its targets (the user's subscriptions and devices
        when it was first sent) each keep their own status, attempts and retry time: a round
        sends only to the targets due, never again to one that took it. The delivery stays
        queued while a target waits for a retry; then it is sent if any target took it.
        A target the provider calls dead is forgotten (subscription or device removed)."""
        attempts = delivery.get("attempts", 0) + 1
        try:
            content = await self._render(doc, "push", user)
        except TemplateError:
            log.exception("template failed", extra={"notification_id": doc["_id"], "channel": "push"})
            return _moved(delivery, FAILED, "template_error", now, attempts=attempts)
        available = self._push_targets(user)
        if delivery.get("targets") is None:
            targets = [{"kind": t["kind"], "id": target_id, "status": QUEUED, "reason": None, "attempts": 0}
                       for target_id, t in available.items()]
        else:
            targets = [dict(t) for t in delivery["targets"]]
        # Read in the inbox or acknowledged live meanwhile: the phone need not ring.
        seen = doc.get("read_at") is not None or doc["deliveries"].get("websocket", {}).get("status") == DELIVERED
        due = []
        for target in targets:
            if target["status"] != QUEUED or (target.get("next_at") and target["next_at"] > now):
                continue
            if target["id"] not in available:  # removed by its user since the last round
                target.update(status=FAILED, reason="removed", next_at=None, at=now)
            elif seen:
                target.update(status=SUPPRESSED, reason="seen", next_at=None, at=now)
            else:
                due.append(target)
        badge = None
        if any(t["kind"] != "webpush" for t in due):
            badge = await self.store.unread_count(doc["user_id"])
        results = await asyncio.gather(*(
            self.channels[PUSH_SENDERS[t["kind"]]].send(
                self._message(doc, user, "push", content, address=available[t["id"]]["address"], badge=badge))
            for t in due), return_exceptions=True)
        gone = []
        for target, result in zip(due, results):
            target["attempts"] = target.get("attempts", 0) + 1
            target["at"] = now
            if isinstance(result, Sent):
                target.update(status=SENT, reason=None, next_at=None, provider_id=result.provider_id)
            elif isinstance(result, TransientError) and target["attempts"] < self.max_attempts:
                delay = retry_delay_s(target["attempts"], self.retry_base_s, self.jitter(), result.retry_after_s)
                target.update(status=QUEUED, reason=result.reason, next_at=now + timedelta(seconds=delay))
            elif isinstance(result, DeliveryError):
                target.update(status=FAILED, reason=result.reason, next_at=None)
                if isinstance(result, PermanentError) and result.gone:
                    gone.append(available[target["id"]])
            else:
                raise result  # ours, not the provider's: the job runs again after its lease
            self.on_target(target["kind"], target["status"], target["reason"])
        await self._forget(user, gone)
        if not targets:
            return _moved(delivery, FAILED, "no_address", now, attempts=attempts)
        pending = [t for t in targets if t["status"] == QUEUED]
        sent = [t for t in targets if t["status"] == SENT]
        if pending:
            return dict(_moved(delivery, QUEUED, pending[0]["reason"], now, attempts=attempts), cleared=True,
                        next_at=min(t["next_at"] for t in pending), targets=targets)
        if sent:  # the providers' message ids stay in the targets, for operators
            return dict(_moved(delivery, SENT, None, now, attempts=attempts), targets=targets)
        failed = [t for t in targets if t["status"] == FAILED]
        if failed:
            log.warning("push failed on every target",
                        extra={"notification_id": doc["_id"], "channel": "push", "reason": failed[0]["reason"]})
        last = (failed or targets)[0]
        return dict(_moved(delivery, FAILED if failed else last["status"], last["reason"], now, attempts=attempts),
                    targets=targets)

    async def _forget(self, user: dict, gone: list[dict]) -> None:
        endpoints = [t["address"]["endpoint"] for t in gone if t["kind"] == "webpush"]
        if endpoints:
            await self.users.remove_push_subscriptions(user["_id"], endpoints)
        devices = [t["address"] for t in gone if t["kind"] != "webpush"]
        if devices and self.devices is not None:
            await self.devices.remove_dead(devices)


class _Screened(NamedTuple):
    """`Notifier._screen`'s answer for one notification."""
    due: list[str]
    changes: dict[str, dict]
    fresh: list[str]
    held: tuple | None  # (status, reason, until) when something holds the fresh ones
    caps: tuple | None  # (user id, notification id, max per hour, max per day) to admit


def webpush_id(subscription) -> str:
    """A Web Push target's id in the delivery log: the endpoint URL is a credential, so a hash."""
    endpoint = subscription.get("endpoint") if isinstance(subscription, dict) else None
    return "wp-" + hashlib.sha256(str(endpoint).encode()).hexdigest()[:20]


def _delivery(status: str, reason: str | None, now: datetime) -> dict:
    return {"status": status, "reason": reason, "attempts": 0, "at": now}


def _moved(delivery: dict, status: str, reason: str | None, now: datetime, **extra) -> dict:
    moved = {"status": status, "reason": reason, "attempts": delivery.get("attempts", 0), "at": now}
    moved.update(extra)
    return moved


def _is_due(delivery: dict, now: datetime) -> bool:
    if delivery["status"] == QUEUED:
        return delivery.get("next_at") is None or delivery["next_at"] <= now
    return delivery["status"] == HELD and delivery["release_at"] <= now


def public_notification(doc: dict) -> dict:
    """A notification as its user sees it in the inbox (CONTRACT §2)."""
    return {
        "id": doc["_id"], "type": doc["type"], "category": doc["category"], "title": doc["title"],
        "body": doc["body"], "data": doc["data"], "priority": doc["priority"],
        "created_at": doc["created_at"].isoformat(),
        "read_at": doc["read_at"].isoformat() if doc.get("read_at") else None,
        "deliveries": [public_delivery(channel, d) for channel, d in doc["deliveries"].items()],
    }


def public_delivery(channel: str, delivery: dict) -> dict:
    until = delivery.get("release_at") if delivery["status"] == HELD else delivery.get("next_at")
    return {
        "channel": channel, "status": delivery["status"], "reason": delivery.get("reason"),
        "attempts": delivery.get("attempts", 0), "at": delivery["at"].isoformat(),
        "until": until.isoformat() if until and delivery["status"] in (QUEUED, HELD) else None,
        "provider_id": delivery.get("provider_id"),
        **({"targets": [public_target(t) for t in delivery["targets"]]} if "targets" in delivery else {}),
    }


def public_target(target: dict) -> dict:
    """One device or subscription of a push delivery (CONTRACT v2 §5)."""
    until = target.get("next_at") if target["status"] == QUEUED else None
    return {"kind": target["kind"], "id": target["id"], "status": target["status"], "reason": target.get("reason"),
            "attempts": target.get("attempts", 0), "at": target["at"].isoformat() if target.get("at") else None,
            "until": until.isoformat() if until else None}
