"""Profile images being downloaded in the background, recorded in Redis so that any server
process answers the client's polling `GET` (profile_image_api's `POST {"url": ...}`)."""

from __future__ import annotations

import secrets
import time
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


@dataclass(frozen=True)
class PendingFetch:
    id: str
    status: str  # "downloading", or "failed" with a reason
    source_url: str
    reason_code: str = ""
    reason_message: str = ""


class PendingFetches:
    """At most one fetch per user: the latest `start` wins, an earlier one settles into nothing."""

    def __init__(self, redis: aioredis.Redis, prefix: str, running_ttl: int):
        # Expires on its own if the process doing the fetch dies: the client is not told
        # "downloading" forever.
        self._redis, self._prefix, self._running_ttl = redis, prefix, running_ttl
        self._settle = redis.register_script(_SETTLE)

    def _key(self, user_id: str) -> str:
        return f"{self._prefix}:profile-image-fetch:{user_id}"

    async def start(self, user_id: str, url: str) -> PendingFetch:
        fetch = PendingFetch(secrets.token_hex(12), "downloading", url)
        key = self._key(user_id)
        state = {"id": fetch.id, "status": fetch.status, "sourceUrl": url, "startedAt": str(time.time())}
        await self._redis.hset(key, mapping=state)  # type: ignore[arg-type]
        await self._redis.expire(key, self._running_ttl)
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
