"""The event stream on a real redis-server: trimming keeps every event some webhook still owes."""

from __future__ import annotations

import json
import secrets
import time

import redis.asyncio as aioredis

import chunks
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


async def test_an_event_whose_relay_a_crash_lost_is_relayed_by_the_reaper_pass(redis_url):
    """A state change and its event are stored together (the upload's outbox list); a process
    that dies before relaying it leaves it there, and the reaper's pass delivers it later."""
    client = aioredis.Redis.from_url(redis_url)
    keys = chunks.Keys(f"t{secrets.token_hex(4)}")
    outbox = chunks.Outbox(keys)
    upload_id = secrets.token_hex(8)
    try:
        # What SessionStore does up to the crash: note it, stage it in the change's transaction.
        await outbox.prepare(client, upload_id)
        async with client.pipeline(transaction=True) as pipe:
            outbox.stage(pipe, "upload.created", {"upload_id": upload_id})
            await pipe.execute()
        assert await client.xlen(keys.events) == 0
        assert await outbox.relay_stranded(client, time.time()) == 0  # too fresh: its own relay may still run
        assert await outbox.relay_stranded(client, time.time() + 60) == 1
        (entry,) = await client.xrange(keys.events)
        event = json.loads(entry[1][b"body"])
        assert event["type"] == "upload.created" and event["data"]["upload_id"] == upload_id
        assert await client.zcard(keys.outbox_pending) == 0
        assert await client.exists(keys.outbox(upload_id)) == 0
    finally:
        await client.aclose()
