"""Where upload bytes live: the ChunkStore interface the core writes through.

The storage, not a counter, is the truth about stored bytes. Nothing here names a file: an
object store can implement every method. LocalChunkStore (local_store.py) keeps the bytes on a
POSIX filesystem.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from .streams import Checksum


class StoreFeature(StrEnum):
    """What a store can do beyond the basics; protocols announce only what their store offers."""

    CHECKSUM = "checksum"  # verify a block against the client's digest before it counts
    CONCATENATION = "concatenation"  # join finished partial uploads into a new one


@dataclass(frozen=True, slots=True)
class PartRef:
    """A recorded numbered part: what `ChunkStore.local_copy` needs to find it."""

    index: int
    digest: str  # what names its bytes (numbered_chunks.part_digest; a sha256 hex in records of before)
    size: int = 0
    place: str = ""  # what `put_part` answered ("" for parts a store finds by index and digest)


class ChunkStore(Protocol):
    @property
    def features(self) -> frozenset[StoreFeature]: ...

    async def put_part(self, upload_id: str, index: int, data: bytes, digest: Awaitable[str]) -> str:
        """Store chunk `index` durably under `digest` (of `data`); where it went (its
        place, recorded with the chunk and handed back in a `PartRef`), or "" for a store that
        finds a part by its index and digest alone. `digest` may still be being computed (a
        large chunk is hashed in a worker thread): a store that needs it first awaits it.

        Parts with another digest for the same index are kept apart, never overwritten: the
        session says which digest was acknowledged, and only that part counts."""
        ...

    async def drop_part(self, upload_id: str, part: PartRef) -> None:
        """Remove a part that was stored but never recorded, as far as the store can (no error
        if it is not there). Only for a part of its own place: a store that finds parts by index
        and digest alone would remove a recorded twin's."""
        ...

    async def create_stream(self, upload_id: str) -> None:
        """Start an empty stream for a new STREAM upload."""
        ...

    async def append(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        *,
        limit: int,
        checksum: Checksum | None,
        checkpoint: Callable[[int], Awaitable[None]],
        checkpoint_bytes: int,
        on_sync: Callable[[int], None] | None = None,
    ) -> tuple[int, BaseException | None]:
        """Write `body` at `offset`, at most `limit` bytes. Returns the stored offset and what
        interrupted the body, if anything (a disconnect, a stop request, an OverflowError past
        `limit`); the bytes before an interruption are kept.

        `on_sync(offset)`, if given, is called before each checkpoint and at the end with the
        offset about to be made durable, in a worker thread where the store has one (the caller
        hashes the written blocks there, off the event loop); a store may not call it at all.

        Without a checksum, `checkpoint(offset)` is awaited each time at least `checkpoint_bytes`
        more are durable, so a crash loses little. With one, the block counts only if it arrived
        whole and matches: otherwise the stream is cut back to `offset` (the returned offset),
        and a mismatch raises ChecksumMismatch. A storage failure raises StorageFull with the
        stream cut back to its last durable offset."""
        ...

    async def reconcile(self, upload_id: str, recorded_offset: int) -> int:
        """Make the stream agree with the offset the session recorded; return what it holds.

        Bytes past `recorded_offset` were never acknowledged (a torn tail after a crash) and
        are cut. Less than recorded means the store lost bytes: the store is the truth."""
        ...

    async def concatenate(self, upload_id: str, sources: list[str]) -> int:
        """Make the stream of `upload_id` the streams of `sources`, in order. Returns its size."""
        ...

    def local_copy(self, upload_id: str, parts: list[PartRef] | None) -> AbstractAsyncContextManager[Path]:
        """A local file holding the whole upload, for the image pipeline, valid inside the block.

        `parts` in order for a chunked upload, None for a stream. A remote
        store downloads into a scratch file and removes it on exit. FileNotFoundError if a
        part or the stream is not stored."""
        ...

    async def discard(self, upload_id: str) -> None:
        """Remove every byte of the upload (no error if there are none)."""
        ...
