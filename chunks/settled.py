"""What happens in Redis once an upload has settled: two round trips, however many it displaces.

A settled upload leaves the completion sweeper's list, and joins its owner's settled set (keys.py
`settled`), of which only the newest `UploadLimits.keep_settled` keep their records: a user who
uploads all day holds a bounded number of them.

  REMEMBER  one script on the owner's settled set (one key): add the upload, cut what falls past
            the newest `keep`, and answer those ids;
  FORGET    one pipeline (a single ZREM when nothing is cut): the upload off the completion list,
            and for each id cut, a tombstone (`superseded`, unless the record already went for
            another reason) then its record and chunk index.

The pipeline is not a transaction: its keys span several hash tags, which a Redis Cluster keeps on
different nodes. Its order still makes every crash harmless: the tombstone goes before the record
(a crash in between leaves a record that is still readable), and the cut ids stay in the expiry
index, where the reaper finds them without a record and removes whatever bytes a crash during the
settle left behind (Uploads.reap), exactly as it does for any upload that is gone.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from .keys import Keys
from .session import UploadSession
from .session_store import GRACE_SECONDS, TOMBSTONE_SECONDS, redis_errors, text

SUPERSEDED = "superseded"

# KEYS: the owner's settled set. ARGV: upload id, settled at, keep, the set's TTL s.
# The ids cut past the newest `keep`, oldest first.
_REMEMBER = """
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
redis.call('expire', KEYS[1], ARGV[4])
local over = redis.call('zcard', KEYS[1]) - tonumber(ARGV[3])
if over <= 0 then return {} end
local cut = redis.call('zrange', KEYS[1], 0, over - 1)
redis.call('zremrangebyrank', KEYS[1], 0, over - 1)
return cut
"""


class SettledRecords:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self._remember = redis.register_script(_REMEMBER)

    async def note(self, session: UploadSession, keep: int) -> list[str]:
        """`session` has settled: unlist it for completion and forget its owner's settled
        uploads past the newest `keep` (0: keep them all). The ids forgotten."""
        keys = self.keys
        with redis_errors():
            cut: list[str] = []
            if keep > 0:
                answer = await self._remember(
                    keys=[keys.settled(session.owner)],
                    args=[session.id, time.time(), keep, TOMBSTONE_SECONDS + GRACE_SECONDS],
                )
                cut = [text(i) for i in answer]
            if not cut:  # the usual case: one command, without a pipeline's own cost
                await self.redis.zrem(keys.completable, session.id)
                return cut
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.completable, session.id, *cut)
                for old in cut:
                    pipe.set(keys.tombstone(old), f"{session.owner}\0{SUPERSEDED}", ex=TOMBSTONE_SECONDS, nx=True)
                    pipe.delete(keys.session(old), keys.chunks(old))
                await pipe.execute()
        return cut
