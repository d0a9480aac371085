"""Upload bytes in an S3-compatible bucket (AWS S3, MinIO, Ceph, SeaweedFS, R2), through aiobotocore.

Keys under `<prefix>uploads/<id>/`:
    part-<index>-<digest>   a numbered chunk of the chunk API (its digest in the name: a resend
                            with other bytes is another object, never an overwrite)
    head                    the state of a stream (chunks/s3_head.py), replaced in one PUT
    seg-<nonce>             a piece of a stream's tail (shorter than a part), named by a head
    data                    the stream's S3 multipart upload (completed by local_copy)

Any number of server processes may serve one upload: nothing about it lives in a process. The
upload's lock (chunks/locks.py) keeps one writer at a time; the head makes each step atomic.
Every S3 failure (unreachable, throttled past the client's retries, refused) is StoreUnavailable
with the code `storage-unavailable`: the client retries later, and nothing was acknowledged.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from .errors import ChecksumMismatch, OffsetMismatch, SessionConflict, StoreUnavailable
from .s3_append import StreamAppend
from .s3_errors import missing, unavailable_on_failure
from .s3_head import Head, Point, largest_below, reachable
from .storage import PartRef, StoreFeature
from .streams import Checksum, VerifiedBody

MiB = 1024 * 1024
# S3's smallest part (all but the last); parts are all exactly this, so a point is a part count.
MIN_PART_BYTES = 5 * MiB
_READ_BLOCK = 1024 * 1024


async def _no_checkpoint(_: int) -> None:
    return None


class S3ChunkStore:
    features = frozenset({StoreFeature.CHECKSUM, StoreFeature.CONCATENATION})

    def __init__(
        self, client: Any, bucket: str, *, scratch: str | Path, prefix: str = "", part_size: int = MIN_PART_BYTES
    ) -> None:
        """`client` is an open aiobotocore S3 client (its pool and retries are the caller's);
        `scratch` a local directory for `local_copy`'s files."""
        if part_size < MIN_PART_BYTES:
            raise ValueError(f"S3 parts are at least {MIN_PART_BYTES} bytes")
        self.client, self.bucket, self.prefix, self.part_size = client, bucket, prefix, part_size
        self.scratch = Path(scratch).resolve()
        self.scratch.mkdir(parents=True, exist_ok=True)

    def _dir(self, upload_id: str) -> str:
        if not upload_id or not all(c.isalnum() or c in "-_" for c in upload_id):
            raise ValueError("malformed upload id")
        return f"{self.prefix}uploads/{upload_id}/"

    def _key(self, upload_id: str, name: str) -> str:
        return self._dir(upload_id) + name

    # -- plain objects ---------------------------------------------------------------------------

    async def _put(self, key: str, data: bytes) -> None:
        with unavailable_on_failure():
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))

    async def _get(self, key: str, byte_range: str | None = None) -> bytes | None:
        extra = {"Range": byte_range} if byte_range else {}
        try:
            with unavailable_on_failure():
                answer = await self.client.get_object(Bucket=self.bucket, Key=key, **extra)
                async with answer["Body"] as body:
                    return bytes(await body.read())
        except StoreUnavailable as exc:
            if missing(exc.__cause__ or exc):
                return None
            raise

    async def _chunks_of(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes as they arrive; FileNotFoundError if there is none."""
        try:
            with unavailable_on_failure():
                answer = await self.client.get_object(Bucket=self.bucket, Key=key)
        except StoreUnavailable as exc:
            if missing(exc.__cause__ or exc):
                raise FileNotFoundError(key) from None
            raise
        with unavailable_on_failure():
            async with answer["Body"] as body:
                while block := await body.read(_READ_BLOCK):
                    yield block

    async def _delete(self, keys: list[str]) -> None:
        # One DeleteObjects call per 1000 keys: S3's limit. A missing key is no error.
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            with unavailable_on_failure():
                await self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    # -- numbered parts --------------------------------------------------------------------------

    def _part(self, upload_id: str, index: int, digest: str) -> str:
        return self._key(upload_id, f"part-{index:06d}-{digest}")

    async def put_part(self, upload_id: str, index: int, data: bytes, digest: Awaitable[str]) -> str:
        # The same bytes give the same key, so a repeated PUT changes nothing; the key is found
        # again from the index and digest, so there is no place to record.
        await self._put(self._part(upload_id, index, await digest), data)
        return ""

    async def drop_part(self, upload_id: str, part: PartRef) -> None:
        await self._delete([self._part(upload_id, part.index, part.digest)])

    # -- stream heads ----------------------------------------------------------------------------

    async def _head(self, upload_id: str) -> Head | None:
        data = await self._get(self._key(upload_id, "head"))
        return None if data is None else Head.decode(data)

    async def _replace(self, upload_id: str, old: Head | None, new: Head) -> None:
        """Make `new` the stream's state, then delete the segments only `old` named."""
        await self._put(self._key(upload_id, "head"), new.encode())
        if old is not None:
            dropped = old.segments() - new.segments()
            await self._delete([self._key(upload_id, name) for name in sorted(dropped)])

    async def _new_segment(self, upload_id: str, data: bytes) -> tuple[str, int]:
        name = f"seg-{secrets.token_hex(8)}"
        await self._put(self._key(upload_id, name), data)
        return name, len(data)

    async def _cut(self, upload_id: str, head: Head, offset: int) -> Head:
        """`head` moved to hold exactly `offset` bytes if it can, else the most it can below."""
        found = reachable(head, offset)
        if found is None:
            point = largest_below(head, offset)
        else:
            point, partial = found
            if partial:
                # The one segment the cut falls inside is copied up to the cut: a new object.
                kept = sum(size for _, size in point.tail) + len(point.parts) * head.part_size
                name = head_segment_at(head, point)
                data = await self._get(self._key(upload_id, name), f"bytes=0-{partial - 1}")
                if data is None or len(data) != partial:
                    point = largest_below(head, kept)
                else:
                    point = Point(point.parts, (*point.tail, await self._new_segment(upload_id, data)))
        if point == head.now and point == head.acked:
            return head
        moved = Head(head.part_size, head.multipart, point, point, head.completed)
        await self._replace(upload_id, head, moved)
        return moved

    # -- streams ---------------------------------------------------------------------------------

    async def create_stream(self, upload_id: str) -> None:
        old = await self._head(upload_id)
        await self._abort(upload_id, old)
        await self._replace(upload_id, old, Head(self.part_size))

    async def reconcile(self, upload_id: str, recorded_offset: int) -> int:
        head = await self._head(upload_id)
        if head is None:
            return 0
        if head.size == recorded_offset and head.acked == head.now:
            return recorded_offset
        return (await self._cut(upload_id, head, recorded_offset)).size

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
        # on_sync is not called: its work (hashing) is done by the caller when it records the offset.
        head = await self._head(upload_id)
        if head is None:
            await self.create_stream(upload_id)
            head = Head(self.part_size)
        if head.completed:
            raise SessionConflict("this upload's bytes were already assembled", code="not-appendable")
        if head.size != offset or head.acked != head.now:
            head = await self._cut(upload_id, head, offset)
            if head.size != offset:
                raise OffsetMismatch(f"the upload is at offset {head.size}", expected=head.size)
        writer = StreamAppend(self, upload_id, head)
        if checksum is None:
            return await writer.run(body, limit, checkpoint, checkpoint_bytes, verified=None)
        verified = VerifiedBody(body, checksum)
        written, interrupted = await writer.run(verified.blocks(), limit, _no_checkpoint, 1 << 62, verified=verified)
        if interrupted is None and not verified.matches():
            raise ChecksumMismatch(f"the body does not match its {checksum.algorithm} checksum")
        return written, interrupted

    async def _abort(self, upload_id: str, head: Head | None) -> None:
        """Abort the stream's multipart upload and any stray one a crash left under its key."""
        key = self._key(upload_id, "data")
        ids = {head.multipart} if head is not None and head.multipart and not head.completed else set()
        with unavailable_on_failure():
            listed = await self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        ids |= {u["UploadId"] for u in listed.get("Uploads", []) if u["Key"] == key}
        for multipart in sorted(ids):
            try:
                with unavailable_on_failure():
                    await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart)
            except StoreUnavailable as exc:
                if not missing(exc.__cause__ or exc):
                    raise

    async def _assembled(self, upload_id: str) -> Head:
        """The stream with its parts completed into the `data` object (once; idempotent)."""
        head = await self._head(upload_id)
        if head is None:
            raise FileNotFoundError("the upload's stream is not stored")
        if head.completed or head.multipart is None:
            return head
        if not head.now.parts:
            await self._abort(upload_id, head)
            done = Head(head.part_size, None, head.now, head.now, completed=False)
        else:
            parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(head.now.parts, start=1)]
            try:
                with unavailable_on_failure():
                    await self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=self._key(upload_id, "data"),
                        UploadId=head.multipart,
                        MultipartUpload={"Parts": parts},
                    )
            except StoreUnavailable as exc:
                # Completed by an earlier attempt that died before it could say so in the head.
                if not missing(exc.__cause__ or exc):
                    raise
            done = Head(head.part_size, None, head.now, head.now, completed=True)
        await self._replace(upload_id, head, done)
        return done

    async def stream_bytes(self, upload_id: str) -> AsyncIterator[bytes]:
        """The whole stream, in order (its parts completed first)."""
        head = await self._assembled(upload_id)
        if head.now.parts:
            async for block in self._chunks_of(self._key(upload_id, "data")):
                yield block
        for name, _ in head.now.tail:
            async for block in self._chunks_of(self._key(upload_id, name)):
                yield block

    @contextlib.asynccontextmanager
    async def local_copy(self, upload_id: str, parts: list[PartRef] | None) -> AsyncIterator[Path]:
        self._dir(upload_id)
        path = self.scratch / f"{upload_id}-{secrets.token_hex(8)}"
        try:
            async with aiofiles.open(path, "wb") as out:
                if parts is None:
                    async for block in self.stream_bytes(upload_id):
                        await out.write(block)
                else:
                    for part in parts:
                        async for block in self._chunks_of(self._part(upload_id, part.index, part.digest)):
                            await out.write(block)
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(path)

    async def concatenate(self, upload_id: str, sources: list[str]) -> int:
        async def joined() -> AsyncIterator[bytes]:
            for source in sources:
                async for block in self.stream_bytes(source):
                    yield block

        await self.create_stream(upload_id)
        written, interrupted = await self.append(
            upload_id, 0, joined(), limit=1 << 62, checksum=None, checkpoint=_no_checkpoint, checkpoint_bytes=1 << 62
        )
        if interrupted is not None:
            raise interrupted
        return written

    async def discard(self, upload_id: str) -> None:
        await self._abort(upload_id, await self._head(upload_id))
        await self._delete(await self.keys_of(upload_id))

    async def keys_of(self, upload_id: str) -> list[str]:
        """Every object stored for the upload."""
        keys: list[str] = []
        with unavailable_on_failure():
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._dir(upload_id)):
                keys += [item["Key"] for item in page.get("Contents", [])]
        return keys


def head_segment_at(head: Head, point: Point) -> str:
    """The name of the segment that follows `point`'s tail in whichever of head's points it came from."""
    for source in (head.now, head.acked):
        if source.parts == point.parts and source.tail[: len(point.tail)] == point.tail:
            return source.tail[len(point.tail)][0]
    raise ValueError("the point is not a prefix of the head's points")
