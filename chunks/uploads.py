"""The upload core: sessions in Redis, bytes in a ChunkStore, one writer per stream upload.

Nothing here knows HTTP or images. A protocol module opens a session, writes numbered chunks
or appends at an offset, and when every byte is in, claims the upload, gets the assembled file,
hands it to whatever turns it into an avatar, and reports the outcome with `finish` or `fail`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import session as s
from .errors import (
    ChunkConflict,
    InvalidRequest,
    OffsetMismatch,
    SessionConflict,
    UploadBusy,
    UploadError,
    UploadNotFound,
    UploadTooLarge,
)
from .locks import UploadLocks
from .quotas import Quotas, Unlimited
from .sessions import SessionStore
from .storage import ChunkStore
from .streams import Checksum, Stopped, until_stopped, write_verified

log = logging.getLogger(__name__)
MiB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int = 20 * MiB
    max_chunk_bytes: int = 8 * MiB
    max_chunks: int = 10_000
    expire_seconds: int = 24 * 3600
    # A stream upload is fsynced and its offset recorded every this many bytes.
    checkpoint_bytes: int = 1 * MiB
    # How long an assembler may hold a completed upload before another may take over.
    claim_seconds: float = 120.0


@dataclass(frozen=True)
class Claim:
    """The right, held by one request, to turn a completed upload into its result."""

    session: s.UploadSession
    path: Path


class Uploads:
    def __init__(
        self,
        sessions: SessionStore,
        store: ChunkStore,
        locks: UploadLocks,
        limits: UploadLimits,
        quotas: Quotas | Unlimited | None = None,
    ):
        self.sessions = sessions
        self.store = store
        self.locks = locks
        self.limits = limits
        self.quotas = quotas or Unlimited()

    # -- opening -----------------------------------------------------------------------------

    def _new(self, owner: str, kind: s.UploadKind, **fields: Any) -> s.UploadSession:
        now = time.time()
        return s.UploadSession(
            id=s.new_upload_id(),
            owner=owner,
            kind=kind,
            created_at=now,
            expires_at=now + self.limits.expire_seconds,
            **fields,
        )

    async def open_chunked(
        self,
        owner: str,
        *,
        file_name: str,
        content_type: str,
        total_chunks: int,
        alias: str = "",
        upload_id: str | None = None,
        first_bytes: int = 0,
    ) -> s.UploadSession:
        """The session named by `upload_id`, else the open one under `alias`, else a new one.

        A new one must fit the owner's quotas with `first_bytes` in it (its first chunk's size),
        so a refused first chunk leaves no empty upload behind.

        A request that contradicts the session (another total or type) is a SessionConflict."""
        if not 1 <= total_chunks <= self.limits.max_chunks:
            raise InvalidRequest(
                f"total_chunks must be between 1 and {self.limits.max_chunks}", code="invalid-total-chunks"
            )
        if upload_id is not None:
            found: s.UploadSession | None = await self.get(upload_id, owner)
        else:
            found = await self.sessions.by_alias(owner, alias)
            if found is None:
                fresh = self._new(
                    owner,
                    s.UploadKind.CHUNKED,
                    file_name=file_name,
                    content_type=content_type,
                    total_chunks=total_chunks,
                    alias=alias,
                )
                await self.quotas.admit(owner, fresh.id, fresh.expires_at, first_bytes)
                found = await self.sessions.create(fresh)
                if found.id != fresh.id:  # a concurrent first chunk under the same name won
                    await self.quotas.release(owner, fresh.id)
        assert found is not None
        self._check_same_upload(found, total_chunks, content_type)
        return found

    @staticmethod
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

    async def open_stream(
        self,
        owner: str,
        *,
        length: int | None,
        metadata: dict[str, str] | None = None,
        file_name: str = "",
        content_type: str = "",
        partial: bool = False,
    ) -> s.UploadSession:
        if length is not None:
            self._check_length(length)
        session = self._new(
            owner,
            s.UploadKind.STREAM,
            length=length,
            metadata=dict(metadata or {}),
            file_name=file_name,
            content_type=content_type,
            partial=partial,
        )
        await self.quotas.admit(owner, session.id, session.expires_at, length or 0)
        await self.store.truncate(session.id, 0)
        return await self.sessions.create(session)

    def _check_length(self, length: int) -> None:
        if length < 0:
            raise InvalidRequest("the upload length must not be negative", code="invalid-length")
        if length > self.limits.max_upload_bytes:
            raise UploadTooLarge(f"uploads are limited to {self.limits.max_upload_bytes} bytes")

    # -- looking up ---------------------------------------------------------------------------

    async def get(self, upload_id: str, owner: str) -> s.UploadSession:
        """The session if `owner` owns it; UploadNotFound for unknown or foreign ids, UploadGone if expired."""
        if not s.looks_like_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        return await self.sessions.load(upload_id, owner)

    async def current(self, upload_id: str, owner: str, lock_wait: float = 1.5) -> s.UploadSession:
        """The session with an offset no request is still moving.

        A client asking where to resume has given up on its earlier request, which the server
        may still be reading: that writer is asked to save and let go first, so the answer is
        an offset the next append will accept (IETF draft, "Concurrency")."""
        session = await self.get(upload_id, owner)
        if session.kind != s.UploadKind.STREAM or session.state != s.UploadState.OPEN:
            return session
        try:
            async with self.locks.hold(upload_id, lock_wait):
                return await self._reconciled(upload_id, owner)
        except UploadBusy:
            return await self.get(upload_id, owner)

    # -- numbered chunks -----------------------------------------------------------------------

    async def put_chunk(self, session: s.UploadSession, index: int, data: bytes) -> tuple[s.UploadSession, bool]:
        """Store chunk `index` durably, then record it. Returns (session, duplicate).

        The same bytes again are an idempotent duplicate, even after completion; other bytes
        for a recorded index are a ChunkConflict. Only recorded chunks count."""
        if session.total_chunks is None or not 0 <= index < session.total_chunks:
            raise InvalidRequest(
                f"chunk_index must be between 0 and {(session.total_chunks or 1) - 1}",
                code="invalid-chunk-index",
            )
        if len(data) > self.limits.max_chunk_bytes:
            raise UploadTooLarge(
                f"a chunk may hold at most {self.limits.max_chunk_bytes} bytes", code="chunk-too-large"
            )
        if not data:
            raise InvalidRequest("a chunk must not be empty", code="empty-chunk")
        digest = hashlib.sha256(data).hexdigest()
        if self._recorded(session, index, digest):
            return session, True
        if session.state != s.UploadState.OPEN:
            raise SessionConflict(f"this upload is {session.state}; it takes no more chunks", code="upload-not-open")
        if session.received_bytes + len(data) > self.limits.max_upload_bytes:
            raise UploadTooLarge(f"uploads are limited to {self.limits.max_upload_bytes} bytes")

        await self.quotas.reserve(session.owner, session.id, session.received_bytes + len(data))
        await self.store.put_part(session.id, index, data, digest)

        def record(current: s.UploadSession) -> bool:
            if self._recorded(current, index, digest):
                return True
            if current.state != s.UploadState.OPEN:
                raise SessionConflict(
                    f"this upload is {current.state}; it takes no more chunks", code="upload-not-open"
                )
            if current.received_bytes + len(data) > self.limits.max_upload_bytes:
                raise UploadTooLarge(f"uploads are limited to {self.limits.max_upload_bytes} bytes")
            current.received_chunks[index] = [len(data), digest]
            current.expires_at = time.time() + self.limits.expire_seconds
            return False

        try:
            return await self.sessions.update(session.id, record)
        except UploadError:
            # Not recorded: the part file is nobody's. (A recorded twin has another digest.)
            await self.store.drop_part(session.id, index, digest)
            raise

    @staticmethod
    def _recorded(session: s.UploadSession, index: int, digest: str) -> bool:
        entry = session.received_chunks.get(index)
        if entry is None:
            return False
        if entry[1] != digest:
            raise ChunkConflict(f"chunk {index} was already received with different bytes")
        return True

    # -- appended streams ----------------------------------------------------------------------

    async def append(
        self,
        upload_id: str,
        owner: str,
        offset: int,
        body: AsyncIterator[bytes],
        *,
        length: int | None = None,
        lock_wait: float = 3.0,
        checksum: Checksum | None = None,
    ) -> s.UploadSession:
        """Append `body` at `offset` under the upload's lock. `length` declares a deferred length.

        Bytes that reach the disk before a disconnect are kept and recorded; the error is then
        re-raised. A stop request from a competing request ends the body early the same way.
        With a `checksum`, the body counts only if it arrived whole and matches: otherwise the
        upload is cut back to `offset` (ChecksumMismatch, or the interruption re-raised)."""
        async with self.locks.hold(upload_id, lock_wait) as lease:
            session = await self._appendable(upload_id, owner, offset, length)
            room = (session.length if session.length is not None else self.limits.max_upload_bytes) - offset
            if checksum is None:
                written, interrupted = await self._write(upload_id, offset, until_stopped(body, lease), room)
            else:
                written, interrupted = await write_verified(
                    self.store,
                    upload_id,
                    offset,
                    until_stopped(body, lease),
                    room,
                    checksum,
                )
            session = await self._record_offset(upload_id, written)
            if isinstance(interrupted, OverflowError):
                if session.length is not None:
                    raise UploadTooLarge("the body goes past the upload's length", code="length-exceeded")
                raise UploadTooLarge(f"uploads are limited to {self.limits.max_upload_bytes} bytes")
            if interrupted is not None and not isinstance(interrupted, Stopped):
                raise interrupted
            return session

    async def _appendable(self, upload_id: str, owner: str, offset: int, length: int | None) -> s.UploadSession:
        session = await self._reconciled(upload_id, owner)
        if session.kind != s.UploadKind.STREAM or session.parts:
            raise SessionConflict("this upload does not take appended bytes", code="not-appendable")
        if session.state != s.UploadState.OPEN:
            raise SessionConflict(f"this upload is {session.state}", code="upload-not-open")
        if offset != session.offset:
            raise OffsetMismatch(f"the upload is at offset {session.offset}", expected=session.offset)
        if length is not None:
            session = await self.declare_length(session, length)
        return session

    async def _write(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        room: int,
    ) -> tuple[int, BaseException | None]:
        async def checkpoint(durable: int) -> None:
            await self._record_offset(upload_id, durable)

        return await self.store.append(upload_id, offset, body, room, checkpoint, self.limits.checkpoint_bytes)

    async def declare_length(self, session: s.UploadSession, length: int) -> s.UploadSession:
        self._check_length(length)
        await self.quotas.reserve(session.owner, session.id, length)

        def declare(current: s.UploadSession) -> None:
            if current.length is not None and current.length != length:
                raise SessionConflict("the upload length cannot change once set", code="length-mismatch")
            if length < current.offset:
                raise SessionConflict("the upload length is below its offset", code="length-mismatch")
            current.length = length

        updated, _ = await self.sessions.update(session.id, declare)
        return updated

    async def _reconciled(self, upload_id: str, owner: str) -> s.UploadSession:
        """Under the lock: make the recorded offset and the stored bytes agree.

        Bytes past the recorded offset were never acknowledged (a torn tail after a crash):
        cut them. Fewer bytes than recorded means storage lost them: the storage is the truth."""
        session = await self.get(upload_id, owner)
        if session.kind != s.UploadKind.STREAM or session.state != s.UploadState.OPEN:
            return session
        size = await self.store.stream_size(upload_id)
        if size > session.offset:
            await self.store.truncate(upload_id, session.offset)
        elif size < session.offset:
            log.warning("upload %s: storage holds %d bytes, session said %d", upload_id, size, session.offset)
            session = await self._record_offset(upload_id, size, allow_backwards=True)
        return session

    async def _record_offset(self, upload_id: str, offset: int, allow_backwards: bool = False) -> s.UploadSession:
        def advance(current: s.UploadSession) -> None:
            if offset > current.offset or allow_backwards:
                current.offset = offset
            current.expires_at = time.time() + self.limits.expire_seconds

        updated, _ = await self.sessions.update(upload_id, advance)
        return updated

    async def concatenate(
        self,
        owner: str,
        part_ids: list[str],
        *,
        metadata: dict[str, str] | None = None,
    ) -> s.UploadSession:
        """A final upload made of finished partial uploads, in order (tus concatenation)."""
        parts = [await self.get(part_id, owner) for part_id in part_ids]
        for part in parts:
            if not part.partial:
                raise SessionConflict("only partial uploads can be concatenated", code="not-partial")
            if part.length is None or part.offset != part.length:
                raise SessionConflict("a partial upload is not finished yet", code="partial-incomplete")
        total = sum(part.offset for part in parts)
        self._check_length(total)
        final = self._new(owner, s.UploadKind.STREAM, length=total, metadata=dict(metadata or {}), parts=list(part_ids))
        await self.quotas.admit(owner, final.id, final.expires_at, total)
        await self.store.concatenate(final.id, part_ids)
        final.offset = total
        return await self.sessions.create(final)

    # -- completion ----------------------------------------------------------------------------

    async def claim(self, upload_id: str) -> Claim | None:
        """Take the right to complete a fully received upload, and assemble it.

        Returns None when another request holds that right or the upload already settled."""

        def take(current: s.UploadSession) -> bool:
            now = time.time()
            if (
                current.state in (s.UploadState.DONE, s.UploadState.FAILED)
                or not current.all_received
                or current.partial
            ):
                return False
            if current.state == s.UploadState.ASSEMBLING and current.claimed_until > now:
                return False
            current.state = s.UploadState.ASSEMBLING
            current.claimed_until = now + self.limits.claim_seconds
            return True

        session, taken = await self.sessions.update(upload_id, take)
        if not taken:
            return None
        try:
            path = await self._assembled(session)
        except BaseException:
            await self.release(upload_id)
            raise
        return Claim(session=session, path=path)

    async def _assembled(self, session: s.UploadSession) -> Path:
        if session.kind == s.UploadKind.CHUNKED:
            parts = sorted((int(i), entry[1]) for i, entry in session.received_chunks.items())
            path = await self.store.assemble(session.id, parts)
        else:
            path = self.store.stream_path(session.id)
        size = (await asyncio.to_thread(path.stat)).st_size
        if size != session.received_bytes:
            raise SessionConflict(
                f"assembled {size} bytes but {session.received_bytes} were recorded",
                code="length-mismatch",
            )
        return path

    async def release(self, upload_id: str) -> None:
        """Give a claim back without an outcome (the completer crashed or hit a transient error)."""

        def reopen(current: s.UploadSession) -> None:
            if current.state == s.UploadState.ASSEMBLING:
                current.state = s.UploadState.OPEN
                current.claimed_until = 0.0

        try:
            await self.sessions.update(upload_id, reopen)
        except UploadNotFound:
            pass

    async def finish(self, claim: Claim, result: dict[str, Any]) -> s.UploadSession:
        """Record success; the bytes are no longer needed. The record stays until expiry."""
        return await self._settle(claim.session, s.UploadState.DONE, result=result)

    async def fail(self, claim: Claim, code: str, message: str) -> s.UploadSession:
        return await self._settle(claim.session, s.UploadState.FAILED, code=code, message=message)

    async def _settle(
        self,
        session: s.UploadSession,
        state: s.UploadState,
        *,
        result: dict[str, Any] | None = None,
        code: str = "",
        message: str = "",
    ) -> s.UploadSession:
        def settle(current: s.UploadSession) -> None:
            current.state = state
            current.result = result
            current.error_code = code
            current.error_message = message
            current.claimed_until = 0.0

        updated, _ = await self.sessions.update(session.id, settle)
        await self.quotas.release(updated.owner, updated.id)
        await self.store.discard(session.id)
        for part_id in updated.parts:
            await self._forget(part_id, "concatenated")
        if updated.alias:
            await self.sessions.forget_alias(updated)
        return updated

    async def settled(self, upload_id: str, owner: str, timeout: float) -> s.UploadSession:
        """Wait (polling, with a deadline) for another request's completion to settle."""
        deadline = time.monotonic() + timeout
        while True:
            session = await self.get(upload_id, owner)
            if session.state in (s.UploadState.DONE, s.UploadState.FAILED) or time.monotonic() >= deadline:
                return session
            if session.state == s.UploadState.OPEN and not session.all_received:
                return session
            await asyncio.sleep(0.05)

    # -- ending --------------------------------------------------------------------------------

    async def abandon(self, upload_id: str, owner: str) -> None:
        session = await self.get(upload_id, owner)
        if session.kind == s.UploadKind.STREAM:
            async with self.locks.hold(upload_id):
                await self._forget(upload_id, "abandoned")
        else:
            await self._forget(upload_id, "abandoned")

    async def _forget(self, upload_id: str, reason: str) -> None:
        session = await self.sessions.get(upload_id)
        if session is not None:
            await self.sessions.delete(session, reason)
            await self.quotas.release(session.owner, upload_id)
        await self.store.discard(upload_id)

    async def reap(self, now: float | None = None, batch: int = 100) -> int:
        """Remove expired uploads, bytes and keys. Returns how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        for upload_id in await self.sessions.due(now, batch):
            session = await self.sessions.get(upload_id)
            if session is None:
                await self.sessions.forget_expiry(upload_id)
                await self.store.discard(upload_id)
                removed += 1
                continue
            if session.expires_at > now or (session.state == s.UploadState.ASSEMBLING and session.claimed_until > now):
                continue
            await self._forget(upload_id, "expired")
            removed += 1
        return removed
