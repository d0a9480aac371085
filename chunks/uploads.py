"""The upload core: sessions in Redis, bytes in a ChunkStore, one writer per stream upload.

Nothing here knows HTTP or images. A protocol module opens a session, writes numbered chunks
or appends at an offset; once every byte is in, Completion (completion.py) hands the whole
upload to whatever turns it into an avatar and records the outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from . import concatenation, numbered_chunks, running_digest
from . import session as s
from .chunk_records import ChunkRead, ChunkRecords, Recorded
from .errors import (
    ChecksumMismatch,
    InvalidRequest,
    OffsetMismatch,
    SessionConflict,
    UploadBusy,
    UploadGone,
    UploadNotFound,
    UploadTooLarge,
)
from .hot_path import HeldUpload, HotPath
from .limits import UploadLimits
from .locks import UploadLocks
from .quotas import Quotas, counted_as_it_arrives
from .session_store import SessionStore
from .settled import SettledRecords
from .storage import ChunkStore, StoreFeature
from .streams import Checksum, Stopped, until_stopped

log = logging.getLogger(__name__)

# Asked about every new upload before anything is stored for it; raises to refuse it (the
# server's blocking pre-create hook). It must not change the session it is shown.
AdmitGate = Callable[[s.UploadSession], Awaitable[None]]


class Uploads:
    def __init__(
        self,
        sessions: SessionStore,
        store: ChunkStore,
        locks: UploadLocks,
        limits: UploadLimits,
        quotas: Quotas,
        gate: AdmitGate | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.locks = locks
        self.limits = limits
        self.quotas = quotas
        self.gate = gate
        self.chunk_records = ChunkRecords(sessions)
        self.settled = SettledRecords(sessions.redis, sessions.keys)
        # Appends take two Redis round trips in the steady state (hot_path.py).
        self.hot = HotPath(sessions, locks)
        # Called with an upload someone asked about (`current`) that has every byte but no
        # outcome: the completer whose request brought the last byte may have died. Set by
        # whoever can complete uploads (Completion), which must not block the asker.
        self.on_awaiting_completion: Callable[[s.UploadSession], None] | None = None

    async def admit(self, session: s.UploadSession, held_bytes: int, *, count_bytes: bool = True) -> None:
        """Let the gate refuse a new upload, then count it against its owner's quotas."""
        if self.gate is not None:
            await self.gate(session)
        await self.quotas.admit(session.owner, session.id, session.expires_at, held_bytes, count_bytes=count_bytes)

    # -- opening -----------------------------------------------------------------------------

    def new_session(self, owner: str, kind: s.UploadKind, **fields: Any) -> s.UploadSession:
        now = time.time()
        return s.UploadSession(
            id=s.new_upload_id(),
            owner=owner,
            kind=kind,
            created_at=now,
            expires_at=now + self.limits.expire_seconds,
            **fields,
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
        expected_digest: Checksum | None = None,
        running_digests: bool = False,
    ) -> s.UploadSession:
        """A new stream upload; `expected_digest` is the client's digest of the whole upload,
        kept for Completion to check (running_digest.check_representation).

        `running_digests`: keep SHA-256/512 states of the bytes as they arrive (the IETF draft's
        Repr-Digest): ~4 ms of CPU per MiB, so only for a protocol whose clients can ask."""
        if length is not None:
            self.limits.check_length(length)
        session = self.new_session(
            owner,
            s.UploadKind.STREAM,
            length=length,
            metadata=dict(metadata or {}),
            file_name=file_name,
            content_type=content_type,
            partial=partial,
            expected_digest=[expected_digest.algorithm, expected_digest.digest] if expected_digest else [],
        )
        session.digest_states = running_digest.initial_states() if running_digests or expected_digest else {}
        session.digest_offset = 0 if session.digest_states else -1
        await self.admit(session, length or 0)
        await self.store.create_stream(session.id)
        return await self.sessions.create(session)

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
        an offset the next append will accept (the IETF resumable-upload draft's "Concurrency"
        section asks exactly this of a server)."""
        if not s.looks_like_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        try:
            # The owner check, the lock and the record in one script (hot_path.py), whatever the
            # upload's kind or state: holding the lock a moment is harmless where no one writes.
            async with self.hot.hold(upload_id, owner, lock_wait) as held:
                session = await self._reconciled(upload_id, owner, held)
        except UploadBusy:
            session = await self.get(upload_id, owner)
        self.asked_about(session)
        return session

    def asked_about(self, session: s.UploadSession) -> None:
        """Someone asked where `session` stands: if it has every byte but no outcome, have it completed."""
        if session.awaiting_completion and self.on_awaiting_completion is not None:
            self.on_awaiting_completion(session)

    # -- numbered chunks (the JSON chunk API; numbered_chunks.py) -------------------------------

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
        """See numbered_chunks.open_chunked."""
        return await numbered_chunks.open_chunked(
            self,
            owner,
            file_name,
            content_type,
            total_chunks,
            alias=alias,
            upload_id=upload_id,
            first_bytes=first_bytes,
        )

    async def open_named(
        self, owner: str, *, file_name: str, content_type: str, total_chunks: int, alias: str, first_bytes: int
    ) -> tuple[s.UploadSession, ChunkRead | None]:
        """See numbered_chunks.open_named."""
        return await numbered_chunks.open_named(self, owner, file_name, content_type, total_chunks, alias, first_bytes)

    async def put_chunk(self, session: s.UploadSession, index: int, data: bytes) -> tuple[s.UploadSession, bool]:
        return await numbered_chunks.put_chunk(self, session, index, data)  # see there

    async def open_chunk(
        self, owner: str, upload_id: str, index: int, *, total_chunks: int, content_type: str, size: int = 0
    ) -> ChunkRead:
        return await numbered_chunks.open_chunk(  # see there
            self, owner, upload_id, index, total_chunks, content_type, size
        )

    async def store_chunk(
        self, session: s.UploadSession, index: int, data: bytes, read: ChunkRead | None = None, *, claim_as: str = ""
    ) -> Recorded:
        return await numbered_chunks.store_chunk(self, session, index, data, read, claim_as=claim_as)  # see there

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
        check: Callable[[s.UploadSession], None] | None = None,
        claim_as: str = "",
    ) -> s.UploadSession:
        """Append `body` at `offset` under the upload's lock. `length` declares a deferred length.

        Bytes that reach the store before a disconnect are kept and recorded; the error is then
        re-raised. A stop request from a competing request ends the body early the same way.
        With a `checksum`, the body counts only if it arrived whole and matches: otherwise the
        upload stays at `offset` (ChecksumMismatch, or the interruption re-raised). `check` sees
        the session under the lock before any byte is read, and may raise to refuse the request.
        `claim_as`: when these bytes complete the upload, the record that says so also claims it
        for completion with this token (Completion.complete's `claimed_as`), which saves the
        completer a transaction of its own."""
        if checksum is not None and StoreFeature.CHECKSUM not in self.store.features:
            raise InvalidRequest("this server cannot verify checksums", code="checksum-unsupported")
        if not s.looks_like_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        # The owner first (inside HotPath.hold's script): taking the lock asks its holder to let
        # go, which a stranger's request (a foreign or guessed id) must never be able to do.
        async with self.hot.hold(upload_id, owner, lock_wait) as held:
            lease = held.lease
            session = await self._appendable(upload_id, owner, offset, length, held, check)
            deferred = session.length is None
            room = (session.length if session.length is not None else self.limits.max_upload_bytes) - offset
            # Hashed as the store takes the blocks, saved with each offset: never a second read.
            digests = running_digest.AppendDigests.for_session(session)
            blocks = until_stopped(body, lease)
            if deferred:
                limits = self.limits
                blocks = counted_as_it_arrives(
                    self.quotas, session, offset, blocks, step=limits.checkpoint_bytes, cap=limits.max_upload_bytes
                )

            async def checkpoint(durable: int) -> None:
                await self._record_offset(upload_id, durable, digests=digests, held=held)

            try:
                written, interrupted = await self.store.append(
                    upload_id,
                    offset,
                    digests.through(blocks) if digests else blocks,
                    limit=room,
                    checksum=checksum,
                    checkpoint=checkpoint,
                    checkpoint_bytes=self.limits.checkpoint_bytes,
                    on_sync=digests.fold_to if digests else None,
                )
            except ChecksumMismatch:
                await self._record_offset(upload_id, offset, held=held)
                raise
            # Recorded and released in one round trip; the deferred-length quota below runs after.
            # An interrupted body is not claimed: its request ends in an error, not a completion.
            session = await self._record_offset(
                upload_id, written, digests=digests, held=held, release=True, claim_as=None if interrupted else claim_as
            )
            if deferred and session.length is None:
                # Count what it holds, not what was reserved ahead of the bytes (never refused).
                await self.quotas.reserve(owner, upload_id, session.offset)
            self._raise_interruption(session, interrupted, verified=checksum is not None)
            return session

    def _raise_interruption(
        self, session: s.UploadSession, interrupted: BaseException | None, *, verified: bool
    ) -> None:
        """Re-raise what cut a body short, once the bytes before it are recorded.

        A stop request is a normal end (the competing request takes over), unless the body
        carried a checksum: then none of it counted, and the client must hear so."""
        if interrupted is None:
            return
        if isinstance(interrupted, OverflowError):
            if session.length is not None:
                raise UploadTooLarge("the body goes past the upload's length", code="length-exceeded")
            raise UploadTooLarge(f"uploads are limited to {self.limits.max_upload_bytes} bytes")
        if isinstance(interrupted, Stopped):
            if verified:
                raise UploadBusy("another request took over this upload before the body was verified")
            return
        raise interrupted

    async def _appendable(
        self,
        upload_id: str,
        owner: str,
        offset: int,
        length: int | None,
        held: HeldUpload | None = None,
        check: Callable[[s.UploadSession], None] | None = None,
    ) -> s.UploadSession:
        session = await self._reconciled(upload_id, owner, held)
        if check is not None:
            check(session)
        if session.kind != s.UploadKind.STREAM or session.parts:
            raise SessionConflict("this upload does not take appended bytes", code="not-appendable")
        if session.state != s.UploadState.OPEN:
            raise SessionConflict(f"this upload is {session.state}", code="upload-not-open")
        if offset != session.offset:
            raise OffsetMismatch(f"the upload is at offset {session.offset}", expected=session.offset)
        if length is not None:
            session = await self.declare_length(session, length)
            if held is not None:
                held.session = held.blob = None  # changed outside the hot path: record the general way
        return session

    async def declare_length(self, session: s.UploadSession, length: int) -> s.UploadSession:
        self.limits.check_length(length)
        await self.quotas.reserve(session.owner, session.id, length)

        def declare(current: s.UploadSession) -> None:
            if current.length is not None and current.length != length:
                raise SessionConflict("the upload length cannot change once set", code="length-mismatch")
            if length < current.offset:
                raise SessionConflict("the upload length is below its offset", code="length-mismatch")
            current.length = length

        updated, _ = await self.sessions.update(session.id, declare)
        return updated

    async def _reconciled(self, upload_id: str, owner: str, held: HeldUpload | None = None) -> s.UploadSession:
        """Under the lock: make the recorded offset and the stored bytes agree (storage is the truth).

        With `held` (hot_path.py), the record its script read under the lock stands for a new read."""
        if held is not None and held.session is not None:
            session = held.session
            if session.expired():
                raise UploadGone("this upload expired; start a new one")
        else:
            session = await self.get(upload_id, owner)
        if session.kind != s.UploadKind.STREAM or session.state != s.UploadState.OPEN:
            return session
        stored = await self.store.reconcile(upload_id, session.offset)
        if stored < session.offset:
            log.warning("upload %s: storage holds %d bytes, session said %d", upload_id, stored, session.offset)
            session = await self._record_offset(upload_id, stored, allow_backwards=True)
        return session

    async def _record_offset(
        self,
        upload_id: str,
        offset: int,
        allow_backwards: bool = False,
        digests: running_digest.AppendDigests | None = None,
        held: HeldUpload | None = None,
        release: bool = False,
        claim_as: str | None = None,
    ) -> s.UploadSession:
        """Move the offset, and the running digest states with it in the same update, so a
        crash can never leave states that cover another offset than the recorded one.

        With `held`, in one round trip (hot_path.py; `release` lets go of the lock in it too)
        unless the record changed under us: then the general transaction below."""

        def advance(current: s.UploadSession) -> None:
            if offset > current.offset or allow_backwards:
                current.offset = offset
            states = digests.states_at(current.offset) if digests is not None else None
            if states is not None:
                current.digest_offset, current.digest_states = current.offset, states
            elif current.digest_offset != current.offset:
                current.digest_offset, current.digest_states = -1, {}  # unknown from here on
            now = time.time()
            current.expires_at = now + self.limits.expire_seconds
            if claim_as and current.state == s.UploadState.OPEN and current.awaiting_completion:
                current.claim(claim_as, now + self.limits.claim_seconds)

        if held is not None:
            recorded = await self.hot.record(held, advance, release=release)
            if recorded is not None:
                return recorded
        updated, _ = await self.sessions.update(upload_id, advance)
        return updated

    async def concatenate(
        self, owner: str, part_ids: list[str], *, metadata: dict[str, str] | None = None
    ) -> s.UploadSession:
        """A final upload made of partial uploads, in order (tus concatenation); see concatenation.py."""
        return await concatenation.create_final(self, owner, part_ids, metadata)

    # -- ending --------------------------------------------------------------------------------

    async def abandon(self, upload_id: str, owner: str) -> None:
        session = await self.get(upload_id, owner)
        if session.kind == s.UploadKind.STREAM:
            async with self.locks.hold(upload_id):
                await self.forget(upload_id, "abandoned")
        else:
            await self.forget(upload_id, "abandoned")

    async def forget(self, upload_id: str, reason: str) -> None:
        """Drop an upload's session (leaving a tombstone that says `reason`), its quota and its bytes."""
        session = await self.sessions.get(upload_id)
        if session is not None:
            await self.sessions.delete(session, reason)
            await self.quotas.release(session.owner, upload_id)
        await self.store.discard(upload_id)
        if session is not None and session.final_id and reason != "concatenated":
            # The final upload waiting for this part can never be joined now: say so on it.
            await concatenation.fail_final(self, session.final_id, f"a partial upload of it was {reason}")

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
            if session.expires_at > now:
                # Indexed at an older time than its session's (see SessionStore.update): fix it.
                await self.sessions.index_expiry(session)
                continue
            if session.state == s.UploadState.ASSEMBLING and session.claimed_until > now:
                continue
            await self.forget(upload_id, "expired")
            removed += 1
        return removed
