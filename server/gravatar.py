"""The Gravatar choice (seed 004): a user who picked Gravatar is redirected there.

The choice is a Redis key per user holding the Gravatar URL of the email the user had when
choosing. Any newly stored image ends the choice (`Services.set_avatar` clears it), and the
avatar endpoints consult it only when the user has no stored image.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

import redis.asyncio as aioredis

GRAVATAR_BASE = "https://gravatar.com/avatar/"


def _key(prefix: str, user_id: str) -> str:
    return f"{prefix}:gravatar:{user_id}"


def url_for(email: str) -> str:
    """Gravatar's address for an email: the SHA-256 of the trimmed, lower-cased address."""
    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
    return GRAVATAR_BASE + digest


def sized(url: str, size: int | None) -> str:
    query = {"d": "mp"}  # Gravatar's neutral silhouette when the address has no picture
    if size is not None:
        query["s"] = str(min(max(size, 1), 2048))  # Gravatar serves 1 to 2048 px
    return f"{url}?{urlencode(query)}"


async def choose(redis: aioredis.Redis, prefix: str, user_id: str, email: str) -> str:
    url = url_for(email)
    await redis.set(_key(prefix, user_id), url)
    return url


async def chosen(redis: aioredis.Redis, prefix: str, user_id: str) -> str | None:
    value = await redis.get(_key(prefix, user_id))
    return value.decode() if value is not None else None


async def clear(redis: aioredis.Redis, prefix: str, user_id: str) -> None:
    await redis.delete(_key(prefix, user_id))
