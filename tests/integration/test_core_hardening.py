"""The upload core against a real redis-server: owners checked before locks and aliases, old
session records still readable, the completion lease renewed while its holder works, settled
records capped per user, and uploads left without an outcome completed by the sweep."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time

import pytest

import chunks
from chunks import session as session_codec
from tests.support.core import digest_finisher, digest_of, open_core


async def body_of(*blocks: bytes):
    for block in blocks:
        yield block


async def test_a_strangers_append_neither_takes_the_lock_nor_stops_the_writer(core):
    session = await core.uploads.open_stream("alice", length=10)
    async with core.uploads.locks.hold(session.id) as lease:
        with pytest.raises(chunks.UploadNotFound):
            await core.uploads.append(session.id, "mallory", 0, body_of(b"x" * 10), lock_wait=0.2)
        await asyncio.sleep(core.uploads.locks.renew_seconds * 2)  # let the renewer see a stop flag, if any
        assert not lease.stop_requested.is_set()


async def test_an_alias_naming_another_owners_upload_is_not_handed_out(core):
    alice = await core.uploads.open_chunked(
        "alice", file_name="a.png", content_type="image/png", total_chunks=2, alias="name:a.png"
    )
    # As if bob's alias key collided with alice's upload: the winner's owner is checked again.
    await core.redis.set(core.keys.alias("bob", "name:a.png"), alice.id)
    bob = await core.uploads.open_chunked(
        "bob", file_name="a.png", content_type="image/png", total_chunks=2, alias="name:a.png"
    )
    assert bob.owner == "bob" and bob.id != alice.id
    assert (await core.uploads.get(alice.id, "alice")).owner == "alice"


async def test_a_record_written_with_the_old_chunk_dict_still_works(core):
    parts = [b"first-", b"second-", b"third"]
    session = await core.uploads.open_chunked(
        "alice", file_name="old.png", content_type="image/png", total_chunks=3, alias="name:old.png"
    )
    # Stored as the older server stored parts: a file each, named by index and digest.
    assert isinstance(core.uploads.store, chunks.LocalChunkStore)
    for i in (0, 1):
        part = core.uploads.store.root / session.id / f"part-{i:06d}-{hashlib.sha256(parts[i]).hexdigest()}"
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(parts[i])
    legacy = dataclasses.replace(
        session,
        received_chunks={i: [len(parts[i]), hashlib.sha256(parts[i]).hexdigest()] for i in (0, 1)},
    )
    raw = dataclasses.asdict(legacy)
    del raw["chunk_count"], raw["chunk_bytes"], raw["claimed_by"]  # fields the older server did not write
    await core.redis.set(core.keys.session(session.id), session_codec.msgpack.packb(raw, use_bin_type=True))

    old = await core.uploads.get(session.id, "alice")
    assert old.chunk_count == 2 and old.received_bytes == len(parts[0]) + len(parts[1])
    assert await core.uploads.chunk_records.indices(old) == [0, 1]
    _, duplicate = await core.uploads.put_chunk(old, 1, parts[1])
    assert duplicate
    with pytest.raises(chunks.ChunkConflict):
        await core.uploads.put_chunk(old, 0, b"other-")
    done, _ = await core.uploads.put_chunk(old, 2, parts[2])
    assert done.all_received and done.received_chunks == {}
    assert (await core.completion.complete(done)).result == digest_of(b"".join(parts))


async def test_the_completion_lease_is_renewed_while_the_finisher_works(redis_url, tmp_path):
    release = asyncio.Event()
    runs = 0

    async def slow(session, path):
        nonlocal runs
        runs += 1
        await release.wait()
        return await digest_finisher(session, path)

    limits = chunks.UploadLimits(max_upload_bytes=1000, expire_seconds=3600, claim_seconds=0.6)
    async with open_core(redis_url, tmp_path, limits=limits, finisher=slow, wait_seconds=0.1) as core:
        session = await core.uploads.open_stream("alice", length=4)
        session = await core.uploads.append(session.id, "alice", 0, body_of(b"abcd"))
        first = asyncio.create_task(core.completion.complete(session))
        deadline = time.monotonic() + 5
        while runs == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # Three lease lengths later the holder is still working, and still holds the claim.
        await asyncio.sleep(1.8)
        assert await core.completion.complete_if_free(session) is None
        assert await core.completion.sweep() == 0
        release.set()
        assert (await first).state == chunks.UploadState.DONE and runs == 1


async def test_an_upload_left_assembling_by_a_dead_completer_is_completed_by_the_sweep(redis_url, tmp_path):
    limits = chunks.UploadLimits(max_upload_bytes=1000, expire_seconds=3600, claim_seconds=0.5)
    async with open_core(redis_url, tmp_path, limits=limits) as core:
        session = await core.uploads.open_stream("alice", length=4)
        session = await core.uploads.append(session.id, "alice", 0, body_of(b"abcd"))

        def died_while_completing(current):
            current.state = chunks.UploadState.ASSEMBLING
            current.claimed_until = time.time() + 0.5

        await core.uploads.sessions.update(session.id, died_while_completing)
        deadline = time.monotonic() + 10
        while (await core.uploads.get(session.id, "alice")).state != chunks.UploadState.DONE:
            assert time.monotonic() < deadline, "the sweep never completed the upload"
            await core.completion.sweep()
            await asyncio.sleep(0.1)
        assert (await core.uploads.get(session.id, "alice")).result == digest_of(b"abcd")
        assert await core.uploads.sessions.completable(10) == []


async def test_only_the_newest_settled_records_of_a_user_are_kept(redis_url, tmp_path):
    limits = chunks.UploadLimits(max_upload_bytes=1000, expire_seconds=3600, keep_settled=3)
    async with open_core(redis_url, tmp_path, limits=limits) as core:
        ids = []
        for n in range(5):
            session = await core.uploads.open_stream("alice", length=2)
            session = await core.uploads.append(session.id, "alice", 0, body_of(b"%02d" % n))
            assert (await core.completion.complete(session)).state == chunks.UploadState.DONE
            ids.append(session.id)
        for old in ids[:2]:
            with pytest.raises(chunks.UploadGone):
                await core.uploads.get(old, "alice")
        for kept in ids[2:]:
            assert (await core.uploads.get(kept, "alice")).state == chunks.UploadState.DONE
        assert await core.redis.exists(core.keys.session(ids[0])) == 0
