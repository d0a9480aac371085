"""Webhooks: the events recorded in the Redis stream (chunks/outbox.py), POSTed at least once.

Each configured endpoint has its own consumer group on the stream, so every server process
shares its deliveries and an endpoint that is down holds back nobody else. An event a process
read but could not deliver stays pending in the group; any process claims it again (XCLAIM)
once it has been idle for its backoff (doubling with each attempt, up to a cap), so a process
that died mid-delivery loses nothing. Past `event_delivery.retry_for_seconds` an event is
parked in the dead-letter stream. Delivery is at least once: receivers de-duplicate by `id`.

A POST carries `Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
keyed with the endpoint's secret (docs/operations.md shows how to verify it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

import chunks
from avatars import AvatarStore, AvatarVersion, ProcessedAvatar, RenditionFile

from .metrics import Metrics
from .settings import EventDeliverySettings, WebhookSettings

log = logging.getLogger(__name__)

AVATAR_CHANGED = "avatar.changed"
AVATAR_DELETED = "avatar.deleted"
_BATCH = 20
_TRIM_EVERY_SECONDS = 10.0
_CONSUMER_IDLE_MS = 3600 * 1000


def signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _group(index: int, hook: WebhookSettings) -> str:
    # Named by the URL too, so pointing an entry at another receiver starts from a fresh group.
    return f"webhook:{index}:{hashlib.sha256(hook.url.encode()).hexdigest()[:12]}"


class Delivery:
    """One endpoint's delivery loop in this process."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: chunks.Keys,
        index: int,
        hook: WebhookSettings,
        settings: EventDeliverySettings,
        metrics: Metrics,
        client: httpx.AsyncClient,
    ) -> None:
        self.redis, self.keys, self.hook, self.settings = redis, keys, hook, settings
        self.metrics, self.client = metrics, client
        self.group = _group(index, hook)
        self.name = hook.name or f"webhook-{index}"
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"

    async def prepare(self) -> None:
        try:
            # From the stream's start: events recorded before this group existed are delivered too.
            await self.redis.xgroup_create(self.keys.events, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        while True:
            try:
                await self.prepare()
                await self._retry_due()
                await self._read_new()
            except (RedisError, OSError):
                log.warning("event delivery to %s paused: Redis did not answer", self.name)
                await asyncio.sleep(self.settings.first_retry_seconds)
            except Exception:
                # A bug here must not end this webhook's deliveries for the life of the process:
                # the event stays pending and is retried once its backoff is over.
                log.exception("event delivery to %s failed; retrying", self.name)
                await asyncio.sleep(self.settings.first_retry_seconds)

    async def _read_new(self) -> None:
        block_ms = int(min(1.0, self.settings.first_retry_seconds) * 1000)
        replies: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.keys.events: ">"}, count=_BATCH, block=block_ms
        )
        for _stream, entries in replies or []:
            for entry_id, fields in entries:
                await self._deliver(entry_id, fields, attempts=1)

    async def _retry_due(self) -> None:
        """Claim and retry pending events (this process's or a dead one's) whose backoff is over."""
        first_ms = int(self.settings.first_retry_seconds * 1000)
        pending = await self.redis.xpending_range(
            self.keys.events, self.group, min="-", max="+", count=_BATCH, idle=first_ms
        )
        for item in pending:
            attempts = int(item["times_delivered"])
            wait_ms = int(self._backoff(attempts) * 1000)
            if int(item["time_since_delivered"]) < wait_ms:
                continue
            claimed: Any = await self.redis.xclaim(
                self.keys.events, self.group, self.consumer, min_idle_time=wait_ms, message_ids=[item["message_id"]]
            )
            for entry_id, fields in claimed:
                if fields is None:  # trimmed away meanwhile: nothing left to deliver
                    await self.redis.xack(self.keys.events, self.group, entry_id)
                    continue
                await self._deliver(entry_id, fields, attempts=attempts + 1)

    def _backoff(self, attempts: int) -> float:
        return float(min(self.settings.max_retry_seconds, self.settings.first_retry_seconds * 2 ** (attempts - 1)))

    async def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes], attempts: int) -> None:
        event_type = fields.get(b"type", b"").decode()
        body = fields.get(b"body", b"")
        if self.hook.types and event_type not in self.hook.types:
            await self.redis.xack(self.keys.events, self.group, entry_id)
            return
        if await self._post(body):
            self.metrics.events_delivered.labels(self.name).inc()
            await self.redis.xack(self.keys.events, self.group, entry_id)
            return
        self.metrics.event_failures.labels(self.name).inc()
        recorded_ms = int(entry_id.decode().partition("-")[0])
        if time.time() - recorded_ms / 1000 >= self.settings.retry_for_seconds:
            await self._park(entry_id, body, attempts)

    async def _post(self, body: bytes) -> bool:
        headers = {
            "Content-Type": "application/json",
            "Webhook-Signature": signature(self.hook.secret, body, int(time.time())),
        }
        try:
            response = await self.client.post(self.hook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.info("webhook %s not delivered: %s", self.name, type(exc).__name__)
            return False
        if 200 <= response.status_code < 300:
            return True
        log.info("webhook %s answered %d", self.name, response.status_code)
        return False

    async def _park(self, entry_id: bytes, body: bytes, attempts: int) -> None:
        # Two commands, not one transaction: the two streams are in different Redis Cluster
        # slots. Parked first, so a crash in between parks the event twice, never loses it.
        await self.redis.xadd(
            self.keys.dead_events,
            {"endpoint": self.name, "body": body, "attempts": str(attempts)},
            maxlen=self.settings.dead_letter_max,
            approximate=True,
        )
        await self.redis.xack(self.keys.events, self.group, entry_id)
        self.metrics.events_dead.labels(self.name).inc()
        log.warning("webhook %s: gave up on an event after %d attempts; parked it", self.name, attempts)


class Events:
    """All endpoints' loops, plus trimming what every group has delivered."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        hooks: tuple[WebhookSettings, ...],
        settings: EventDeliverySettings,
        metrics: Metrics,
    ) -> None:
        self.redis, self.keys = redis, chunks.Keys(prefix)
        self.client = httpx.AsyncClient(timeout=settings.timeout_seconds, follow_redirects=False)
        self.deliveries = [
            Delivery(redis, self.keys, i, h, settings, metrics, self.client) for i, h in enumerate(hooks)
        ]

    async def start(self) -> list[asyncio.Task[None]]:
        for delivery in self.deliveries:
            try:
                await delivery.prepare()
            except RedisError:
                log.warning("could not create the event group of %s yet; its loop will", delivery.name)
        tasks = [asyncio.create_task(d.run(), name=f"webhook {d.name}") for d in self.deliveries]
        return [*tasks, asyncio.create_task(self._trim_forever(), name="events trim")]

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _trim_forever(self) -> None:
        while True:
            await asyncio.sleep(_TRIM_EVERY_SECONDS)
            try:
                await self.trim()
            except (RedisError, OSError):
                log.info("event stream not trimmed this time: Redis did not answer")

    async def trim(self) -> None:
        """Drop the entries every group is done with: older than each group's oldest pending
        entry, or than its last read when nothing is pending."""
        keep_from: list[bytes] = []
        for delivery in self.deliveries:
            summary = await self.redis.xpending(self.keys.events, delivery.group)
            await self._forget_idle_consumers(delivery.group)
            if summary["pending"]:
                keep_from.append(summary["min"])
                continue
            groups = await self.redis.xinfo_groups(self.keys.events)
            last = next((g["last-delivered-id"] for g in groups if g["name"].decode() == delivery.group), b"0-0")
            keep_from.append(last)
        if keep_from:
            oldest = min(keep_from, key=lambda i: tuple(int(p) for p in i.decode().split("-")))
            await self.redis.xtrim(self.keys.events, minid=oldest, approximate=False)

    async def _forget_idle_consumers(self, group: str) -> None:
        """Every process start adds a consumer name to each group; drop those long idle with
        nothing pending (a pending entry is claimed by a live process before it is dropped)."""
        for consumer in await self.redis.xinfo_consumers(self.keys.events, group):
            if not consumer["pending"] and consumer["idle"] > _CONSUMER_IDLE_MS:
                await self.redis.xgroup_delconsumer(self.keys.events, group, consumer["name"])


class AnnouncingAvatarStore:
    """An AvatarStore that records avatar.changed / avatar.deleted right after the swap or removal.

    Not in one transaction with the swap (that is a file-system pointer): a crash between the
    two loses that one event, which docs/operations.md states."""

    def __init__(self, inner: AvatarStore, outbox: chunks.Outbox, redis: aioredis.Redis, base_url: str) -> None:
        self.inner, self.outbox, self.redis, self.base_url = inner, outbox, redis, base_url

    async def swap_in(self, user_id: str, processed: ProcessedAvatar) -> AvatarVersion:
        version = await self.inner.swap_in(user_id, processed)
        await self._announce(AVATAR_CHANGED, {"user": user_id, **version.describe(self.base_url)})
        return version

    async def current(self, user_id: str) -> AvatarVersion | None:
        return await self.inner.current(user_id)

    async def rendition(
        self, user_id: str, size: int | None, accept: str | None, version: str | None = None
    ) -> RenditionFile | None:
        return await self.inner.rendition(user_id, size, accept, version)

    async def remove(self, user_id: str) -> bool:
        removed = await self.inner.remove(user_id)
        if removed:
            await self._announce(AVATAR_DELETED, {"user": user_id})
        return removed

    async def _announce(self, event_type: str, data: dict[str, Any]) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                await self.outbox.emit(pipe, event_type, data)
        except RedisError:
            # The avatar did change; failing the request now would only make the client retry it.
            log.warning("could not record %s for a user: Redis did not answer", event_type)
