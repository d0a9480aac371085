"""What happened to uploads, recorded in the same Redis step that made it happen.

The upload core knows nothing of webhooks or metrics. It hands each event to an `Outbox`: when
events are wanted, the event's JSON is staged in the upload's own outbox list inside the very
transaction that changes the session (SessionStore), so a state change and its event are
stored together or not at all, and then relayed to the one events stream, which the server's
delivery loop (server/events.py) reads. The list shares the upload's hash tag and the stream
does not, which keeps every transaction in one Redis Cluster slot (keys.py).
After the transaction commits, `notify` sees the event in this process (the server counts it).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from .keys import Keys
from .session import UploadSession, UploadState

UPLOAD_CREATED = "upload.created"
UPLOAD_FINISHED = "upload.finished"
UPLOAD_FAILED = "upload.failed"
UPLOAD_TERMINATED = "upload.terminated"
UPLOAD_EXPIRED = "upload.expired"

# Why a session was deleted (SessionStore.delete's reason) -> the event that reports it.
# "concatenated" parts are not reported: their final upload is.
DELETION_EVENTS = {"abandoned": UPLOAD_TERMINATED, "expired": UPLOAD_EXPIRED}

Notify = Callable[[str, dict[str, Any]], None]
# Given the changed session and the change's outcome: the event to record, or None.
EventOf = Callable[[UploadSession, Any], tuple[str, dict[str, Any]] | None]


def event_body(event_type: str, data: dict[str, Any]) -> bytes:
    """The exact bytes a webhook receives (and signs over): id, type, created_at, data."""
    now = time.time()
    return json.dumps(
        {
            "id": f"evt_{secrets.token_hex(16)}",
            "type": event_type,
            "created_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        },
        separators=(",", ":"),
    ).encode()


def upload_data(session: UploadSession) -> dict[str, Any]:
    """An upload as events describe it: never its bytes, never a client's credentials."""
    data: dict[str, Any] = {
        "upload_id": session.id,
        "user": session.owner,
        "kind": str(session.kind),
        "length": session.length,
        "received_bytes": session.received_bytes,
        "file_name": session.file_name,
        "content_type": session.content_type,
    }
    if session.state == UploadState.FAILED:
        data["error"] = {"code": session.error_code, "message": session.error_message}
    if session.state == UploadState.DONE and session.result is not None:
        data["result"] = session.result
    return data


def settled_event(session: UploadSession, _outcome: Any = None) -> tuple[str, dict[str, Any]] | None:
    if session.state == UploadState.DONE:
        return UPLOAD_FINISHED, upload_data(session)
    if session.state == UploadState.FAILED:
        return UPLOAD_FAILED, upload_data(session)
    return None


# Staged events outlive any crash the repair (Outbox.relay_stranded) has to mend.
_STAGED_TTL_SECONDS = 7 * 24 * 3600
# An upload whose staged events are still unrelayed this long after staging had its relay lost
# (the process died after the commit): the reaper's pass relays them (SessionStore.relay_stranded).
STRANDED_AFTER_SECONDS = 30.0
_RELAY_MAX = 1000
# KEYS[1] the pending index; ARGV: id, cutoff. Drops the id unless it was staged again since.
_FORGET_IF_OLD = """
local score = redis.call('zscore', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then return redis.call('zrem', KEYS[1], ARGV[1]) end
return 0
"""


class Outbox:
    """`keys`: where events go (None: nobody listens, only `notify` sees them).

    An upload's event is staged in its own list (keys.py `outbox`, the upload's hash tag) inside
    the transaction that changes the session, so both are stored or neither, on one Redis or a
    Cluster alike; `relay` then moves it to the one events stream. Before that transaction the
    upload is noted in the pending index (`prepare`), so an event whose relay a crash lost is
    found and relayed by `relay_stranded`: delivered late, or twice (with the same event id),
    never lost."""

    def __init__(self, keys: Keys | None = None, notify: Notify | None = None) -> None:
        self.keys = keys
        self._notify = notify

    @property
    def enabled(self) -> bool:
        """Whether events are staged in Redis (else only `notify` sees them)."""
        return self.keys is not None

    @property
    def stream_key(self) -> str | None:
        return None if self.keys is None else self.keys.events

    async def prepare(self, redis: aioredis.Redis, upload_id: str) -> None:
        """Note, before the transaction that stages an event of `upload_id`, that it may hold one."""
        if self.keys is not None:
            await redis.zadd(self.keys.outbox_pending, {upload_id: time.time()})

    def stage(self, pipe: Pipeline, event_type: str, data: dict[str, Any]) -> None:
        """Queue the event on `pipe`, inside the caller's MULTI over the upload's keys."""
        staged = self.staged(event_type, data)
        if staged is not None:
            key, entry, ttl = staged
            pipe.rpush(key, entry)
            pipe.expire(key, ttl)

    def staged(self, event_type: str, data: dict[str, Any]) -> tuple[str, str, int] | None:
        """The list an event is staged in, its entry and the list's TTL (None: nobody listens),
        for a caller that writes them in a script of its own (SessionStore.update)."""
        if self.keys is None:
            return None
        entry = json.dumps({"type": event_type, "body": event_body(event_type, data).decode()})
        return self.keys.outbox(data["upload_id"]), entry, _STAGED_TTL_SECONDS

    def committed(self, event_type: str, data: dict[str, Any]) -> None:
        if self._notify is not None:
            self._notify(event_type, data)

    async def relay(self, redis: aioredis.Redis, upload_id: str) -> int:
        """Move `upload_id`'s staged events to the stream, oldest first. Each is appended before
        it is dropped from the list: a crash in between delivers it twice, never not at all."""
        if self.keys is None:
            return 0
        staged, moved = self.keys.outbox(upload_id), 0
        while moved < _RELAY_MAX:
            raw = await redis.lindex(staged, 0)
            if raw is None:
                break
            entry = json.loads(raw)
            await redis.xadd(self.keys.events, {"type": entry["type"], "body": entry["body"].encode()})
            await redis.lpop(staged)
            moved += 1
        return moved

    async def relay_stranded(self, redis: aioredis.Redis, now: float, batch: int = 100, batches: int = 50) -> int:
        """Relay the events of uploads staged longer ago than STRANDED_AFTER_SECONDS and forget
        them in the pending index (unless staged again meanwhile). How many events moved.

        Every staging leaves an entry here (the relay right after it does not remove it), so a
        pass walks them all, a batch at a time, up to `batches` batches."""
        if self.keys is None:
            return 0
        cutoff = now - STRANDED_AFTER_SECONDS
        moved = 0
        for _ in range(batches):
            ids = await redis.zrangebyscore(self.keys.outbox_pending, "-inf", cutoff, start=0, num=batch)
            for raw in cast("list[bytes | str]", ids):
                upload_id = raw.decode() if isinstance(raw, bytes) else raw
                moved += await self.relay(redis, upload_id)
                await redis.eval(_FORGET_IF_OLD, 1, self.keys.outbox_pending, upload_id, cutoff)
            if len(ids) < batch:
                break
        return moved

    async def emit(self, pipe: Pipeline, event_type: str, data: dict[str, Any]) -> None:
        """An event on its own (no session change to share a transaction with): straight to the stream."""
        if self.keys is not None:
            pipe.xadd(self.keys.events, {"type": event_type, "body": event_body(event_type, data)})
        await pipe.execute()
        self.committed(event_type, data)
