"""The upload core against a real redis-server and real files."""

import asyncio
import os
import time

import pytest
import redis.asyncio as aioredis

import chunks
from chunks import session as s
from chunks.numbered_chunks import part_digest
from tests.support.core import digest_of, open_core


async def open_chunked(core, owner="alice", total=4, alias="name:a.jpg"):
    return await core.uploads.open_chunked(
        owner, file_name="a.jpg", content_type="image/jpeg", total_chunks=total, alias=alias
    )


def pieces(n=4, size=1000):
    data = os.urandom(n * size)
    return data, [data[i * size : (i + 1) * size] for i in range(n)]


async def test_chunks_in_any_order_assemble_to_the_original_bytes(core):
    data, parts = pieces()
    session = await open_chunked(core)
    for index in (3, 1, 0, 2):
        session, duplicate = await core.uploads.put_chunk(session, index, parts[index])
        assert not duplicate
    assert session.all_received and await core.uploads.chunk_records.indices(session) == [0, 1, 2, 3]
    done = await core.completion.complete(session)
    assert done.state == chunks.UploadState.DONE
    assert done.result == digest_of(data)


async def test_same_alias_resumes_the_same_session_and_other_users_do_not_see_it(core):
    first = await open_chunked(core)
    again = await open_chunked(core)
    theirs = await open_chunked(core, owner="mallory")
    assert again.id == first.id
    assert theirs.id != first.id
    with pytest.raises(chunks.UploadNotFound):
        await core.uploads.get(first.id, "mallory")


async def test_resent_chunk_is_a_duplicate_and_other_bytes_are_a_conflict(core):
    _, parts = pieces()
    session = await open_chunked(core)
    session, _ = await core.uploads.put_chunk(session, 0, parts[0])
    session, duplicate = await core.uploads.put_chunk(session, 0, parts[0])
    assert duplicate
    with pytest.raises(chunks.ChunkConflict):
        await core.uploads.put_chunk(session, 0, parts[1])
    stored = await core.uploads.get(session.id, "alice")
    assert (await core.uploads.chunk_records.entry(stored, 0))[:2] == (
        len(parts[0]),
        part_digest(parts[0]),
    )


async def test_a_conflicting_resend_never_replaces_the_acknowledged_bytes(core):
    data, parts = pieces(2)
    session = await open_chunked(core, total=2)
    session, _ = await core.uploads.put_chunk(session, 0, parts[0])
    stale = await core.uploads.get(session.id, "alice")
    stale.chunk_count = stale.chunk_bytes = 0  # a request that read the session before chunk 0 was recorded
    with pytest.raises(chunks.ChunkConflict):
        await core.uploads.put_chunk(stale, 0, b"x" * len(parts[0]))
    session, _ = await core.uploads.put_chunk(session, 1, parts[1])
    assert (await core.completion.complete(session)).result == digest_of(data)


async def test_concurrent_chunks_are_all_recorded(core):
    data, parts = pieces(40, 500)
    session = await open_chunked(core, total=40)
    await asyncio.gather(*(core.uploads.put_chunk(session, i, part) for i, part in enumerate(parts)))
    stored = await core.uploads.get(session.id, "alice")
    assert await core.uploads.chunk_records.indices(stored) == list(range(40))
    assert stored.chunk_count == 40 and stored.received_bytes == len(data)
    assert (await core.completion.complete(stored)).result == digest_of(data)


async def test_total_and_type_mismatch_are_conflicts(core):
    await open_chunked(core, total=4)
    with pytest.raises(chunks.SessionConflict) as caught:
        await open_chunked(core, total=5)
    assert caught.value.code == "total-chunks-mismatch"
    with pytest.raises(chunks.SessionConflict) as caught:
        await core.uploads.open_chunked(
            "alice", file_name="a.jpg", content_type="image/png", total_chunks=4, alias="name:a.jpg"
        )
    assert caught.value.code == "content-type-mismatch"


async def test_upload_larger_than_the_limit_is_refused(core):
    session = await open_chunked(core, total=20)
    for index in range(10):
        session, _ = await core.uploads.put_chunk(session, index, os.urandom(100_000))
    with pytest.raises(chunks.UploadTooLarge):
        await core.uploads.put_chunk(session, 10, b"x")


async def test_only_one_request_finishes_a_completed_upload_and_all_see_its_outcome(redis_url, tmp_path):
    calls = []

    async def slow_finisher(session, path):
        calls.append(session.id)
        await asyncio.sleep(0.1)  # the image pipeline at work, while the others ask
        return {"version": "v1"}

    async with open_core(redis_url, tmp_path, finisher=slow_finisher) as core:
        data, parts = pieces(2)
        session = await open_chunked(core, total=2)
        for index, part in enumerate(parts):
            session, _ = await core.uploads.put_chunk(session, index, part)
        outcomes = await asyncio.gather(*(core.completion.complete(session) for _ in range(8)))
    assert len(calls) == 1
    assert {(o.state, o.result["version"]) for o in outcomes} == {(chunks.UploadState.DONE, "v1")}


async def test_finished_upload_keeps_its_result_drops_its_bytes_and_frees_its_name(core, tmp_path):
    _, parts = pieces(1)
    session = await open_chunked(core, total=1)
    session, _ = await core.uploads.put_chunk(session, 0, parts[0])
    done = await core.completion.complete(session)
    assert done.state == chunks.UploadState.DONE and done.result == digest_of(parts[0])
    assert not (tmp_path / "uploads" / session.id).exists()
    # The last chunk resent after a lost answer is still an idempotent duplicate.
    _, duplicate = await core.uploads.put_chunk(done, 0, parts[0])
    assert duplicate
    assert (await open_chunked(core, total=1)).id != session.id


async def test_abandoned_upload_answers_gone_and_its_bytes_are_removed(core, tmp_path):
    session = await open_chunked(core)
    await core.uploads.put_chunk(session, 0, b"abc")
    await core.uploads.abandon(session.id, "alice")
    assert not (tmp_path / "uploads" / session.id).exists()
    with pytest.raises(chunks.UploadGone):
        await core.uploads.get(session.id, "alice")


async def test_reaper_removes_expired_uploads_bytes_and_keys(core, tmp_path):
    session = await open_chunked(core)
    await core.uploads.put_chunk(session, 0, b"abc")
    assert await core.uploads.reap(now=time.time()) == 0
    assert await core.uploads.reap(now=time.time() + 7200) == 1
    assert not (tmp_path / "uploads" / session.id).exists()
    assert await core.uploads.sessions.get(session.id) is None
    with pytest.raises(chunks.UploadGone):
        await core.uploads.get(session.id, "alice")


async def test_session_record_is_msgpack_with_a_ttl(core, redis_url):
    session = await open_chunked(core)
    client = aioredis.from_url(redis_url)
    key = core.keys.session(session.id)
    assert s.decode(await client.get(key)).id == session.id
    assert 0 < await client.ttl(key) <= 3600 + 3600
    await client.aclose()


async def body_of(*blocks):
    for block in blocks:
        yield block


async def test_stream_append_at_the_right_offset_only(core):
    session = await core.uploads.open_stream("alice", length=10)
    session = await core.uploads.append(session.id, "alice", 0, body_of(b"01234"))
    assert session.offset == 5
    with pytest.raises(chunks.OffsetMismatch) as caught:
        await core.uploads.append(session.id, "alice", 3, body_of(b"xx"))
    assert caught.value.expected == 5
    session = await core.uploads.append(session.id, "alice", 5, body_of(b"56789"))
    assert session.all_received
    assert (await core.completion.complete(session)).result == digest_of(b"0123456789")


async def test_disconnect_mid_body_keeps_the_bytes_that_arrived(core):
    session = await core.uploads.open_stream("alice", length=100)

    async def dropping():
        yield b"a" * 30
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await core.uploads.append(session.id, "alice", 0, dropping())
    assert (await core.uploads.get(session.id, "alice")).offset == 30


async def test_torn_tail_after_a_crash_is_cut_back_to_the_recorded_offset(core, tmp_path):
    session = await core.uploads.open_stream("alice", length=20)
    await core.uploads.append(session.id, "alice", 0, body_of(b"0123456789"))
    with open(tmp_path / "uploads" / session.id / "data", "ab") as f:  # bytes never acknowledged
        f.write(b"\0\0\0garbage")
    session = await core.uploads.append(session.id, "alice", 10, body_of(b"abcdefghij"))
    assert (await core.completion.complete(session)).result == digest_of(b"0123456789abcdefghij")


async def test_a_competing_append_makes_the_holder_let_go(core):
    session = await core.uploads.open_stream("alice", length=100)
    hang = asyncio.Event()

    async def stalled():
        yield b"x" * 10
        await hang.wait()  # a dead connection: the next read never returns

    first = asyncio.create_task(core.uploads.append(session.id, "alice", 0, stalled()))
    lock_key = core.keys.lock(session.id)
    deadline = time.monotonic() + 5
    while not await core.redis.exists(lock_key):
        assert time.monotonic() < deadline, "the first append never took the lock"
        await asyncio.sleep(0.02)
    started = time.monotonic()
    # tus clients resume after a HEAD: the holder hands over what it stored so far.
    session = await core.uploads.append(session.id, "alice", 10, body_of(b"y" * 90), lock_wait=3.0)
    assert time.monotonic() - started < 2.0
    assert session.offset == 100
    assert (await first).offset == 10


async def test_concurrent_first_chunks_under_one_name_open_one_session(core):
    sessions = await asyncio.gather(*(open_chunked(core, alias="name:race.jpg") for _ in range(20)))
    assert len({session.id for session in sessions}) == 1


async def test_concurrent_first_chunks_replace_a_stale_alias_with_one_session(core):
    # The alias names an upload whose record is gone (abandoned or reaped): every creator finds
    # it stale, and only the first to replace it wins; the others must take that one.
    alias_key = core.keys.alias("alice", "name:stale.jpg")
    await core.redis.set(alias_key, s.new_upload_id())
    sessions = await asyncio.gather(*(open_chunked(core, alias="name:stale.jpg") for _ in range(20)))
    assert len({session.id for session in sessions}) == 1
    assert (await core.redis.get(alias_key)).decode() == sessions[0].id
    assert (await open_chunked(core, alias="name:stale.jpg")).id == sessions[0].id


async def test_a_first_chunk_after_redis_lost_its_scripts_still_claims_the_name(core):
    # The claim rides a pipeline as a bare EVALSHA: after a restart or failover (scripts gone),
    # its NOSCRIPT answer loads the script rather than failing the request.
    await core.redis.script_flush()
    first = await open_chunked(core, alias="name:flushed.jpg")
    await core.redis.script_flush()
    assert (await open_chunked(core, alias="name:flushed.jpg")).id == first.id


async def test_an_alias_naming_an_expired_upload_opens_a_new_one(core):
    old = await open_chunked(core, alias="name:late.jpg")
    await core.uploads.sessions.update(old.id, lambda current: setattr(current, "expires_at", time.time() - 1))
    fresh = await open_chunked(core, alias="name:late.jpg")
    assert fresh.id != old.id and not fresh.expired()
    assert (await open_chunked(core, alias="name:late.jpg")).id == fresh.id


async def test_a_new_uploads_first_chunk_is_recorded_without_reading_it_back(core):
    # open_named hands store_chunk the record it just wrote: the chunk is recorded all the same,
    # and a twin that recorded a chunk in between is seen (the compare-and-set reads again).
    _, parts = pieces(2)
    session, read = await core.uploads.open_named(
        "alice", file_name="a.jpg", content_type="image/jpeg", total_chunks=2, alias="name:twin.jpg", first_bytes=0
    )
    assert read is not None and read.session.id == session.id
    again, twin_read = await core.uploads.open_named(
        "alice", file_name="a.jpg", content_type="image/jpeg", total_chunks=2, alias="name:twin.jpg", first_bytes=0
    )
    assert again.id == session.id and twin_read is None
    await core.uploads.store_chunk(again, 1, parts[1])
    stored = await core.uploads.store_chunk(session, 0, parts[0], read)
    assert not stored.duplicate and stored.received == [0, 1] and stored.session.all_received
