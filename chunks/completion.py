"""Turning a fully received upload into its result, exactly once across every server process.

One request claims the upload (claim -> finish | fail | release), hands the whole upload to an
injected finisher (the image pipeline, for this server) and records the outcome on the session.
A concurrent request for the same upload waits for that outcome instead of doing the work twice.

A claim is a lease of `UploadLimits.claim_seconds` that its holder renews every third of that
while the finisher runs: a completer that died (SIGKILL, power cut) is noticed within seconds,
however long a live one takes. Completing is the server's job, not the client's: an upload
whose last byte was acknowledged is listed (SessionStore.completable) until it settles, and
`sweep` finishes those nobody holds, so a client that saw its last byte acknowledged and
stopped still gets its avatar.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from . import concatenation, running_digest
from .errors import DigestUnavailable, SessionConflict, UploadError, UploadNotFound, UploadRejected
from .locks import holder_token, started_after
from .outbox import settled_event
from .session import UploadKind, UploadSession, UploadState
from .storage import PartRef
from .streams import Checksum
from .uploads import Uploads

Finisher = Callable[[UploadSession, Path], Awaitable[dict[str, Any]]]
"""Turns the whole upload (a local file) into the result stored on the session; raises
UploadRejected to refuse the bytes, anything else to leave the upload for a later attempt."""

_SETTLED = (UploadState.DONE, UploadState.FAILED)
_POLL_SECONDS = 0.05

log = logging.getLogger(__name__)


class Completion:
    def __init__(
        self,
        uploads: Uploads,
        finisher: Finisher,
        *,
        wait_seconds: float,
        background: Callable[[Coroutine[Any, Any, None], str], object] | None = None,
    ) -> None:
        """`background(work, name)`: runs `work` after the request (the server's tracked tasks);
        without it, everything is done before `complete` returns."""
        self._uploads = uploads
        self._finisher = finisher
        self._wait_seconds = wait_seconds
        self._background = background

    async def complete(
        self, session: UploadSession, expected: Checksum | None = None, *, claimed_as: str = ""
    ) -> UploadSession:
        """The upload's outcome: DONE with a result, or FAILED with the finisher's refusal.

        Partial, not fully received and settled uploads come back unchanged. A request that
        does not win the claim waits up to `wait_seconds` for the winner's outcome and returns
        the session as it then stands. Any failure other than a refusal gives the claim back
        and propagates, so a retry can complete the upload.

        `expected` (else the digest the upload was created with) is checked against the running
        digest of the stored bytes before the finisher sees them: a mismatch makes the upload
        FAILED (repr-digest-mismatch), and so does a digest the server cannot check
        (repr-digest-unavailable): the client asked for bytes it can vouch for, and the server
        completes uploads by itself too, so an upload left open would be made without the check.

        `claimed_as`: the token an append claimed the upload with (Uploads.append's `claim_as`);
        a session claimed with it is this caller's to complete, with no claim of its own."""
        if claimed_as and session.state == UploadState.ASSEMBLING and session.claimed_by == claimed_as:
            return await self._run(session, expected)
        if session.partial:
            if session.final_id and session.all_received:
                await self._complete_final(session)
            return session
        if not session.awaiting_completion:
            return session
        claimed = await self._claim(session)
        if claimed is None:
            return await self._outcome(session)
        return await self._run(claimed, expected)

    async def complete_if_free(self, session: UploadSession) -> UploadSession | None:
        """`complete`, unless another completer holds a live claim: then None at once, no waiting."""
        if not session.awaiting_completion:
            return session
        claimed = await self._claim(session)
        return None if claimed is None else await self._run(claimed)

    async def _run(self, claimed: UploadSession, expected: Checksum | None = None) -> UploadSession:
        if expected is None and claimed.expected_digest:
            expected = Checksum(*claimed.expected_digest)
        # The claim is renewed from a third of its length in (most completions are over before).
        renewing = started_after(
            self._uploads.limits.claim_seconds / 3, lambda: self._renew(claimed.id, claimed.claimed_by), (UploadError,)
        )
        async with renewing:
            try:
                if expected is not None:
                    running_digest.check_representation(claimed, expected)
                result = await self._finish(claimed)
            except (UploadRejected, DigestUnavailable) as exc:
                return await self._settle(claimed, UploadState.FAILED, code=exc.code, message=exc.message)
            except BaseException:
                await asyncio.shield(self._release(claimed.id))
                raise
            return await self._settle(claimed, UploadState.DONE, result=result)

    async def _complete_final(self, part: UploadSession) -> None:
        """A finished partial upload: join its final upload if it was the last part, and complete that.

        Whichever partial finishes last, on whichever process, gets here with every part recorded
        finished; the join and the claim below make both steps happen once."""
        final = await concatenation.join(self._uploads, part.final_id)
        if final is not None and final.owner == part.owner:
            await self.complete(final)

    async def _claim(self, session: UploadSession) -> UploadSession | None:
        """Take the right to complete the upload (`session`: as last read); None if another
        request holds it or it settled."""
        claim_seconds = self._uploads.limits.claim_seconds
        token = holder_token()

        def take(current: UploadSession) -> bool:
            now = time.time()
            if not current.awaiting_completion:
                return False
            if current.state == UploadState.ASSEMBLING and current.claimed_until > now:
                return False
            current.claim(token, now + claim_seconds)
            return True

        session, taken = await self._uploads.sessions.update(session.id, take, assume=session)
        return session if taken else None

    async def _renew(self, upload_id: str, token: str) -> None:
        """Keep the claim alive while the finisher runs: now (`_run` starts this a third of the
        claim in), then every third; stop once it is no longer ours."""
        claim_seconds = self._uploads.limits.claim_seconds
        me = asyncio.current_task()

        def extend(current: UploadSession) -> bool:
            if current.state != UploadState.ASSEMBLING or current.claimed_by != token:
                return False
            current.claimed_until = time.time() + claim_seconds
            return True

        while True:
            try:
                _, still_ours = await self._uploads.sessions.update(upload_id, extend)
            except UploadError:
                still_ours = True  # Redis away for a moment: the claim still has two thirds to run
            # A cancellation redis-py swallowed mid-command must still end this loop (locks.py).
            if (me is not None and me.cancelling()) or not still_ours:
                return
            await asyncio.sleep(claim_seconds / 3)

    async def _finish(self, session: UploadSession) -> dict[str, Any]:
        parts = None
        if session.kind == UploadKind.CHUNKED:
            entries = await self._uploads.chunk_records.entries(session)
            parts = [PartRef(index, digest, size, place) for index, (size, digest, place) in sorted(entries.items())]
        async with self._uploads.store.local_copy(session.id, parts) as path:
            size = os.stat(path).st_size  # a stat: cheaper in the event loop than a thread hop
            if size != session.received_bytes:
                raise SessionConflict(
                    f"assembled {size} bytes but {session.received_bytes} were recorded", code="length-mismatch"
                )
            return await self._finisher(session, path)

    async def _release(self, upload_id: str) -> None:
        """Give a claim back without an outcome (the finisher crashed or hit a transient error)."""

        def reopen(current: UploadSession) -> None:
            if current.state == UploadState.ASSEMBLING:
                current.state = UploadState.OPEN
                current.claimed_until = 0.0

        try:
            await self._uploads.sessions.update(upload_id, reopen)
        except UploadNotFound:
            pass

    async def _settle(
        self,
        session: UploadSession,
        state: UploadState,
        *,
        result: dict[str, Any] | None = None,
        code: str = "",
        message: str = "",
    ) -> UploadSession:
        """Record the outcome; the bytes, the quota, the parts and the alias are no longer needed.

        The record itself stays until expiry, so a client that lost the answer can still read it."""

        def settle(current: UploadSession) -> None:
            current.state = state
            current.result = result
            current.error_code = code
            current.error_message = message
            current.claimed_until = 0.0

        uploads = self._uploads
        # `session` is the record as this claim last wrote it: usually still the stored one.
        updated, _ = await uploads.sessions.update(session.id, settle, settled_event, assume=session)
        await uploads.quotas.release(updated.owner, updated.id)
        if self._background is None:
            await uploads.store.discard(session.id)
        else:
            # With the outcome recorded the bytes serve no one, and unlinking a large upload takes
            # milliseconds (~7 ms for 8 MiB under load) the answer need not wait for. A crash
            # before it leaves them to the reaper, which removes an upload's bytes when its
            # record expires.
            self._background(uploads.store.discard(session.id), f"discard-{session.id[:8]}")
        for part_id in updated.parts:
            await uploads.forget(part_id, "concatenated")
        if updated.alias:
            await uploads.sessions.forget_alias(updated)
        # Only the owner's newest settled records stay readable; older ones go (bounded per user).
        await uploads.settled.note(updated, uploads.limits.keep_settled)
        return updated

    async def sweep(self, batch: int = 100, concurrency: int = 4) -> int:
        """Complete listed uploads that nobody is completing; how many settled in this pass.

        Run at start-up and periodically by every server process: whichever claims an upload
        first completes it, the others skip it. A transient failure leaves it listed for the
        next pass; one that cannot be completed stays listed until it expires."""
        sessions = self._uploads.sessions
        due: list[UploadSession] = []
        for upload_id in await sessions.completable(batch):
            session = await sessions.get(upload_id)
            if session is None or not session.awaiting_completion or session.expired():
                await sessions.forget_completable(upload_id)
            elif not (session.state == UploadState.ASSEMBLING and session.claimed_until > time.time()):
                due.append(session)
        settled = 0
        for start in range(0, len(due), concurrency):
            outcomes = await asyncio.gather(
                *(self.complete_if_free(s) for s in due[start : start + concurrency]), return_exceptions=True
            )
            for session, outcome in zip(due[start : start + concurrency], outcomes, strict=True):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                if isinstance(outcome, BaseException):
                    log.warning("completing upload %s failed; will retry", session.id, exc_info=outcome)
                elif outcome is not None and outcome.settled:
                    settled += 1
        return settled

    async def _outcome(self, session: UploadSession) -> UploadSession:
        """Poll, with a deadline, for another request's completion of `session` to settle."""
        deadline = time.monotonic() + self._wait_seconds
        while True:
            current = await self._uploads.get(session.id, session.owner)
            if current.state in _SETTLED or time.monotonic() >= deadline:
                return current
            if current.state == UploadState.OPEN and not current.all_received:
                return current
            await asyncio.sleep(_POLL_SECONDS)
