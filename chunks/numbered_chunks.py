"""Numbered chunks (the JSON chunk API): each chunk a part named by its digest, recorded once.

A chunk is stored before it is recorded (chunk_records.py), so only acknowledged bytes count;
the same bytes again are a duplicate, other bytes for a recorded index a ChunkConflict.
`chunks.uploads.Uploads` calls in here; what these functions need of it is `Uploads` below.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, Protocol

import blake3

from . import session as s
from .chunk_records import ChunkRead, ChunkRecords, Recorded
from .errors import ChunkConflict, SessionConflict, UploadError, UploadGone, UploadNotFound
from .limits import UploadLimits
from .quotas import Quotas
from .session_store import SessionStore
from .storage import ChunkStore, PartRef


class Uploads(Protocol):
    """What numbered chunks need of `chunks.uploads.Uploads` (which calls in here, so is not imported)."""

    sessions: SessionStore
    store: ChunkStore
    limits: UploadLimits
    quotas: Quotas
    chunk_records: ChunkRecords

    async def get(self, upload_id: str, owner: str) -> s.UploadSession: ...

    async def admit(self, session: s.UploadSession, held_bytes: int, *, count_bytes: bool = True) -> None: ...

    def new_session(self, owner: str, kind: s.UploadKind, **fields: Any) -> s.UploadSession: ...


async def open_chunked(
    uploads: Uploads,
    owner: str,
    file_name: str,
    content_type: str,
    total_chunks: int,
    *,
    alias: str = "",
    upload_id: str | None = None,
    first_bytes: int = 0,
) -> s.UploadSession:
    """The session named by `upload_id`, else the open one under `alias`, else a new one.

    A new one must fit the owner's quotas with `first_bytes` in it (its first chunk's size),
    so a refused first chunk leaves no empty upload behind.

    A request that contradicts the session (another total or type) is a SessionConflict."""
    uploads.limits.check_total_chunks(total_chunks)
    if upload_id is not None:
        found = await uploads.get(upload_id, owner)
        _check_same_upload(found, total_chunks, content_type)
        return found
    found, _ = await open_named(uploads, owner, file_name, content_type, total_chunks, alias, first_bytes)
    return found


async def open_named(
    uploads: Uploads,
    owner: str,
    file_name: str,
    content_type: str,
    total_chunks: int,
    alias: str,
    first_bytes: int,
) -> tuple[s.UploadSession, ChunkRead | None]:
    """`open_chunked` by `alias`, with the session's record as a `ChunkRead` for `store_chunk`
    when this request created it: a new upload has no chunk yet, and its record is the one
    just written, so `store_chunk` need not read it back (one round trip less on every first
    chunk). Its compare-and-set still finds a record another request changed meanwhile (a
    twin under the same name, say) and reads it again. None for a session found open."""
    uploads.limits.check_total_chunks(total_chunks)
    found = await uploads.sessions.by_alias(owner, alias)
    read = None
    if found is None:
        fresh = uploads.new_session(
            owner,
            s.UploadKind.CHUNKED,
            file_name=file_name,
            content_type=content_type,
            total_chunks=total_chunks,
            alias=alias,
        )
        # Checked with its first chunk but counted by put_chunk, which adds each chunk.
        await uploads.admit(fresh, first_bytes, count_bytes=False)
        found = await uploads.sessions.create(fresh)
        if found.id != fresh.id:  # a concurrent first chunk under the same name won
            await uploads.quotas.release(owner, fresh.id)
        else:
            # Encoded as create stored it (deterministically); decoded afresh, as store_chunk
            # changes the session it is handed.
            blob = s.encode(fresh)
            read = ChunkRead(blob, s.decode(blob), None)
    _check_same_upload(found, total_chunks, content_type)
    return found, read


async def open_chunk(
    uploads: Uploads, owner: str, upload_id: str, index: int, total_chunks: int, content_type: str, size: int = 0
) -> ChunkRead:
    """`owner`'s chunked upload `upload_id` with chunk `index`'s entry, read in one round trip
    (what `open_chunked` with an upload id and `put_chunk`'s own read take two for): pass it to
    `store_chunk`. Raises as `open_chunked` does.

    `size`: the chunk's length. The owner's quota counts it in the same round trip when the
    chunk is new (`ChunkRead.counted`, which `store_chunk` then does not count again, and gives
    back if it refuses the chunk), so a steady chunk takes two round trips with quotas on, as
    without. A refused count raises QuotaExceeded, after any other refusal here."""
    uploads.limits.check_total_chunks(total_chunks)
    read: ChunkRead | None = None
    count: bool | BaseException = False  # counted, or why not
    if s.looks_like_upload_id(upload_id):
        if size and uploads.quotas.counts_bytes:
            read, count = await _read_counting(uploads, owner, upload_id, index, size)
        else:
            read = await uploads.chunk_records.read(upload_id, index)
    try:
        if read is None or read.session.owner != owner or read.session.expired():
            # The general lookup tells unknown, foreign, expired and abandoned apart.
            await uploads.get(upload_id, owner)
            raise UploadNotFound("no such upload")
        _check_same_upload(read.session, total_chunks, content_type)
    except BaseException:
        if count is True:
            await _uncount(uploads.quotas, owner, upload_id, size)
        raise
    if read.known is None:  # a new chunk: the count stands, or its refusal does
        if isinstance(count, BaseException):
            raise count
        read.counted = size if count is True else 0
    elif count is True:  # a duplicate or a conflict: nothing of it is stored
        await _uncount(uploads.quotas, owner, upload_id, size)
    return read


async def _read_counting(
    uploads: Uploads, owner: str, upload_id: str, index: int, size: int
) -> tuple[ChunkRead | None, bool | BaseException]:
    """Chunk `index`'s read, with `size` bytes counted in `owner`'s quota in the same round trip
    (on a Cluster, at the same time): the read, and True or why the count was refused."""
    records, quotas = uploads.chunk_records, uploads.quotas
    if records.one_pipeline:
        read, answer = await records.read_with(
            upload_id, index, lambda pipe: quotas.queue_grow(pipe, owner, upload_id, size)
        )
        try:
            await quotas.grown(answer, owner, upload_id, size)
        except UploadError as exc:  # QuotaExceeded, StoreUnavailable: judged with the read
            return read, exc
        return read, True
    reading = asyncio.ensure_future(records.read(upload_id, index))
    try:
        await quotas.grow(owner, upload_id, size)
    except UploadError as exc:
        return await reading, exc
    except BaseException:
        reading.cancel()
        raise
    try:
        return await reading, True
    except BaseException:
        await _uncount(quotas, owner, upload_id, size)
        raise


def _check_same_upload(session: s.UploadSession, total_chunks: int, content_type: str) -> None:
    if session.kind != s.UploadKind.CHUNKED:
        raise UploadNotFound("no such chunked upload")
    if session.total_chunks != total_chunks:
        raise SessionConflict(
            f"this upload has total_chunks={session.total_chunks}; abandon it to start over",
            code="total-chunks-mismatch",
        )
    if session.content_type != content_type:
        raise SessionConflict(
            f"this upload has content_type={session.content_type!r}",
            code="content-type-mismatch",
        )


# A chunk's bytes are named by their BLAKE3 digest, tagged: a resend with the same digest is a
# duplicate, another one a conflict. Records written before carry a bare sha256 hex, compared
# as such (_same_bytes). BLAKE3 takes 0.3 ms per MiB here against sha256's 1.0 (docs/
# performance.md) and lets go of the GIL, so a large chunk is hashed in a worker thread while
# the event loop serves other requests and the store writes it where it does not need the
# digest first (a local log: put_part); a small one costs less than the hop.
DIGEST_TAG = "b3-"
_HASH_INLINE = 256 * 1024


def part_digest(data: bytes) -> str:
    """What a numbered chunk's record (chunk_records.py) and an S3 part's key name its bytes by."""
    return DIGEST_TAG + blake3.blake3(data).hexdigest()


def _digest(data: bytes) -> asyncio.Future[str]:
    """The chunk's digest: done already for a small chunk, being made in a worker thread for a large one."""
    if len(data) > _HASH_INLINE:
        return asyncio.ensure_future(asyncio.to_thread(part_digest, data))
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result(part_digest(data))
    return done


def _same_bytes(recorded: str, data: bytes, digest: str) -> bool:
    """Whether `data` (whose digest is `digest`) are the bytes a record names by `recorded`."""
    if recorded.startswith(DIGEST_TAG):
        return recorded == digest
    # Recorded by an earlier version, as a sha256 hex: a resend after an upgrade is still a duplicate.
    return recorded == hashlib.sha256(data).hexdigest()


async def put_chunk(
    uploads: Uploads, session: s.UploadSession, index: int, data: bytes
) -> tuple[s.UploadSession, bool]:
    """`store_chunk`, answering (session, duplicate)."""
    stored = await store_chunk(uploads, session, index, data)
    return stored.session, stored.duplicate


async def store_chunk(
    uploads: Uploads,
    session: s.UploadSession,
    index: int,
    data: bytes,
    read: ChunkRead | None = None,
    *,
    claim_as: str = "",
) -> Recorded:
    """Store chunk `index` durably, then record it.

    The same bytes again are an idempotent duplicate, even after completion; other bytes
    for a recorded index are a ChunkConflict. Only recorded chunks count. `read`: the upload
    as `open_chunk` read it (else it is read here, one round trip). `claim_as`: when this chunk
    is the last one missing, its record also claims the upload for completion with this token
    (Completion.complete's `claimed_as`), which saves the completer a compare-and-set of its own."""
    counted = read.counted if read is not None else 0
    try:
        uploads.limits.check_chunk(session.total_chunks, index, data)
    except UploadError:
        await _uncount(uploads.quotas, session.owner, session.id, counted)
        raise
    hashing = _digest(data)
    try:
        return await _store(uploads, session, index, data, hashing, read, claim_as)
    finally:
        hashing.cancel()  # when a refusal came first: the thread finishes, nobody waits for it


async def _uncount(quotas: Quotas, owner: str, upload_id: str, counted: int) -> None:
    """Give back `counted` bytes counted for a chunk that is not stored after all (shielded: a
    cancelled request still gives them back)."""
    if counted:
        await asyncio.shield(quotas.grow(owner, upload_id, -counted))


async def _store(
    uploads: Uploads,
    session: s.UploadSession,
    index: int,
    data: bytes,
    hashing: asyncio.Future[str],
    read: ChunkRead | None,
    claim_as: str,
) -> Recorded:
    if read is None:
        read = await uploads.chunk_records.read(session.id, index)
        if read is None:
            raise UploadNotFound("no such upload")
    # Read with the entry, in one step: if the request that recorded this chunk brought the
    # last one, this session says so, and a duplicate waits for its outcome (complete_upload).
    # (open_chunk counts a chunk's bytes only when it found no entry: `counted` is 0 then.)
    current, counted = read.session, read.counted
    if read.known is not None:
        if not _same_bytes(read.known[1], data, await hashing):
            raise ChunkConflict(f"chunk {index} was already received with different bytes")
        if current.expired():
            raise UploadGone("this upload expired; start a new one")
        return Recorded(current, True, None, read.known[2])
    try:
        if current.state != s.UploadState.OPEN:
            raise SessionConflict(f"this upload is {current.state}; it takes no more chunks", code="upload-not-open")
        uploads.limits.check_room(current.received_bytes, len(data))
    except UploadError:
        await _uncount(uploads.quotas, session.owner, session.id, counted)
        raise

    # Added to what the upload is counted for, in one Redis script (chunks racing each count),
    # unless open_chunk's round trip did so already.
    if not counted:
        await uploads.quotas.grow(session.owner, session.id, len(data))
    try:
        place = await uploads.store.put_part(session.id, index, data, hashing)
        digest = await hashing
    except BaseException:
        await _uncount(uploads.quotas, session.owner, session.id, len(data))
        raise

    def check(current: s.UploadSession) -> None:
        if current.state != s.UploadState.OPEN:
            raise SessionConflict(f"this upload is {current.state}; it takes no more chunks", code="upload-not-open")
        uploads.limits.check_room(current.received_bytes, len(data))
        current.expires_at = time.time() + uploads.limits.expire_seconds

    def claim(current: s.UploadSession) -> None:
        if claim_as and current.awaiting_completion:  # still OPEN: `check` refused anything else
            current.claim(claim_as, time.time() + uploads.limits.claim_seconds)

    try:
        recorded = await uploads.chunk_records.record(
            session.id, index, len(data), digest, check, read, place, claim if claim_as else None
        )
    except (UploadNotFound, UploadGone):
        # The upload went (abandoned, reaped) while this part was written, and the write made
        # its directory again: that goes too, or nothing would ever remove it; so does what this
        # request counted for it after it was released.
        await uploads.store.discard(session.id)
        await uploads.quotas.release(session.owner, session.id)
        raise
    except UploadError:
        # Not recorded: the part is nobody's. (A recorded twin has another digest or place.)
        await uploads.store.drop_part(session.id, PartRef(index, digest, len(data), place))
        await uploads.quotas.grow(session.owner, session.id, -len(data))
        raise
    if recorded.duplicate:  # a concurrent twin recorded the same bytes first
        # This copy is nobody's if it has a place of its own: not where a store without places
        # keeps one copy for both, nor the recorded place itself (this request's record, when
        # a retry after a lost answer found it done).
        if place and place != recorded.place:
            await uploads.store.drop_part(session.id, PartRef(index, digest, len(data), place))
        await uploads.quotas.grow(session.owner, session.id, -len(data))
    return recorded
