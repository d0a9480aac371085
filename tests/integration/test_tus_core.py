"""The core pieces tus and the IETF draft rely on, against a real redis-server and real files:
checksum-verified appends, the offset a HEAD reports while a writer lingers, concatenation."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

import chunks
from tests.support.core import Core, open_core


@pytest.fixture()
async def core(redis_url, tmp_path) -> AsyncIterator[Core]:
    limits = chunks.UploadLimits(max_upload_bytes=1_000_000, expire_seconds=3600, checkpoint_bytes=4096)
    async with open_core(redis_url, tmp_path, limits=limits) as built:
        yield built


async def stored_bytes(core: Core, upload_id: str) -> bytes:
    async with core.store.local_copy(upload_id, None) as path:
        return path.read_bytes()


async def blocks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def sha1(data: bytes) -> chunks.Checksum:
    return chunks.Checksum("sha1", hashlib.sha1(data).digest())


async def test_a_matching_checksum_appends(core):
    session = await core.uploads.open_stream("alice", length=100)
    session = await core.uploads.append(session.id, "alice", 0, blocks(b"hel", b"lo"), checksum=sha1(b"hello"))
    assert session.offset == 5
    assert await stored_bytes(core, session.id) == b"hello"


async def test_a_checksum_mismatch_keeps_nothing_and_the_offset(core):
    session = await core.uploads.open_stream("alice", length=100_000)
    await core.uploads.append(session.id, "alice", 0, blocks(b"first"))
    body = os.urandom(20_000)  # past several checkpoints: none of them may count
    with pytest.raises(chunks.ChecksumMismatch):
        await core.uploads.append(session.id, "alice", 5, blocks(body[:10_000], body[10_000:]), checksum=sha1(b"other"))
    stored = await core.uploads.get(session.id, "alice")
    assert stored.offset == 5
    assert await stored_bytes(core, session.id) == b"first"


async def test_an_interrupted_body_with_a_checksum_is_dropped(core):
    session = await core.uploads.open_stream("alice", length=100)

    async def dropped() -> AsyncIterator[bytes]:
        yield b"hel"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await core.uploads.append(session.id, "alice", 0, dropped(), checksum=sha1(b"hello"))
    assert (await core.uploads.get(session.id, "alice")).offset == 0


async def test_current_offset_asks_a_lingering_writer_to_let_go(core):
    session = await core.uploads.open_stream("alice", length=100_000)
    arrived = asyncio.Event()

    async def stuck() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        arrived.set()
        await asyncio.Event().wait()  # a dead connection: the next read never returns
        yield b""

    writer = asyncio.create_task(core.uploads.append(session.id, "alice", 0, stuck()))
    await asyncio.wait_for(arrived.wait(), 5)
    current = await asyncio.wait_for(core.uploads.current(session.id, "alice"), 3)
    assert current.offset == 1000
    assert (await asyncio.wait_for(writer, 3)).offset == 1000


async def test_concatenation_joins_finished_partial_uploads_in_order(core):
    ids = []
    for part in (b"one-", b"two-", b"three"):
        partial = await core.uploads.open_stream("alice", length=len(part), partial=True)
        await core.uploads.append(partial.id, "alice", 0, blocks(part))
        ids.append(partial.id)
    final = await core.uploads.concatenate("alice", [ids[2], ids[0], ids[1]])
    assert final.offset == final.length == 13 and final.all_received
    assert await stored_bytes(core, final.id) == b"threeone-two-"
    partial = await core.uploads.get(ids[0], "alice")
    assert (await core.completion.complete(partial)).state == chunks.UploadState.OPEN  # never completed alone
