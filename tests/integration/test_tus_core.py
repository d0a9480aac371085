"""The core pieces tus and the IETF draft rely on, against a real redis-server and real files:
checksum-verified appends, the offset a HEAD reports while a writer lingers, concatenation."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

import chunks


@pytest.fixture()
async def core(redis_url, tmp_path):
    client = aioredis.from_url(redis_url)
    prefix = f"t{secrets.token_hex(4)}"
    uploads = chunks.Uploads(
        chunks.SessionStore(client, prefix),
        chunks.LocalChunkStore(tmp_path),
        chunks.UploadLocks(client, prefix),
        chunks.UploadLimits(max_upload_bytes=1_000_000, expire_seconds=3600, checkpoint_bytes=4096),
    )
    yield uploads
    await client.aclose()


async def blocks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def sha1(data: bytes) -> chunks.Checksum:
    return chunks.Checksum("sha1", hashlib.sha1(data).digest())


async def test_a_matching_checksum_appends(core):
    session = await core.open_stream("alice", length=100)
    session = await core.append(session.id, "alice", 0, blocks(b"hel", b"lo"), checksum=sha1(b"hello"))
    assert session.offset == 5
    assert core.store.stream_path(session.id).read_bytes() == b"hello"


async def test_a_checksum_mismatch_keeps_nothing_and_the_offset(core):
    session = await core.open_stream("alice", length=100_000)
    await core.append(session.id, "alice", 0, blocks(b"first"))
    body = os.urandom(20_000)  # past several checkpoints: none of them may count
    with pytest.raises(chunks.ChecksumMismatch):
        await core.append(session.id, "alice", 5, blocks(body[:10_000], body[10_000:]), checksum=sha1(b"other"))
    stored = await core.get(session.id, "alice")
    assert stored.offset == 5
    assert core.store.stream_path(session.id).read_bytes() == b"first"


async def test_an_interrupted_body_with_a_checksum_is_dropped(core):
    session = await core.open_stream("alice", length=100)

    async def dropped() -> AsyncIterator[bytes]:
        yield b"hel"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await core.append(session.id, "alice", 0, dropped(), checksum=sha1(b"hello"))
    assert (await core.get(session.id, "alice")).offset == 0


async def test_current_offset_asks_a_lingering_writer_to_let_go(core):
    session = await core.open_stream("alice", length=100_000)
    arrived = asyncio.Event()

    async def stuck() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        arrived.set()
        await asyncio.Event().wait()  # a dead connection: the next read never returns
        yield b""

    writer = asyncio.create_task(core.append(session.id, "alice", 0, stuck()))
    await asyncio.wait_for(arrived.wait(), 5)
    current = await asyncio.wait_for(core.current(session.id, "alice"), 3)
    assert current.offset == 1000
    assert (await asyncio.wait_for(writer, 3)).offset == 1000


async def test_concatenation_joins_finished_partial_uploads_in_order(core):
    ids = []
    for part in (b"one-", b"two-", b"three"):
        partial = await core.open_stream("alice", length=len(part), partial=True)
        await core.append(partial.id, "alice", 0, blocks(part))
        ids.append(partial.id)
    final = await core.concatenate("alice", [ids[2], ids[0], ids[1]])
    assert final.offset == final.length == 13 and final.all_received
    assert core.store.stream_path(final.id).read_bytes() == b"threeone-two-"
    assert await core.claim(ids[0]) is None  # a partial upload is never completed on its own
