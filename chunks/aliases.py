"""A client's own name for an upload (keys.py `alias`): claimed by the first of its creators.

The alias key has no hash tag of its own (it is a hash of owner and name), so every script here
touches that key alone and runs on Redis Cluster too; the session records it names are read on
their own. A creator stores its record first (SessionStore.create), so an alias never names a
record not yet written: a creator that finds it naming a missing record may replace it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from .errors import StoreUnavailable
from .keys import Keys
from .session import UploadSession

# KEYS: an alias. ARGV: an upload id, TTL s, the id it may replace ('' for none). Points the alias
# at the upload unless it names another (not the replaceable) id; answers that id, else nil.
# One round trip where WATCH, GET, MULTI/SET/EXEC took three. (SET NX GET would do the common
# case in one command, but only from Redis 7 on; the embedded redis-server is 6.2.)
_CLAIM = """
local named = redis.call('get', KEYS[1])
if named and named ~= ARGV[3] then return named end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""

# KEYS: an alias. ARGV: an upload id. Deletes the alias only while it names that upload.
_FORGET = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

# Passes over an alias that each found it renamed by another creator since the last look: far
# beyond what any burst of first chunks under one name causes (each pass sees a newer winner).
_PASSES = 32


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class AliasClaims:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.keys = keys
        # register_script reloads the script on NOSCRIPT (after a Redis restart or failover).
        self._claim = redis.register_script(_CLAIM)
        self._forget = redis.register_script(_FORGET)

    def key(self, session: UploadSession) -> str:
        return self.keys.alias(session.owner, session.alias)

    def queue(self, pipe: Any, session: UploadSession, ttl: int) -> None:
        """Queue the claim of `session`'s alias on a pipeline; its answer goes to `answered`.
        EVALSHA by hand: a pipeline given the script object first asks SCRIPT EXISTS."""
        pipe.evalsha(self._claim.sha, 1, self.key(session), session.id, ttl, "")

    async def answered(self, answer: Any, session: UploadSession, ttl: int) -> str | None:
        """What a queued claim answered: the id the alias named instead of `session`, or None."""
        if isinstance(answer, NoScriptError):  # Redis restarted or failed over: load it, once
            return await self.claim(session, ttl)
        if isinstance(answer, Exception):
            raise answer
        return None if answer is None else _text(answer)

    async def claim(self, session: UploadSession, ttl: int, replaceable: str = "") -> str | None:
        """Point the alias at `session` if it names nothing or `replaceable`; else the id it names."""
        named = await self._claim(keys=[self.key(session)], args=[session.id, ttl, replaceable])
        return None if named is None else _text(named)

    async def forget(self, session: UploadSession) -> None:
        """Drop the alias if it still names `session`, in one script on the alias key alone (a
        WATCH, GET, MULTI/DEL/EXEC took three round trips on every completed chunk-API upload)."""
        await self._forget(keys=[self.key(session)], args=[session.id])

    async def settle(
        self,
        session: UploadSession,
        named: str,
        ttl: int,
        get: Callable[[str], Awaitable[UploadSession | None]],
    ) -> UploadSession:
        """The alias named `named` when `session` came to claim it: the session it names if that
        is live, of the same owner under the same name; else `session`, once the alias is
        pointed at it, unless another creator replaced the stale id first (then theirs is
        judged). A claim replayed after a lost connection finds `session` itself: won."""
        for _ in range(_PASSES):
            if named == session.id:
                return session
            found = await get(named)
            # The alias key is a hash of owner and name: only a live session of the same owner
            # under the same name counts, never whatever else it names.
            if (
                found is not None
                and (found.owner, found.alias) == (session.owner, session.alias)
                and not found.expired()
            ):
                return found
            # A missing, expired or foreign record stays so: replace that id, and only that one.
            again = await self.claim(session, ttl, named)
            if again is None:
                return session
            named = again
        raise StoreUnavailable("the upload's name kept changing hands; try again shortly")
