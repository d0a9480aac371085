"""Upload sessions in Redis: msgpack records with a TTL, changed only by atomic transactions.

Keys (all under one prefix; per-upload keys share the hash tag `{ID}` for Redis Cluster):
    <p>:upload:{ID}          the session record (msgpack), TTL until it expires
    <p>:gone:{ID}            a tombstone, so an expired or abandoned upload answers "gone", not "unknown"
    <p>:alias:<hash>         a client's own key for an upload (user + file name, or its upload_id) -> ID
    <p>:expiry               sorted set ID -> expires_at, walked by the reaper
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from . import session as _session
from .errors import StoreUnavailable, UploadGone, UploadNotFound
from .session import UploadSession

T = TypeVar("T")

# Tombstones outlive the session long enough for a returning client to learn what happened.
TOMBSTONE_SECONDS = 24 * 3600
# A session record outlives its expires_at a little, so the reaper (not Redis) removes its bytes.
GRACE_SECONDS = 3600


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Redis failures become StoreUnavailable: the core's callers know nothing of Redis."""
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable("the session store is unavailable; try again shortly") from exc


class SessionStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "avs"):
        self.redis = redis
        self.prefix = prefix

    def key(self, upload_id: str) -> str:
        return f"{self.prefix}:upload:{{{upload_id}}}"

    def _gone_key(self, upload_id: str) -> str:
        return f"{self.prefix}:gone:{{{upload_id}}}"

    def _alias_key(self, owner: str, alias: str) -> str:
        digest = hashlib.sha256(f"{owner}\0{alias}".encode()).hexdigest()
        return f"{self.prefix}:alias:{digest}"

    @property
    def _expiry_key(self) -> str:
        return f"{self.prefix}:expiry"

    def _ttl(self, session: UploadSession) -> int:
        return max(1, int(session.expires_at - time.time()) + GRACE_SECONDS)

    async def ping(self) -> bool:
        with redis_errors():
            return bool(await self.redis.ping())

    async def create(self, session: UploadSession) -> UploadSession:
        """Store a new session. With an alias, the first creator wins and everyone gets its session."""
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.key(session.id), _session.encode(session), ex=self._ttl(session))
                pipe.zadd(self._expiry_key, {session.id: session.expires_at})
                await pipe.execute()
            if not session.alias:
                return session
            winner = await self._claim_alias(session)
            if winner is not session:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(self.key(session.id))
                    pipe.zrem(self._expiry_key, session.id)
                    await pipe.execute()
            return winner

    async def _claim_alias(self, session: UploadSession) -> UploadSession:
        """Point the alias at `session` unless it names a live session already; return the one it names.

        Our own record is stored first, so an alias never points at a session not yet written."""
        alias_key = self._alias_key(session.owner, session.alias)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(alias_key)
                    existing = await pipe.get(alias_key)
                    if existing is not None:
                        found = await self.get(existing.decode())
                        if found is not None and not found.expired():
                            await pipe.reset()
                            return found
                    pipe.multi()
                    pipe.set(alias_key, session.id, ex=self._ttl(session))
                    await pipe.execute()
                    return session
                except WatchError:
                    continue

    async def get(self, upload_id: str) -> UploadSession | None:
        with redis_errors():
            blob = await self.redis.get(self.key(upload_id))
        return None if blob is None else _session.decode(blob)

    async def load(self, upload_id: str, owner: str) -> UploadSession:
        """The session, if `owner` owns it. A foreign id is indistinguishable from an unknown one."""
        found = await self.get(upload_id)
        if found is None or found.owner != owner:
            if found is None and await self.gone_reason(upload_id, owner):
                raise UploadGone("this upload expired or was abandoned; start a new one")
            raise UploadNotFound("no such upload")
        if found.expired():
            raise UploadGone("this upload expired; start a new one")
        return found

    async def by_alias(self, owner: str, alias: str) -> UploadSession | None:
        with redis_errors():
            upload_id = await self.redis.get(self._alias_key(owner, alias))
        if upload_id is None:
            return None
        found = await self.get(upload_id.decode())
        if found is None or found.owner != owner or found.expired():
            return None
        return found

    async def update(self, upload_id: str, change: Callable[[UploadSession], T]) -> tuple[UploadSession, T]:
        """Apply `change` to the stored session atomically (WATCH/MULTI, retried on contention).

        `change` mutates the session it is given and may raise to abort; it can run more than
        once, so it must not have side effects outside the session."""
        key = self.key(upload_id)
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        blob = await pipe.get(key)
                        if blob is None:
                            await pipe.reset()
                            raise UploadNotFound("no such upload")
                        current = _session.decode(blob)
                        outcome = change(current)
                        pipe.multi()
                        pipe.set(key, _session.encode(current), ex=self._ttl(current))
                        pipe.zadd(self._expiry_key, {upload_id: current.expires_at})
                        await pipe.execute()
                        return current, outcome
                    except WatchError:
                        continue

    async def delete(self, session: UploadSession, reason: str) -> None:
        """Forget a session, leaving a tombstone that says why."""
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key(session.id))
                pipe.zrem(self._expiry_key, session.id)
                pipe.set(self._gone_key(session.id), f"{session.owner}\0{reason}", ex=TOMBSTONE_SECONDS)
                await pipe.execute()
            if session.alias:
                await self.forget_alias(session)

    async def forget_alias(self, session: UploadSession) -> None:
        """Drop the alias if it still points at this session, so the same name starts afresh."""
        alias_key = self._alias_key(session.owner, session.alias)
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(alias_key)
                    if await pipe.get(alias_key) == session.id.encode():
                        pipe.multi()
                        pipe.delete(alias_key)
                        await pipe.execute()
                except WatchError:
                    pass

    async def gone_reason(self, upload_id: str, owner: str) -> str | None:
        with redis_errors():
            value = await self.redis.get(self._gone_key(upload_id))
        if value is None:
            return None
        stored_owner, _, reason = value.decode().partition("\0")
        return reason if stored_owner == owner else None

    async def due(self, now: float, limit: int = 100) -> list[str]:
        """Ids whose expiry time has passed, oldest first."""
        with redis_errors():
            ids = await self.redis.zrangebyscore(self._expiry_key, "-inf", now, start=0, num=limit)
        return [i.decode() for i in ids]

    async def forget_expiry(self, upload_id: str) -> None:
        with redis_errors():
            await self.redis.zrem(self._expiry_key, upload_id)
