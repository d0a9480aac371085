"""The event stream on a real redis-server: trimming keeps every event some webhook still owes."""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from server.events import Events
from server.metrics import Metrics
from server.settings import EventDeliverySettings, WebhookSettings


async def test_trimming_drops_only_what_every_webhook_has_delivered(redis_url):
    client = aioredis.from_url(redis_url)
    hooks = (
        WebhookSettings(url="http://127.0.0.1:9/a", secret="s"),
        WebhookSettings(url="http://127.0.0.1:9/b", secret="s"),
    )
    events = Events(client, f"t{secrets.token_hex(4)}", hooks, EventDeliverySettings(), Metrics())
    try:
        stream = events.keys.events
        for delivery in events.deliveries:
            await delivery.prepare()
        ids = [await client.xadd(stream, {"type": "upload.created", "body": b"{}"}) for _ in range(5)]
        fast, slow = events.deliveries
        # The first webhook read and acknowledged all five; the second read three, acked the first.
        await client.xreadgroup(fast.group, "c", {stream: ">"}, count=5)
        await client.xack(stream, fast.group, *ids)
        await client.xreadgroup(slow.group, "c", {stream: ">"}, count=3)
        await client.xack(stream, slow.group, ids[0])

        await events.trim()
        left = [entry_id for entry_id, _ in await client.xrange(stream)]
        assert left == ids[1:]  # the second webhook still owes ids[1] (pending) and ids[3:] (unread)

        await client.xack(stream, slow.group, ids[1], ids[2])
        await client.xreadgroup(slow.group, "c", {stream: ">"}, count=5)
        await client.xack(stream, slow.group, ids[3], ids[4])
        await events.trim()
        assert [entry_id for entry_id, _ in await client.xrange(stream)] == ids[4:]  # the last read stays as a marker
    finally:
        await events.aclose()
        await client.aclose()
