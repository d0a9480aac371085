"""Profile images being downloaded in the background, recorded in Redis so that any server
process answers the client's polling `GET` (profile_image_api's `POST {"url": ...}`)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis

# A failed fetch stays visible for a day, so a client that polls late still learns why.
_FAILED_TTL = 24 * 3600

# Settle a fetch only if it is still the user's latest: a newer POST or a DELETE supersedes it.
# KEYS[1] the user's record; ARGV: fetch id, failure code ('' = success), message, failed TTL.
_SETTLE = """
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'reasonCode', ARGV[2], 'reasonMessage', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


# KEYS[1] the user's lock; ARGV[1] the holder's token. Only the holder releases it.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Held only around a swap or a removal (a few file operations); it expires on its own if its
# holder dies, and waiting for it is bounded by this too.
_LOCK_MS = 15_000


class FetchesBusy(Exception):
    """This process already runs as many URL downloads as it may (503 with Retry-After)."""

    def __init__(self, message: str, *, code: str = "too-many-fetches", retry_after: int = 2) -> None:
        super().__init__(message)
        self.message, self.code, self.retry_after = message, code, retry_after


@dataclass(frozen=True)
class PendingFetch:
    id: str
    status: str  # "downloading", or "failed" with a reason
    source_url: str
    reason_code: str = ""
    reason_message: str = ""
    started_at: float = 0.0


class PendingFetches:
    """At most one fetch per user: the latest `start` wins, an earlier one settles into nothing."""

    def __init__(self, redis: aioredis.Redis, prefix: str, running_ttl: int, max_running: int = 0):
        # Expires on its own if the process doing the fetch dies: the client is not told
        # "downloading" forever.
        self._redis, self._prefix, self._running_ttl = redis, prefix, running_ttl
        self._settle = redis.register_script(_SETTLE)
        self._unlock = redis.register_script(_UNLOCK)
        # This process's downloads, by user: at most one each, at most max_running in all.
        self._running: dict[str, asyncio.Task[None]] = {}
        self._max_running = max_running

    def admit(self, user_id: str) -> None:
        """Make room for a new download of `user_id`: the user's own running one is cancelled
        (only the latest can ever become the image), and past the process-wide cap FetchesBusy."""
        previous = self._running.pop(user_id, None)
        if previous is not None:
            previous.cancel()
        if 0 < self._max_running <= len(self._running):
            raise FetchesBusy(f"the server is already downloading {self._max_running} images; try again shortly")

    def track(self, user_id: str, task: asyncio.Task[None]) -> None:
        self._running[user_id] = task
        task.add_done_callback(
            lambda done: self._running.pop(user_id, None) if self._running.get(user_id) is done else None
        )

    def cancel(self, user_id: str) -> None:
        """Stop the user's download in this process, if one runs (a DELETE or a newer upload)."""
        task = self._running.pop(user_id, None)
        if task is not None:
            task.cancel()

    @asynccontextmanager
    async def locked(self, user_id: str) -> AsyncIterator[None]:
        """The user's profile-image lock, across processes: a fetch's swap, a DELETE and the
        removal of a fetch happen one at a time, each seeing what the one before did."""
        key, token = f"{self._key(user_id)}:lock", secrets.token_hex(12)
        deadline = time.monotonic() + 2 * _LOCK_MS / 1000
        # Bounded: a holder that died releases by expiry within _LOCK_MS.
        while not await self._redis.set(key, token, nx=True, px=_LOCK_MS):
            if time.monotonic() > deadline:
                raise TimeoutError("the profile image lock was not released")
            await asyncio.sleep(0.02)
        try:
            yield
        finally:
            await asyncio.shield(self._unlock(keys=[key], args=[token]))

    def _key(self, user_id: str) -> str:
        return f"{self._prefix}:profile-image-fetch:{user_id}"

    async def start(self, user_id: str, url: str) -> PendingFetch:
        fetch = PendingFetch(secrets.token_hex(12), "downloading", url, started_at=time.time())
        key = self._key(user_id)
        state = {"id": fetch.id, "status": fetch.status, "sourceUrl": url, "startedAt": repr(fetch.started_at)}
        # One transaction: a cancelled predecessor settling meanwhile cannot leave its reason
        # on the new record, nor the record exist without its expiry.
        async with self._redis.pipeline(transaction=True) as tx:
            tx.delete(key)
            tx.hset(key, mapping=state)  # type: ignore[arg-type]
            tx.expire(key, self._running_ttl)
            await tx.execute()
        return fetch

    async def get(self, user_id: str) -> PendingFetch | None:
        state = await self._redis.hgetall(self._key(user_id))
        if not state:
            return None
        text = {_text(key): _text(value) for key, value in state.items()}
        return PendingFetch(
            text["id"],
            text["status"],
            text.get("sourceUrl", ""),
            text.get("reasonCode", ""),
            text.get("reasonMessage", ""),
            float(text.get("startedAt", "0") or 0),
        )

    async def is_latest(self, user_id: str, fetch_id: str) -> bool:
        return await self._redis.hget(self._key(user_id), "id") == fetch_id.encode()

    async def settle(self, user_id: str, fetch_id: str, failure: tuple[str, str] | None) -> None:
        """Record how the fetch ended: forgotten on success, `failed` with (code, message) otherwise."""
        code, message = failure or ("", "")
        await self._settle(keys=[self._key(user_id)], args=[fetch_id, code, message, _FAILED_TTL])

    async def forget(self, user_id: str) -> bool:
        """Drop the user's fetch (superseded or deleted); whether there was one."""
        return bool(await self._redis.delete(self._key(user_id)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
