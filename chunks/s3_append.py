"""One request body appended to a stream of the S3 chunk store (chunks/s3_store.py).

The bytes collect in memory (the stream's tail, then the body's blocks: never more than a part
and a block); every `part_size` bytes become the next part of the stream's S3 multipart upload.
Without a checksum, each time `checkpoint_bytes` more have arrived the new tail bytes are put as
one more segment object and a new head names them: only then are they durable, and only then is
`checkpoint` told. With a checksum nothing is named before the digest matched, so a wrong or
unfinished body leaves the stream exactly as it was (its uploaded parts are named by no head and
are overwritten by the next ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from .errors import StoreUnavailable
from .s3_errors import unavailable_on_failure
from .s3_head import Head, Point
from .streams import BoundedBody, VerifiedBody


class Objects(Protocol):
    """What an append needs of chunks.s3_store.S3ChunkStore (which calls in here, so is not imported)."""

    client: Any
    bucket: str
    part_size: int

    def _key(self, upload_id: str, name: str) -> str: ...

    async def _get(self, key: str, byte_range: str | None = None) -> bytes | None: ...

    async def _new_segment(self, upload_id: str, data: bytes) -> tuple[str, int]: ...

    async def _replace(self, upload_id: str, old: Head | None, new: Head) -> None: ...


class StreamAppend:
    def __init__(self, store: Objects, upload_id: str, head: Head) -> None:
        self.store, self.upload_id = store, upload_id
        self.start = self.stored = head
        self.multipart = head.multipart
        self.parts = list(head.now.parts)
        self.segments = list(head.now.tail)  # hold buffer[:flushed]
        self.buffer = bytearray()
        self.flushed = 0
        self.dirty = False

    async def run(
        self,
        body: AsyncIterator[bytes],
        limit: int,
        checkpoint: Callable[[int], Awaitable[None]],
        checkpoint_bytes: int,
        *,
        verified: VerifiedBody | None,
    ) -> tuple[int, BaseException | None]:
        """Returns the stored offset and what interrupted the body (see ChunkStore.append)."""
        offset = written = durable = self.start.size
        await self._load_tail()
        bounded = BoundedBody(body, limit)
        async for block in bounded.blocks():
            self.buffer += block
            written += len(block)
            self.dirty = True
            while len(self.buffer) >= self.store.part_size:
                await self._upload_part()
            if verified is None and written - durable >= checkpoint_bytes:
                await self._commit(acked=self.stored.now)
                durable = written
                await checkpoint(durable)
        interrupted = bounded.interrupted
        if verified is not None and (interrupted is not None or not verified.matches()):
            return offset, interrupted
        if self.dirty:
            # The core records the returned offset after this: until it has, the point it
            # recorded last stays reachable (`acked`). Shielded: a cancelled request still
            # leaves the head it began to write.
            acked = self.start.now if verified is not None else self.stored.now
            await asyncio.shield(self._commit(acked))
        return written, interrupted

    async def _load_tail(self) -> None:
        for name, size in self.start.now.tail:
            data = await self.store._get(self.store._key(self.upload_id, name))
            if data is None or len(data) != size:
                raise StoreUnavailable("a piece of this upload is missing from the object storage")
            self.buffer += data
        self.flushed = len(self.buffer)

    async def _upload_part(self) -> None:
        store, size = self.store, self.store.part_size
        key = store._key(self.upload_id, "data")
        with unavailable_on_failure():
            if self.multipart is None:
                made = await store.client.create_multipart_upload(Bucket=store.bucket, Key=key)
                self.multipart = made["UploadId"]
            answer = await store.client.upload_part(
                Bucket=store.bucket,
                Key=key,
                UploadId=self.multipart,
                PartNumber=len(self.parts) + 1,
                Body=bytes(self.buffer[:size]),
            )
        self.parts.append(answer["ETag"])
        del self.buffer[:size]
        # The tail never reaches a part's size, so every flushed byte was inside this part.
        self.flushed, self.segments = 0, []

    async def _commit(self, acked: Point) -> None:
        pending = bytes(self.buffer[self.flushed :])
        if pending:
            self.segments.append(await self.store._new_segment(self.upload_id, pending))
            self.flushed = len(self.buffer)
        new = Head(self.store.part_size, self.multipart, Point(tuple(self.parts), tuple(self.segments)), acked)
        await self.store._replace(self.upload_id, self.stored, new)
        self.stored, self.dirty = new, False
