"""Which chunks of a chunked upload arrived: a Redis hash per upload, beside its session record.

The hash (keys.py `chunks`) maps a chunk index to "size:sha256". It shares the upload's hash tag,
so recording a chunk is one WATCH/MULTI transaction over both keys: the new field and the
session record, whose counts (`chunk_count`, `chunk_bytes`) stay a fixed size. Recording the
10,000th chunk therefore writes as many bytes as recording the first.

A record written before the hash existed lists its chunks in `received_chunks`: it is read as
if those were in the hash, and the next chunk moves them there in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from . import session as _session
from .errors import ChunkConflict, UploadNotFound
from .session import UploadSession
from .session_store import Noted, SessionStore, binary, redis_errors, text

Entry = tuple[int, str]  # size, sha256 hex


def _entry(raw: bytes | str) -> Entry:
    size, _, digest = text(raw).partition(":")
    return int(size), digest


def _field(size: int, digest: str) -> str:
    return f"{size}:{digest}"


def _legacy(session: UploadSession, index: int) -> Entry | None:
    found = session.received_chunks.get(index)
    return None if found is None else (int(found[0]), str(found[1]))


def _counted(current: UploadSession, size: int) -> dict[str, str]:
    """Count one more chunk of `size` on `current`; the chunks its record listed, to move into the hash."""
    legacy = {str(i): _field(int(e[0]), str(e[1])) for i, e in current.received_chunks.items()}
    current.received_chunks = {}
    current.chunk_count += 1
    current.chunk_bytes += size
    return legacy


class ChunkRecords:
    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions
        self.redis = sessions.redis
        self.keys = sessions.keys

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
        self, upload_id: str, index: int, size: int, digest: str, check: Callable[[UploadSession], None]
    ) -> tuple[UploadSession, bool]:
        """Record chunk `index` unless it is already; (session, duplicate).

        The same digest again is a duplicate; another one a ChunkConflict. `check` sees the
        session before a new chunk is recorded, may raise to refuse it and may change it (its
        expiry time); it can run more than once."""
        key, chunks_key = self.keys.session(upload_id), self.keys.chunks(upload_id)
        noted = Noted()
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key, chunks_key)
                        blob = await pipe.get(key)
                        if blob is None:
                            raise UploadNotFound("no such upload")
                        current = _session.decode(binary(blob))
                        raw = await pipe.hget(chunks_key, str(index))
                        known = _entry(raw) if raw is not None else _legacy(current, index)
                        if known is not None:
                            if known[1] != digest:
                                raise ChunkConflict(f"chunk {index} was already received with different bytes")
                            # WATCH orders writes, not reads: the entry may be newer than the record
                            # read above. Both were written in one transaction, so this read agrees.
                            again = await pipe.get(key)
                            return (current if again is None else _session.decode(binary(again))), True
                        check(current)
                        legacy = _counted(current, size)
                        if noted.missing(current, False):
                            await pipe.reset()  # the index is written on another connection (Noted)
                            await self.sessions.note_before_commit(noted, current, False)
                            continue
                        await self._write(pipe, current, index, _field(size, digest), legacy)
                        break
                    except WatchError:
                        continue
            await self.redis.zadd(self.keys.expiry, {upload_id: current.expires_at})
        await self.sessions.replicated()
        return current, False

    async def _write(
        self, pipe: Pipeline, current: UploadSession, index: int, value: str, legacy: dict[str, str]
    ) -> None:
        ttl = self.sessions.ttl(current)
        key, chunks_key = self.keys.session(current.id), self.keys.chunks(current.id)
        pipe.multi()
        if legacy:
            pipe.hset(chunks_key, items=[part for pair in legacy.items() for part in pair])
        pipe.hset(chunks_key, str(index), value)
        pipe.set(key, _session.encode(current), ex=ttl)
        pipe.expire(chunks_key, ttl)
        await pipe.execute()
