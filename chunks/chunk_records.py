"""Which chunks of a chunked upload arrived: a Redis hash per upload, beside its session record.

The hash (keys.py `chunks`) maps a chunk index to "size:digest", or "size:digest:place" where the
store said where it put the part (ChunkStore.put_part). It shares the upload's hash tag,
so a chunk is read and recorded by scripts over both keys, valid on Redis Cluster: `read` returns
the session record and the chunk's entry in one round trip; `record` writes the new field and
the new session record (whose counts, `chunk_count` and `chunk_bytes`, stay a fixed size) only if
the record is still the one read, a compare-and-set like SessionStore.update's, and answers the
recorded indices in the same round trip. Recording the 10,000th chunk therefore writes as many
bytes as recording the first, and a chunk costs two round trips in the steady state instead of
the eight a WATCH transaction with separate reads took (docs/performance.md).

A record written before the hash existed lists its chunks in `received_chunks`: it is read as
if those were in the hash, and the next chunk moves them there in the same script.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from . import session as _session
from .errors import ChunkConflict, UploadNotFound
from .session import UploadSession
from .session_store import Noted, SessionStore, binary, redis_errors, text

# KEYS: session, chunks. ARGV: index. {record or false, entry or false}.
_READ = """
return {redis.call('get', KEYS[1]), redis.call('hget', KEYS[2], ARGV[1])}
"""

# KEYS: session, chunks. ARGV: record read, new record, TTL s, index, entry, then the pairs of
# index and entry a legacy record listed. {1, recorded indices}; {0} when the record changed
# since it was read or the index was recorded meanwhile (nothing written: read again).
_RECORD = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end
if redis.call('hexists', KEYS[2], ARGV[4]) == 1 then return {0} end
for i = 6, #ARGV, 2 do redis.call('hset', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('hset', KEYS[2], ARGV[4], ARGV[5])
redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('expire', KEYS[2], ARGV[3])
return {1, redis.call('hkeys', KEYS[2])}
"""

Entry = tuple[int, str, str]  # size, digest (numbered_chunks.part_digest), place ("" when the store needs none)


def _entry(raw: bytes | str) -> Entry:
    size, _, rest = text(raw).partition(":")
    digest, _, place = rest.partition(":")
    return int(size), digest, place


def _field(size: int, digest: str, place: str = "") -> str:
    return f"{size}:{digest}:{place}" if place else f"{size}:{digest}"


def _read_answer(answer: list[Any], index: int) -> ChunkRead | None:
    blob, raw = answer
    if not blob:
        return None
    session = _session.decode(binary(blob))
    return ChunkRead(blob, session, _entry(raw) if raw else _legacy(session, index))


def _legacy(session: UploadSession, index: int) -> Entry | None:
    found = session.received_chunks.get(index)
    return None if found is None else (int(found[0]), str(found[1]), "")


def _counted(current: UploadSession, size: int) -> dict[str, str]:
    """Count one more chunk of `size` on `current`; the chunks its record listed, to move into the hash."""
    legacy = {str(i): _field(int(e[0]), str(e[1])) for i, e in current.received_chunks.items()}
    current.received_chunks = {}
    current.chunk_count += 1
    current.chunk_bytes += size
    return legacy


@dataclass
class ChunkRead:
    """A session record and one chunk's entry, read together (`ChunkRecords.read`): the record
    as stored (`blob`, what `record` compares against), decoded, and the entry or None."""

    blob: bytes
    session: UploadSession
    known: Entry | None
    # Bytes of this chunk already counted in the owner's quota by the read's round trip (`read_with`).
    counted: int = 0


@dataclass(frozen=True)
class Recorded:
    """What `ChunkRecords.record` did: the session as it now stands, whether the chunk was a
    duplicate, the recorded indices in order (None for a duplicate: not read), and where the
    recorded part is (the store's place: for a duplicate, the first copy's)."""

    session: UploadSession
    duplicate: bool
    received: list[int] | None
    place: str = ""


def _indices(raw: list[bytes | str]) -> list[int]:
    return sorted(int(text(k)) for k in raw)


class ChunkRecords:
    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions
        self.redis = sessions.redis
        self.keys = sessions.keys
        # register_script reloads a script on NOSCRIPT (after a Redis restart or failover).
        self._read = self.redis.register_script(_READ)
        self._record = self.redis.register_script(_RECORD)
        # redis-py runs no scripts in a cluster's pipeline (it refuses EVALSHA there).
        self.one_pipeline = not isinstance(self.redis, RedisCluster)

    async def read(self, upload_id: str, index: int) -> ChunkRead | None:
        """The session record and chunk `index`'s entry, atomically, in one round trip; None
        when there is no such record."""
        with redis_errors():
            answer = await self._read(keys=[self.keys.session(upload_id), self.keys.chunks(upload_id)], args=[index])
        return _read_answer(answer, index)

    async def read_with(self, upload_id: str, index: int, queue: Callable[[Any], None]) -> tuple[ChunkRead | None, Any]:
        """`read`, with the one command `queue(pipe)` puts on the same pipeline riding along:
        the read, and that command's answer (an exception as it came, unraised). One round
        trip for both; not a transaction (the keys may lie in other slots). Only where
        `one_pipeline` is true."""
        with redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                # EVALSHA by hand: a pipeline given the script object first asks SCRIPT EXISTS.
                pipe.evalsha(self._read.sha, 2, self.keys.session(upload_id), self.keys.chunks(upload_id), index)
                queue(pipe)
                answers = await pipe.execute(raise_on_error=False)
        if isinstance(answers[0], NoScriptError):  # Redis restarted or failed over: load it, once
            return await self.read(upload_id, index), answers[1]
        if isinstance(answers[0], Exception):
            with redis_errors():
                raise answers[0]
        return _read_answer(answers[0], index), answers[1]

    async def entry(self, session: UploadSession, index: int) -> Entry | None:
        """The recorded size and digest of chunk `index`, or None."""
        with redis_errors():
            raw = await self.redis.hget(self.keys.chunks(session.id), str(index))
        return _entry(raw) if raw is not None else _legacy(session, index)

    async def entries(self, session: UploadSession) -> dict[int, Entry]:
        """Every recorded chunk: index -> (size, digest)."""
        with redis_errors():
            raw = await self.redis.hgetall(self.keys.chunks(session.id))
        found = {index: entry for index in session.received_chunks if (entry := _legacy(session, index))}
        found.update({int(text(k)): _entry(v) for k, v in raw.items()})
        return found

    async def indices(self, session: UploadSession) -> list[int]:
        """The indices of the recorded chunks, in order."""
        with redis_errors():
            raw = await self.redis.hkeys(self.keys.chunks(session.id))
        return sorted({int(text(k)) for k in raw} | {int(i) for i in session.received_chunks})

    async def record(
        self,
        upload_id: str,
        index: int,
        size: int,
        digest: str,
        check: Callable[[UploadSession], None],
        read: ChunkRead | None = None,
        place: str = "",
        counted: Callable[[UploadSession], None] | None = None,
    ) -> Recorded:
        """Record chunk `index` (stored at `place`, what the store's put_part said) unless it is already.

        The same digest again is a duplicate; another one a ChunkConflict. `check` sees the
        session before a new chunk is recorded, may raise to refuse it and may change it (its
        expiry time); `counted` sees it with the chunk counted and may change it too (claim it
        for completion). Both can run more than once. `read`: this upload's record and entry for
        `index` as the caller read them (else read here); it is used up (changed by `check`).

        The expiry index is not written: an entry older than its session's expiry is what the
        reaper already expects and corrects (Uploads.reap), as for appends (hot_path.py)."""
        key, chunks_key = self.keys.session(upload_id), self.keys.chunks(upload_id)
        noted = Noted()
        value = _field(size, digest, place)
        while True:  # each pass that does not write saw another writer's change: progress
            if read is None:
                read = await self.read(upload_id, index)
                if read is None:
                    raise UploadNotFound("no such upload")
            current, known = read.session, read.known
            if known is not None:
                if known[1] != digest:
                    raise ChunkConflict(f"chunk {index} was already received with different bytes")
                return Recorded(current, True, None, known[2])
            check(current)
            legacy = _counted(current, size)
            if counted is not None:
                counted(current)
            with redis_errors():
                await self.sessions.note_before_commit(noted, current, False)
                args: list[bytes | str | int] = [read.blob, _session.encode(current), self.sessions.ttl(current)]
                args += [index, value, *(part for pair in legacy.items() for part in pair)]
                answer = await self._record(keys=[key, chunks_key], args=args)
            if answer[0] == 1:
                break
            read = None
        await self.sessions.replicated()
        return Recorded(current, False, _indices(answer[1]), place)
