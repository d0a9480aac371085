"""Per-user limits on unfinished uploads: how many at once, and how many bytes they hold.

`Quotas` is what the core asks; `RedisQuotas` counts in Redis so every server process sharing
it enforces the same limits, `NoQuotas` admits everything. RedisQuotas keeps two keys per user
(keys.py), sharing the user's hash tag so its scripts run under Redis Cluster too: a sorted set
of unfinished upload ids -> expires_at (expired members drop out) and a hash of upload id ->
bytes the upload holds (received, or declared).

The counts can only run high after a crash between settling an upload and releasing it; a
user at the limit triggers a check of each counted upload against its session, which is the
truth, so a stale entry never locks anyone out.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from . import session as s
from .errors import QuotaExceeded
from .keys import Keys
from .session_store import SessionStore, redis_errors, text

# KEYS[1] open set, KEYS[2] bytes hash; ARGV: now, max open, id, expires_at, bytes, key ttl.
_ADMIT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
local limit = tonumber(ARGV[2])
if limit > 0 and redis.call('zscore', KEYS[1], ARGV[3]) == false
   and redis.call('zcard', KEYS[1]) >= limit then
  return 0
end
redis.call('zadd', KEYS[1], ARGV[4], ARGV[3])
redis.call('hset', KEYS[2], ARGV[3], ARGV[5])
redis.call('expire', KEYS[1], ARGV[6])
redis.call('expire', KEYS[2], ARGV[6])
return 1
"""
# KEYS[1] open set, KEYS[2] bytes hash; ARGV: id, bytes, max bytes, mode. Mode "set": the upload
# will hold `bytes` in all; mode "add": `bytes` more than it is counted for now (read and written
# inside this one script, so two chunks of one upload racing cannot both count from the same
# old value). Sums only uploads still counted as open; the others are forgotten on the way.
_RESERVE = """
local before = 0
if ARGV[1] ~= '' then before = tonumber(redis.call('hget', KEYS[2], ARGV[1]) or '0') end
local total = tonumber(ARGV[2])
if ARGV[4] == 'add' then total = total + before end
local own = total
local held = redis.call('hgetall', KEYS[2])
for i = 1, #held, 2 do
  if held[i] ~= ARGV[1] then
    if redis.call('zscore', KEYS[1], held[i]) then
      total = total + tonumber(held[i + 1])
    else
      redis.call('hdel', KEYS[2], held[i])
    end
  end
end
-- Holding fewer bytes than before is never refused.
if own > before and tonumber(ARGV[3]) > 0 and total > tonumber(ARGV[3]) then return 0 end
if ARGV[1] ~= '' then redis.call('hset', KEYS[2], ARGV[1], math.max(own, 0)) end
return 1
"""


@dataclass(frozen=True)
class QuotaLimits:
    max_open_uploads: int = 0  # 0 = unlimited
    max_bytes_in_flight: int = 0  # 0 = unlimited
    retry_after_seconds: int = 30
    key_ttl_seconds: int = 2 * 24 * 3600


class Quotas(Protocol):
    """Per-user limits the core checks before it stores bytes."""

    async def admit(
        self, owner: str, upload_id: str, expires_at: float, held_bytes: int = 0, *, count_bytes: bool = True
    ) -> None:
        """Count a new upload of `owner` that starts out holding `held_bytes`, or raise QuotaExceeded.

        With `count_bytes` false the bytes are only checked: the caller counts them itself (`grow`)."""
        ...

    async def reserve(self, owner: str, upload_id: str, held_bytes: int) -> None:
        """Record that a counted upload will hold `held_bytes` in all, or raise QuotaExceeded."""
        ...

    async def grow(self, owner: str, upload_id: str, more: int) -> None:
        """Count `more` bytes (negative: fewer) for a counted upload, atomically; QuotaExceeded past the limit."""
        ...

    @property
    def counts_bytes(self) -> bool:
        """Whether `grow` counts anything (a limit on bytes in flight is set)."""
        ...

    def queue_grow(self, pipe: Any, owner: str, upload_id: str, more: int) -> None:
        """Queue `grow` on a Redis pipeline (not a cluster's), so that another command's round
        trip carries it. Its answer goes to `grown`."""
        ...

    async def grown(self, answer: Any, owner: str, upload_id: str, more: int) -> None:
        """What a queued `grow` answered: returns if the bytes were counted, raises as `grow` does."""
        ...

    async def release(self, owner: str, upload_id: str) -> None:
        """Stop counting an upload (settled, abandoned or expired)."""
        ...


class NoQuotas:
    """No per-user limits."""

    async def admit(
        self, owner: str, upload_id: str, expires_at: float, held_bytes: int = 0, *, count_bytes: bool = True
    ) -> None:
        return None

    async def reserve(self, owner: str, upload_id: str, held_bytes: int) -> None:
        return None

    async def grow(self, owner: str, upload_id: str, more: int) -> None:
        return None

    @property
    def counts_bytes(self) -> bool:
        return False

    def queue_grow(self, pipe: Any, owner: str, upload_id: str, more: int) -> None:
        return None

    async def grown(self, answer: Any, owner: str, upload_id: str, more: int) -> None:
        return None

    async def release(self, owner: str, upload_id: str) -> None:
        return None


class RedisQuotas:
    def __init__(self, redis: aioredis.Redis, sessions: SessionStore, limits: QuotaLimits, prefix: str = "avs") -> None:
        self.redis = redis
        self.sessions = sessions
        self.limits = limits
        self.keys = Keys(prefix)
        # register_script reloads the script on NOSCRIPT (after a Redis restart or failover).
        self._admit = redis.register_script(_ADMIT)
        self._reserve = redis.register_script(_RESERVE)

    @property
    def enabled(self) -> bool:
        return self.limits.max_open_uploads > 0 or self.limits.max_bytes_in_flight > 0

    def _keys(self, owner: str) -> list[str]:
        return [self.keys.quota_open(owner), self.keys.quota_bytes(owner)]

    async def admit(
        self, owner: str, upload_id: str, expires_at: float, held_bytes: int = 0, *, count_bytes: bool = True
    ) -> None:
        """Count a new upload of `owner`, or raise QuotaExceeded if they have too many open."""
        if not self.enabled:
            return
        if held_bytes:
            await self._reserve_bytes(owner, upload_id, held_bytes, counted=False)
        held_bytes = held_bytes if count_bytes else 0
        if await self._try_admit(owner, upload_id, expires_at, held_bytes):
            return
        if await self._forget_settled(owner) and await self._try_admit(owner, upload_id, expires_at, held_bytes):
            return
        raise QuotaExceeded(
            f"you have {self.limits.max_open_uploads} unfinished uploads; finish or abandon one first",
            code="too-many-uploads",
            retry_after=self.limits.retry_after_seconds,
        )

    async def _try_admit(self, owner: str, upload_id: str, expires_at: float, held_bytes: int) -> bool:
        args: list[str | int | float] = [
            time.time(),
            self.limits.max_open_uploads,
            upload_id,
            expires_at,
            held_bytes,
            self.limits.key_ttl_seconds,
        ]
        with redis_errors():
            return bool(await self._admit(keys=self._keys(owner), args=args))

    async def reserve(self, owner: str, upload_id: str, held_bytes: int) -> None:
        """Record that `upload_id` will hold `held_bytes`, or raise QuotaExceeded past the limit."""
        await self._reserve_bytes(owner, upload_id, held_bytes, counted=True)

    async def grow(self, owner: str, upload_id: str, more: int) -> None:
        await self._reserve_bytes(owner, upload_id, more, counted=True, mode="add")

    @property
    def counts_bytes(self) -> bool:
        return self.limits.max_bytes_in_flight > 0

    def queue_grow(self, pipe: Any, owner: str, upload_id: str, more: int) -> None:
        # EVALSHA by hand: a pipeline given the script object first asks SCRIPT EXISTS.
        pipe.evalsha(self._reserve.sha, 2, *self._keys(owner), upload_id, more, self.limits.max_bytes_in_flight, "add")

    async def grown(self, answer: Any, owner: str, upload_id: str, more: int) -> None:
        if isinstance(answer, NoScriptError):  # Redis restarted or failed over: load it, once
            return await self.grow(owner, upload_id, more)
        if isinstance(answer, Exception):
            with redis_errors():
                raise answer
        if not answer:
            raise self._too_many_bytes()

    async def _reserve_bytes(
        self, owner: str, upload_id: str, held_bytes: int, *, counted: bool, mode: str = "set"
    ) -> None:
        if self.limits.max_bytes_in_flight <= 0:
            return
        # A new upload is not counted yet: check it against the others without recording it.
        args: list[str | int] = [upload_id if counted else "", held_bytes, self.limits.max_bytes_in_flight, mode]
        with redis_errors():
            allowed = await self._reserve(keys=self._keys(owner), args=args)
        if not allowed:
            raise self._too_many_bytes()

    def _too_many_bytes(self) -> QuotaExceeded:
        return QuotaExceeded(
            f"your unfinished uploads would hold more than {self.limits.max_bytes_in_flight} bytes",
            code="too-many-bytes-in-flight",
            retry_after=self.limits.retry_after_seconds,
        )

    async def release(self, owner: str, upload_id: str) -> None:
        if not self.enabled:
            return
        open_key, bytes_key = self._keys(owner)
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(open_key, upload_id)
                pipe.hdel(bytes_key, upload_id)
                await pipe.execute()

    async def _forget_settled(self, owner: str) -> bool:
        """Drop counted uploads whose session is gone or settled. True if any was dropped."""
        open_key, _ = self._keys(owner)
        with redis_errors():
            members = [text(m) for m in cast("list[bytes | str]", await self.redis.zrange(open_key, 0, -1))]
        dropped = False
        for upload_id in members:
            session = await self.sessions.get(upload_id)
            if session is None or session.state in (s.UploadState.DONE, s.UploadState.FAILED) or session.expired():
                await self.release(owner, upload_id)
                dropped = True
        return dropped


async def counted_as_it_arrives(
    quotas: Quotas, session: s.UploadSession, offset: int, body: AsyncIterator[bytes], *, step: int, cap: int
) -> AsyncIterator[bytes]:
    """`body` of an upload with no declared length, its bytes counted before they are stored.

    Counted ahead `step` bytes at a time (one Redis call per step, not per block), else exactly
    what the next block needs; past the user's limit the body ends with QuotaExceeded, which
    the appender re-raises once the bytes stored before it are recorded. Blocks past `cap` are
    not counted: the store refuses them as too large."""
    reserved = position = offset
    async for block in body:
        needed = position + len(block)
        if reserved < needed <= cap:
            ahead = min(max(needed, reserved + step), cap)
            try:
                await quotas.reserve(session.owner, session.id, ahead)
            except QuotaExceeded:
                if ahead == needed:
                    raise
                await quotas.reserve(session.owner, session.id, needed)
                ahead = needed
            reserved = ahead
        position = needed
        yield block
