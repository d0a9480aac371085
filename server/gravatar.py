"""The Gravatar choice: a user who picked Gravatar (an empty `PUT /user/setting/avatar`) is
redirected there by the avatar endpoints.

The choice is a Redis key per user holding the Gravatar URL of the email the user had when
choosing. Any newly stored image ends the choice (`server.services.AvatarSetter` clears it),
and the avatar endpoints consult it only when the user has no stored image.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

import redis.asyncio as aioredis

GRAVATAR_BASE = "https://gravatar.com/avatar/"


def url_for(email: str) -> str:
    """Gravatar's address for an email: the SHA-256 of the trimmed, lower-cased address."""
    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
    return GRAVATAR_BASE + digest


def sized(url: str, size: int | None) -> str:
    query = {"d": "mp"}  # Gravatar's neutral silhouette when the address has no picture
    if size is not None:
        query["s"] = str(min(max(size, 1), 2048))  # Gravatar serves 1 to 2048 px
    return f"{url}?{urlencode(query)}"


class GravatarChoices:
    """The users who chose Gravatar, in Redis so every server process sees the same choice."""

    def __init__(self, redis: aioredis.Redis, prefix: str):
        self._redis, self._prefix = redis, prefix

    def _key(self, user_id: str) -> str:
        return f"{self._prefix}:gravatar:{user_id}"

    async def choose(self, user_id: str, email: str) -> str:
        url = url_for(email)
        await self._redis.set(self._key(user_id), url)
        return url

    async def chosen(self, user_id: str) -> str | None:
        value = await self._redis.get(self._key(user_id))
        return value.decode() if isinstance(value, bytes) else value

    async def clear(self, user_id: str) -> bool:
        """End the user's choice; whether there was one."""
        return bool(await self._redis.delete(self._key(user_id)))
