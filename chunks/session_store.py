"""Upload sessions in Redis: msgpack records with a TTL, changed only by atomic transactions.

The key names are in keys.py. A transaction here only ever touches the keys of one upload
(which share its hash tag), so it runs on Redis Cluster too. The reaper's expiry index, the
completion sweeper's list and the events stream are one key for every upload and therefore
stay outside those transactions; their writes are ordered so that a crash between two steps
leaves only what the reaper or the sweeper repairs (keys.py lists each case).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from . import session as _session
from .aliases import AliasClaims
from .errors import StoreUnavailable, UploadGone, UploadNotFound
from .keys import Keys
from .outbox import DELETION_EVENTS, UPLOAD_CREATED, EventOf, Outbox, upload_data
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
    except (RedisError, RedisClusterException) as exc:  # the cluster client's "no node answers" is not a RedisError
        raise StoreUnavailable("the session store is unavailable; try again shortly") from exc


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client answers bytes unless decode_responses is set)."""
    return value.decode() if isinstance(value, bytes) else value


def binary(value: bytes | str) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError("session records are binary: the Redis client must not decode responses")
    return value


# KEYS: session[, the upload's staged events]. ARGV: record read, new record, TTL s[, event, its TTL s].
# 1 written; 0 the record changed since it was read (nothing written). One hash tag: Cluster-safe.
_COMPARE_AND_SET = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
if KEYS[2] then
  redis.call('rpush', KEYS[2], ARGV[4])
  redis.call('expire', KEYS[2], ARGV[5])
end
return 1
"""


@dataclass
class Noted:
    """What has been written ahead of one transaction on a session (the outbox's pending mark,
    the completion index), so a retried transaction does not write it again.

    They are written between a record's read and its compare-and-set script (SessionStore.update,
    ChunkRecords.record), when no pooled connection is held. (They were once written inside WATCH
    transactions, which hold their connection until EXEC: every transaction then needed two
    connections, and as many at once as the pool had waited on each other until the pool's
    timeout, every last chunk of a load test answering 503.)"""

    outbox: bool = False
    completable: bool = False

    def missing(self, session: UploadSession, with_event: bool) -> bool:
        return (with_event and not self.outbox) or (session.awaiting_completion and not self.completable)


class SessionStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "avs",
        outbox: Outbox | None = None,
        *,
        wait_replicas: int = 0,
        wait_timeout_seconds: float = 1.0,
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        # Replicas a committed change must reach before it is acknowledged (see `replicated`).
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = max(1, int(wait_timeout_seconds * 1000))
        # Events are staged inside the transactions below (see outbox.py).
        self.outbox = outbox or Outbox()
        self._compare_and_set = redis.register_script(_COMPARE_AND_SET)
        self.aliases = AliasClaims(redis, self.keys)
        # A pipeline runs its commands in order on one connection to one Redis; the cluster
        # client sends each node its share at once, so there ordered steps go one at a time.
        self._ordered_pipelines = not isinstance(redis, RedisCluster)

    def ttl(self, session: UploadSession) -> int:
        return max(1, int(session.expires_at - time.time()) + GRACE_SECONDS)

    async def ping(self) -> bool:
        with redis_errors():
            return bool(await self.redis.ping())

    async def create(self, session: UploadSession) -> UploadSession:
        """Store a new session. With an alias, the first creator wins and everyone gets its session."""
        with redis_errors():
            if self._ordered_pipelines and not self.outbox.enabled:
                named = await self._write_and_claim(session)
            else:
                await self._write(session)
                named = await self.aliases.claim(session, self.ttl(session)) if session.alias else None
            winner = (
                session if named is None else await self.aliases.settle(session, named, self.ttl(session), self.get)
            )
            if winner is not session:
                # Only the creator that wins the name has created an upload: ours is dropped
                # with its staged event before anything relays it (a crash here leaves a record
                # the reaper expires, which then reports both events).
                await self.redis.delete(self.keys.outbox(session.id))
                await self.redis.delete(self.keys.session(session.id))
                await self.redis.zrem(self.keys.expiry, session.id)
                # The winner's record is handed out as this request's: replicated like our own
                # (WAIT covers every write the master had before ours, the winner's among them).
                await self.replicated()
                return winner
            await self._relay(session.id)
            self.outbox.committed(UPLOAD_CREATED, upload_data(session))
        await self.replicated()
        return session

    async def _write(self, session: UploadSession) -> None:
        """Index and store a new session, a step at a time (with its staged event, if any)."""
        # Indexed first: if the record is never written, the reaper still finds the id at
        # expiry and removes whatever bytes the upload had already stored.
        await self.redis.zadd(self.keys.expiry, {session.id: session.expires_at})
        key, blob, ttl = self.keys.session(session.id), _session.encode(session), self.ttl(session)
        if not self.outbox.enabled:
            await self.redis.set(key, blob, ex=ttl)  # one command: no transaction to wrap it in
            return
        await self.outbox.prepare(self.redis, session.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, blob, ex=ttl)
            self.outbox.stage(pipe, UPLOAD_CREATED, upload_data(session))
            await pipe.execute()

    async def _write_and_claim(self, session: UploadSession) -> str | None:
        """`_write` and the alias's claim in one round trip: one pipeline keeps their order (the
        index, then the record, then the alias, so an alias never names a record not yet
        written), and nothing waits for an answer in between. Not a transaction: the keys are
        in three slots. What the alias named instead of this session, or None."""
        ttl = self.ttl(session)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.expiry, {session.id: session.expires_at})
            pipe.set(self.keys.session(session.id), _session.encode(session), ex=ttl)
            if session.alias:
                self.aliases.queue(pipe, session, ttl)
            answers = await pipe.execute(raise_on_error=False)
        for answer in answers[:2]:
            if isinstance(answer, Exception):
                raise answer
        return await self.aliases.answered(answers[2], session, ttl) if session.alias else None

    async def _relay(self, upload_id: str) -> None:
        """Move the upload's staged events to the stream now; if Redis fails here the change
        stands (it is committed) and the reaper relays them later (Outbox.relay_stranded)."""
        try:
            await self.outbox.relay(self.redis, upload_id)
        except (RedisError, RedisClusterException):
            pass

    async def relay_stranded(self) -> int:
        """Relay events staged by changes whose own relay a crash or outage lost (the reaper's pass)."""
        with redis_errors():
            return await self.outbox.relay_stranded(self.redis, time.time())

    async def replicated(self) -> None:
        """With wait_replicas: return only once WAIT confirms that every write so far (the
        caller's change included) reached that many replicas; else StoreUnavailable (503).

        WAIT counts what the replicas acknowledged of *this connection's* writes, and the caller's
        transaction ran on another pooled connection: a write on this one first (the pipeline
        keeps both on one connection) makes WAIT cover everything up to it."""
        if self.wait_replicas <= 0:
            return
        with redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.replicated, "1", px=60_000)
                pipe.wait(self.wait_replicas, self.wait_timeout_ms)
                _, reached = await pipe.execute()
        if int(reached) < self.wait_replicas:
            raise StoreUnavailable(
                f"the change reached {reached} of {self.wait_replicas} Redis replicas in time; try again shortly"
            )

    async def get(self, upload_id: str) -> UploadSession | None:
        with redis_errors():
            blob = await self.redis.get(self.keys.session(upload_id))
        return None if blob is None else _session.decode(binary(blob))

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
            upload_id = await self.redis.get(self.keys.alias(owner, alias))
        if upload_id is None:
            return None
        found = await self.get(text(upload_id))
        if found is None or found.owner != owner or found.alias != alias or found.expired():
            return None
        return found

    async def update(
        self,
        upload_id: str,
        change: Callable[[UploadSession], T],
        event: EventOf | None = None,
        *,
        assume: UploadSession | None = None,
    ) -> tuple[UploadSession, T]:
        """Apply `change` to the stored session atomically (read, then compare-and-set, retried
        when another writer came in between).

        `change` mutates the session it is given and may raise to abort; it can run more than
        once, so it must not have side effects outside the session. `event`, given the changed
        session and the outcome, names the event to record in the same step (or None).

        Two round trips, a GET and one script that writes the record only if it is still the
        one read (and stages the event beside it): what WATCH/MULTI/EXEC gives in three, and
        without holding a pooled connection while the writes that must come first (Noted) go
        out on another.

        `assume`: the record as the caller last saw it (say, the one it just wrote). The first
        attempt then skips the GET: records are encoded deterministically, so its encoding is the
        stored bytes if nobody wrote since, and otherwise the compare-and-set fails and the
        usual read follows. One round trip instead of two for a completer's own record."""
        key = self.keys.session(upload_id)
        noted = Noted()
        with redis_errors():
            while True:
                if assume is not None:
                    blob, assume = _session.encode(assume), None
                else:
                    stored = await self.redis.get(key)
                    if stored is None:
                        raise UploadNotFound("no such upload")
                    blob = binary(stored)
                # A fresh object even when assumed: `change` may mutate what it is given.
                current = _session.decode(blob)
                # A record already awaiting completion was listed by the change that made it so.
                noted.completable = noted.completable or current.awaiting_completion
                expires_at = current.expires_at
                outcome = change(current)
                happened = event(current, outcome) if event is not None else None
                staged = self.outbox.staged(*happened) if happened is not None else None
                await self.note_before_commit(noted, current, staged is not None)
                keys = [key]
                args: list[bytes | str | int] = [blob, _session.encode(current), self.ttl(current)]
                if staged is not None:
                    keys.append(staged[0])
                    args.extend(staged[1:])
                if await self._compare_and_set(keys=keys, args=args):
                    break
            if happened is not None:
                await self._relay(upload_id)
                self.outbox.committed(*happened)
            if current.expires_at != expires_at:
                # After the record: a lost index update leaves an older score, which the reaper
                # corrects when it finds the session not yet expired.
                await self.redis.zadd(self.keys.expiry, {upload_id: current.expires_at})
        await self.replicated()
        return current, outcome

    async def note_before_commit(self, noted: Noted, session: UploadSession, with_event: bool) -> None:
        """Write what must precede a transaction that changes `session` (see Noted)."""
        if with_event and not noted.outbox:
            await self.outbox.prepare(self.redis, session.id)
            noted.outbox = True
        if session.awaiting_completion and not noted.completable:
            await self.index_completable(session)
            noted.completable = True

    async def index_completable(self, session: UploadSession) -> None:
        """List an upload that has all its bytes for the completion sweeper, before its record says so.

        Written before the record (a retried or aborted transaction leaves only an entry the
        sweeper drops), so a crash right after the record cannot leave it unlisted."""
        if session.awaiting_completion:
            await self.redis.zadd(self.keys.completable, {session.id: time.time()}, nx=True)

    async def completable(self, limit: int) -> list[str]:
        """Uploads listed as having all their bytes and no outcome yet, longest waiting first."""
        with redis_errors():
            ids = await self.redis.zrange(self.keys.completable, 0, limit - 1)
        return [text(i) for i in cast("list[bytes | str]", ids)]

    async def list_completable(self, batch: int = 500) -> int:
        """List every stored upload that awaits completion (start-up: records from before the
        list existed, or whose listing a crash lost). How many are listed."""
        listed = 0
        with redis_errors():
            async for raw in self.redis.zscan_iter(self.keys.expiry, count=batch):
                upload_id = text(raw[0])
                found = await self.get(upload_id)
                if found is not None and found.awaiting_completion:
                    await self.index_completable(found)
                    listed += 1
        return listed

    async def forget_completable(self, upload_id: str) -> None:
        with redis_errors():
            await self.redis.zrem(self.keys.completable, upload_id)

    async def delete(self, session: UploadSession, reason: str) -> None:
        """Forget a session, leaving a tombstone that says why."""
        event_type = DELETION_EVENTS.get(reason)
        with redis_errors():
            if event_type is not None:
                await self.outbox.prepare(self.redis, session.id)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.session(session.id))
                pipe.delete(self.keys.chunks(session.id))
                pipe.set(self.keys.tombstone(session.id), f"{session.owner}\0{reason}", ex=TOMBSTONE_SECONDS)
                if event_type is not None:
                    self.outbox.stage(pipe, event_type, upload_data(session))
                await pipe.execute()
            if event_type is not None:
                await self._relay(session.id)
                self.outbox.committed(event_type, upload_data(session))
            # After the record: an index entry without a session is dropped by the reaper. One
            # round trip (not a transaction: two keys, two slots on a Cluster).
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self.keys.expiry, session.id)
                pipe.zrem(self.keys.completable, session.id)
                await pipe.execute()
        if session.alias:
            await self.forget_alias(session)
        await self.replicated()

    async def forget_alias(self, session: UploadSession) -> None:
        """Drop the alias if it still points at this session, so the same name starts afresh."""
        with redis_errors():
            await self.aliases.forget(session)

    async def gone_reason(self, upload_id: str, owner: str) -> str | None:
        with redis_errors():
            value = await self.redis.get(self.keys.tombstone(upload_id))
        if value is None:
            return None
        stored_owner, _, reason = text(value).partition("\0")
        return reason if stored_owner == owner else None

    async def due(self, now: float, limit: int = 100) -> list[str]:
        """Ids whose expiry time has passed, oldest first."""
        with redis_errors():
            ids = await self.redis.zrangebyscore(self.keys.expiry, "-inf", now, start=0, num=limit)
        return [text(i) for i in cast("list[bytes | str]", ids)]

    async def index_expiry(self, session: UploadSession) -> None:
        """Put `session` back in the expiry index at its real expiry time."""
        with redis_errors():
            await self.redis.zadd(self.keys.expiry, {session.id: session.expires_at})

    async def forget_expiry(self, upload_id: str) -> None:
        with redis_errors():
            await self.redis.zrem(self.keys.expiry, upload_id)
