"""One request body written into a stream upload: stop requests and checksum verification."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .errors import ChecksumMismatch, UploadBusy
from .locks import Lease
from .storage import ChunkStore


@dataclass(frozen=True)
class Checksum:
    """A digest the client sent for one body: `algorithm` is a hashlib name (sha1, md5, sha256)."""

    algorithm: str
    digest: bytes


class Stopped(Exception):
    """A competing request asked this one to let go of the upload."""


async def until_stopped(body: AsyncIterator[bytes], lease: Lease) -> AsyncIterator[bytes]:
    """Yield `body`'s blocks until it ends or the lease holder is asked to stop.

    The next read races the stop flag, because a dead connection's read may never return."""
    blocks = body.__aiter__()
    stop = asyncio.ensure_future(lease.stop_requested.wait())
    try:
        while True:
            read = asyncio.ensure_future(blocks.__anext__())
            done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
                raise Stopped()
            try:
                block = read.result()
            except StopAsyncIteration:
                return
            if block:
                yield block
    finally:
        stop.cancel()


async def write_verified(
    store: ChunkStore,
    upload_id: str,
    offset: int,
    body: AsyncIterator[bytes],
    room: int,
    checksum: Checksum,
) -> tuple[int, BaseException | None]:
    """Write without checkpoints (nothing counts before the digest is known), then verify.

    Returns the offset that now stands and what went wrong, if anything: on a mismatch or an
    incomplete body the upload is cut back to `offset`."""
    hasher = hashlib.new(checksum.algorithm)

    async def hashed() -> AsyncIterator[bytes]:
        async for block in body:
            hasher.update(block)
            yield block

    async def no_checkpoint(_: int) -> None:
        return None

    written, interrupted = await store.append(upload_id, offset, hashed(), room, no_checkpoint, 1 << 62)
    if interrupted is None and hasher.digest() == checksum.digest:
        return written, None
    # Unverifiable or wrong bytes are not stored bytes: cut back before anyone sees them.
    await store.truncate(upload_id, offset)
    if interrupted is None:
        interrupted = ChecksumMismatch(f"the body does not match its {checksum.algorithm} checksum")
    if isinstance(interrupted, Stopped):
        interrupted = UploadBusy("another request took over this upload before the body was verified")
    return offset, interrupted
