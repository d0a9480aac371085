"""What only the S3 chunk store has to get right: streams past one 5 MiB part, a cut back into
bytes already inside an uploaded part, and nothing left in the bucket after `discard`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chunks
from chunks.s3_store import S3ChunkStore
from chunks.session import new_upload_id
from tests.support.s3 import Bucket, fresh_prefix

MiB = 1024 * 1024


@pytest.fixture()
def store(bucket: Bucket, tmp_path: Path) -> S3ChunkStore:
    return S3ChunkStore(bucket.client, bucket.name, scratch=tmp_path, prefix=fresh_prefix())


async def blocks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def copied(store: S3ChunkStore, upload_id: str) -> bytes:
    async with store.local_copy(upload_id, None) as path:
        return path.read_bytes()


async def append(store, upload_id, offset, body, *, checkpoint=None, checksum=None):
    seen: list[int] = []

    async def record(at: int) -> None:
        seen.append(at)

    written, interrupted = await store.append(
        upload_id,
        offset,
        body,
        limit=1 << 40,
        checksum=checksum,
        checkpoint=checkpoint or record,
        checkpoint_bytes=MiB,
    )
    return written, interrupted, seen


async def test_a_stream_past_several_parts_is_byte_exact_and_discard_leaves_nothing(store, bucket, tmp_path):
    data = os.urandom(12 * MiB + 12345)
    upload_id = new_upload_id()
    await store.create_stream(upload_id)

    written, interrupted, seen = await append(store, upload_id, 0, blocks(data[: 7 * MiB]))
    assert (written, interrupted) == (7 * MiB, None)
    _, uploads = await bucket.leftovers(store.prefix)
    assert len(uploads) == 1  # the part went into a real S3 multipart upload
    written, _, _ = await append(store, upload_id, written, blocks(data[7 * MiB :]))

    assert written == len(data) == await store.reconcile(upload_id, len(data))
    assert hashlib.sha256(await copied(store, upload_id)).digest() == hashlib.sha256(data).digest()
    assert list(tmp_path.iterdir()) == []  # the scratch copy is removed
    await store.discard(upload_id)
    assert await bucket.leftovers(store.prefix) == ([], [])


class Crash(Exception):
    pass


async def test_reconcile_goes_back_into_an_uploaded_part_to_the_recorded_offset(store):
    """A crash after the store put 5 MiB into a part but before the core recorded that offset."""
    data = os.urandom(9 * MiB)
    upload_id = new_upload_id()
    await store.create_stream(upload_id)
    recorded: list[int] = []

    async def crash_at_the_part(at: int) -> None:
        if at >= 5 * MiB:
            raise Crash()
        recorded.append(at)

    with pytest.raises(Crash):
        await append(store, upload_id, 0, blocks(data[: 6 * MiB]), checkpoint=crash_at_the_part)
    assert recorded[-1] == 4 * MiB  # the session says 4 MiB; the store's head already has the part

    assert await store.reconcile(upload_id, 4 * MiB) == 4 * MiB
    written, _, _ = await append(store, upload_id, 4 * MiB, blocks(data[4 * MiB :]))

    assert written == len(data)
    assert await copied(store, upload_id) == data


async def test_a_wrong_checksum_past_a_part_leaves_the_stream_as_it_was(store, bucket):
    upload_id = new_upload_id()
    await store.create_stream(upload_id)
    await append(store, upload_id, 0, blocks(b"start"))
    body = os.urandom(7 * MiB)

    with pytest.raises(chunks.ChecksumMismatch):
        await append(store, upload_id, 5, blocks(body), checksum=chunks.Checksum("sha1", b"x" * 20))

    assert await store.reconcile(upload_id, 5) == 5
    written, _, _ = await append(
        store, upload_id, 5, blocks(body), checksum=chunks.Checksum("sha1", hashlib.sha1(body).digest())
    )
    assert written == 5 + len(body)
    assert await copied(store, upload_id) == b"start" + body
    await store.discard(upload_id)
    assert await bucket.leftovers(store.prefix) == ([], [])


async def test_concatenated_streams_past_a_part_are_byte_exact(store):
    sources = {new_upload_id(): os.urandom(size) for size in (3 * MiB, 4 * MiB + 7)}
    for source, data in sources.items():
        await store.create_stream(source)
        await append(store, source, 0, blocks(data))
    final = new_upload_id()

    assert await store.concatenate(final, list(sources)) == 7 * MiB + 7

    assert await copied(store, final) == b"".join(sources.values())
