"""An append in two Redis round trips: one script to begin it, one to record it and let go.

The general path (SessionStore.update, UploadLocks.hold) costs about ten round trips per
append: read the session to check its owner, SET NX the lock, DEL the stop flag, read it again
under the lock, WATCH/GET/MULTI/EXEC the new offset, ZADD the expiry index, and the release
script. Each costs 0.1-0.2 ms of client CPU before Redis does anything, which on a small machine
is most of the cost of a 64 KiB chunk (docs/performance.md). Here:

  BEGIN   checks the owner, takes the lock (or raises the holder's stop flag) and returns the
          session record, atomically;
  RECORD  writes the new record only if it is still the one BEGIN returned (compare-and-set,
          what WATCH gives the general path), refreshes its TTL and releases the lock.

Both touch only keys of one upload, which share its hash tag (keys.py): valid on Redis Cluster.
The expiry index (one key for every upload) is not refreshed per append: an index entry that is
older than its session is what the reaper already expects and corrects (Uploads.reap), so a
lease on bytes is never cut short by it. Anything unusual (a busy lock, a foreign or unknown id,
a record changed under us) falls back to the general path, which raises the usual errors.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import AsyncIterator, Callable

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import session as _session
from .errors import StoreUnavailable
from .locks import Lease, UploadLocks, holder_token
from .session import UploadSession
from .session_store import SessionStore, binary

# KEYS: session, lock, stop. ARGV: owner anchor (see _owner_anchor), token, lease ms.
# {0} unknown or foreign; {1, record} locked; {2, record} held by another (its stop flag raised).
# (Redis's cmsgpack cannot read msgpack's bin type, which records hold: hence the anchor.)
_BEGIN = """
local blob = redis.call('get', KEYS[1])
if not blob then return {0} end
local first = string.byte(blob, 1)
local skip = 1
if first == 0xde then skip = 3 elseif first == 0xdf then skip = 5 end
if string.sub(blob, skip + 1, skip + #ARGV[1]) ~= ARGV[1] then return {0} end
if redis.call('set', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('del', KEYS[3])
  return {1, blob}
end
redis.call('set', KEYS[3], '1', 'PX', ARGV[3])
return {2, blob}
"""


@functools.lru_cache(maxsize=1024)  # the same upload asks again with each of its PATCHes
def _owner_anchor(upload_id: str, owner: str) -> bytes:
    """The bytes a record of `owner`'s upload starts with after its map header: session.encode
    writes the fields in UploadSession's order, `id` then `owner`, with a deterministic
    encoding, so a match means this owner exactly. A record laid out otherwise never matches
    and takes the general path (slower, never wrong)."""
    return b"".join(msgpack.packb(part, use_bin_type=True) for part in ("id", upload_id, "owner", owner))


# KEYS: session, lock. ARGV: record read by BEGIN, new record, TTL s, token, release (1/0).
# 1 recorded; 0 the record changed since it was read (nothing written, the lock still held).
_RECORD = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
if ARGV[5] == '1' and redis.call('get', KEYS[2]) == ARGV[4] then redis.call('del', KEYS[2]) end
return 1
"""


class HeldUpload:
    """An upload locked by `HotPath.hold`: its lease and the record as last read or written."""

    def __init__(self, lease: Lease, session: UploadSession | None, blob: bytes | None) -> None:
        self.lease = lease
        self.session = session
        self.blob = blob
        self.released = False


class HotPath:
    def __init__(self, sessions: SessionStore, locks: UploadLocks) -> None:
        self.sessions, self.locks = sessions, locks
        self.keys = sessions.keys
        redis: aioredis.Redis = sessions.redis
        # register_script reloads a script on NOSCRIPT (a Redis restart or failover).
        self._begin = redis.register_script(_BEGIN)
        self._record = redis.register_script(_RECORD)

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str, owner: str, wait_seconds: float) -> AsyncIterator[HeldUpload]:
        """The upload locked for `owner`, with its record read under the lock (None: read it yourself)."""
        token = holder_token()
        lock_key, stop_key = self.keys.lock(upload_id), self.keys.stop(upload_id)
        try:
            answer = await self._begin(
                keys=[self.keys.session(upload_id), lock_key, stop_key],
                args=[_owner_anchor(upload_id, owner), token, self.locks.lease_ms],
            )
        except RedisError as exc:
            raise StoreUnavailable("the session store is unavailable; try again shortly") from exc
        if answer[0] != 1:
            # Unknown, foreign or busy: the general path raises or waits exactly as it always did.
            if answer[0] == 0:
                await self.sessions.load(upload_id, owner)
            async with self.locks.hold(upload_id, wait_seconds) as lease:
                yield HeldUpload(lease, None, None)
            return
        self.locks.observe("wait", 0.0, False)
        blob = binary(answer[1])
        held = HeldUpload(Lease(token), _session.decode(blob), blob)
        async with self.locks.renewing(lock_key, stop_key, held.lease):
            try:
                yield held
            finally:
                if not held.released:
                    await self.locks.release(lock_key, held.lease)

    async def record(
        self, held: HeldUpload, change: Callable[[UploadSession], None], *, release: bool
    ) -> UploadSession | None:
        """Apply `change` to the held record and store it in one round trip (releasing the lock
        with `release`). None when the record changed under us: use SessionStore.update."""
        if held.session is None or held.blob is None:
            return None
        # A shallow copy is enough: `change` assigns fields, it does not mutate their values.
        current = copy.copy(held.session)
        change(current)
        blob = _session.encode(current)
        upload_id = current.id
        try:
            # The last bytes: listed for the completion sweeper before the record says so (a crash
            # in between leaves only an entry the sweeper drops; SessionStore.index_completable).
            await self.sessions.index_completable(current)
            done = await self._record(
                keys=[self.keys.session(upload_id), self.keys.lock(upload_id)],
                args=[held.blob, blob, self.sessions.ttl(current), held.lease.token, "1" if release else "0"],
            )
        except RedisError as exc:
            raise StoreUnavailable("the session store is unavailable; try again shortly") from exc
        if not done:
            held.session = held.blob = None
            return None
        held.session, held.blob = current, blob
        if release:
            held.released = True
        # With redis.wait_replicas, the offset is acknowledged only once replicas have it too.
        await self.sessions.replicated()
        return current
