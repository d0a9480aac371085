"""Final uploads made of partial ones (tus `concatenation` and `concatenation-unfinished`).

A final upload may be created while its partial uploads are still receiving bytes. Every
unfinished partial then records the final it belongs to (`UploadSession.final_id`), so that
whichever partial receives its last byte, on whichever server process, tries to join the
parts. The join runs under the final upload's lock and reads only Redis: it happens once, when
the last partial is recorded as finished, and the Completion claim (completion.py) then makes
sure the whole is turned into its result exactly once.

A partial that expires or is deleted before the join fails the final upload (FAILED with the
code `partial-upload-gone`), so a client polling the final learns why it will never finish.
"""

from __future__ import annotations

import time
from typing import Protocol

from . import session as s
from .errors import InvalidRequest, QuotaExceeded, SessionConflict, UploadNotFound, UploadTooLarge
from .limits import UploadLimits
from .locks import UploadLocks
from .quotas import Quotas
from .session_store import SessionStore
from .storage import ChunkStore, StoreFeature


class Uploads(Protocol):
    """What a join needs of `chunks.uploads.Uploads` (which calls in here, so is not imported)."""

    sessions: SessionStore
    store: ChunkStore
    locks: UploadLocks
    limits: UploadLimits
    quotas: Quotas

    async def get(self, upload_id: str, owner: str) -> s.UploadSession: ...

    async def admit(self, session: s.UploadSession, held_bytes: int, *, count_bytes: bool = True) -> None: ...

    async def forget(self, upload_id: str, reason: str) -> None: ...


PART_GONE = "partial-upload-gone"
# The join copies at most the largest upload; a competing join waits for it rather than failing.
_JOIN_LOCK_WAIT = 10.0


def finished(part: s.UploadSession) -> bool:
    return part.length is not None and part.offset == part.length


def joined(final: s.UploadSession) -> bool:
    """Whether a final upload's parts were joined (its length is set only then)."""
    return final.length is not None


async def create_final(
    uploads: Uploads, owner: str, part_ids: list[str], metadata: dict[str, str] | None
) -> s.UploadSession:
    """A final upload of `part_ids`, in order; joined now if every part is finished, else later."""
    if StoreFeature.CONCATENATION not in uploads.store.features:
        raise InvalidRequest("this server cannot concatenate uploads", code="concatenation-unsupported")
    parts = [await uploads.get(part_id, owner) for part_id in part_ids]
    for part in parts:
        if not part.partial:
            raise SessionConflict("only partial uploads can be concatenated", code="not-partial")
        if part.state != s.UploadState.OPEN:
            raise SessionConflict(f"a partial upload is {part.state}", code="upload-not-open")
    lengths = [part.length for part in parts]
    known = sum(length for length in lengths if length is not None)
    if None not in lengths:
        uploads.limits.check_length(known)
    now = time.time()
    final = s.UploadSession(
        id=s.new_upload_id(),
        owner=owner,
        kind=s.UploadKind.STREAM,
        created_at=now,
        expires_at=now + uploads.limits.expire_seconds,
        metadata=dict(metadata or {}),
        parts=list(part_ids),
    )
    await uploads.admit(final, known)
    final = await uploads.sessions.create(final)
    try:
        for part in parts:
            if not finished(part):
                await _link(uploads, part.id, final.id)
    except SessionConflict:
        await uploads.forget(final.id, "abandoned")
        raise
    # A part may have finished between the checks above and its link: the join sees it.
    return await join(uploads, final.id) or final


async def _link(uploads: Uploads, part_id: str, final_id: str) -> None:
    def link(current: s.UploadSession) -> None:
        if current.final_id and current.final_id != final_id and not finished(current):
            raise SessionConflict(
                "a partial upload still receiving bytes belongs to one final upload only", code="partial-in-use"
            )
        current.final_id = final_id

    await uploads.sessions.update(part_id, link)


async def join(uploads: Uploads, final_id: str) -> s.UploadSession | None:
    """Join the final upload's parts if every one is finished; the final upload as it then is.

    None if the final upload is gone. Idempotent: a joined or settled final comes back as is."""
    async with uploads.locks.hold(final_id, _JOIN_LOCK_WAIT):
        final = await uploads.sessions.get(final_id)
        if final is None or final.state != s.UploadState.OPEN or joined(final):
            return final
        parts = [await uploads.sessions.get(part_id) for part_id in final.parts]
        present = [part for part in parts if part is not None and part.owner == final.owner]
        if len(present) != len(parts):
            return await fail_final(uploads, final_id, "a partial upload of this final upload is gone")
        if not all(finished(part) for part in present):
            return final
        total = sum(part.offset for part in present)
        try:
            uploads.limits.check_length(total)
            await uploads.quotas.reserve(final.owner, final_id, total)
        except (UploadTooLarge, QuotaExceeded) as exc:
            return await fail_final(uploads, final_id, exc.message, code=exc.code)
        await uploads.store.concatenate(final_id, final.parts)

        def record(current: s.UploadSession) -> bool:
            if current.state != s.UploadState.OPEN:
                return False
            current.length = current.offset = total
            current.expires_at = time.time() + uploads.limits.expire_seconds
            return True

        final, applied = await uploads.sessions.update(final_id, record)
        if not applied:
            await uploads.store.discard(final_id)
        return final


async def fail_final(uploads: Uploads, final_id: str, message: str, *, code: str = PART_GONE) -> s.UploadSession | None:
    """Mark a final upload that was not joined yet FAILED; a joined or settled one is left alone."""

    def fail(current: s.UploadSession) -> bool:
        if current.state != s.UploadState.OPEN or joined(current):
            return False
        current.state = s.UploadState.FAILED
        current.error_code = code
        current.error_message = message
        return True

    try:
        final, failed = await uploads.sessions.update(final_id, fail)
    except UploadNotFound:
        return None
    if failed:
        await uploads.quotas.release(final.owner, final_id)
        await uploads.store.discard(final_id)
    return final
